"""Scores of predictions: accuracy and F1 through the shipped `evaluate` metric modules (offline),
rougeL through rouge-score, against every reference of a row (the best match counts, as
Super-NaturalInstructions scores).

A *task* here is anything with ``name``, ``eval_rows``, ``prompt(row)``, ``label_index(row)`` and a
``spec`` carrying ``labels``, ``metric``, ``target_field`` and ``max_new_tokens`` — the study
layer's TaskData.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

METRIC_DIR = Path(__file__).resolve().parent / "metrics"


def field_text(value) -> str:
    """A label or target cell as text; list cells (Super-NaturalInstructions / Lots-of-LoRAs keep
    every reference answer in a list) give their first entry."""
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return str(value)


def references(value) -> list[str]:
    """Every reference text of a target cell (one, or a list of them)."""
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


@cache
def _metric(name: str):
    """The shipped `evaluate` metric module, loaded once per process (not once per unit)."""
    import evaluate

    return evaluate.load(str(METRIC_DIR / name))


@dataclass
class Evaluation:
    """A model's score on a task (0–100, the task's metric) and one record per eval row: its
    position, a hash of its prompt (rows are paired across models by it), the row's own score
    (100 or 0 for a label, rougeL for a generation; their mean is the score, except for F1, which
    is not a mean of rows), the reference, the prediction and each label's log-likelihood."""

    score: float
    records: list[dict]
    metric: str | None = None  # set when the task names its own metric (an lm-eval task); else the spec's
    higher_is_better: bool = True  # lm-eval's, for its metric (perplexities are lower-is-better)
    aggregation: str = "mean"  # how the rows make the score (mergelab.choices.AGGREGATIONS)


def row_id(prompt: str) -> str:
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


def rouge_l_rows(predictions: list[str], refs: list[list[str]]) -> list[float]:
    """rougeL F-measure (0–100) of each prediction against its best-matching reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [100.0 * max(scorer.score(ref, p)["rougeL"].fmeasure for ref in rs) for rs, p in zip(refs, predictions)]


def rouge_l(predictions: list[str], refs: list[list[str]]) -> float:
    """Mean rougeL F-measure (0–100), each prediction against its best-matching reference."""
    return sum(rouge_l_rows(predictions, refs)) / len(refs)


def classification_score(task, predictions: list[int]) -> float:
    """The task's metric (accuracy or F1, 0–100) of predicted label indices."""
    refs = [task.label_index(r) for r in task.eval_rows]
    return 100.0 * _metric(task.spec.metric).compute(predictions=predictions, references=refs)[task.spec.metric]


def generation_score(task, predictions: list[str]) -> float:
    return rouge_l(predictions, [references(r[task.spec.target_field]) for r in task.eval_rows])


def classification_evaluation(task, label_logprobs) -> Evaluation:
    """The score and per-row records of label log-likelihoods (rows × labels): the predicted label is
    the most likely one."""
    lp = [list(map(float, row)) for row in label_logprobs]
    preds = [max(range(len(row)), key=row.__getitem__) for row in lp]
    labels = task.spec.labels
    records = []
    for i, (row, pred, scores) in enumerate(zip(task.eval_rows, preds, lp)):
        ref = task.label_index(row)
        records.append(
            {
                "row": i,
                "row_id": row_id(task.prompt(row)),
                "score": 100.0 * (pred == ref),
                "reference": labels[ref],
                "prediction": labels[pred],
                "label_logprobs": scores,
            }
        )
    return Evaluation(classification_score(task, preds), records)


def generation_evaluation(task, predictions: list[str]) -> Evaluation:
    refs = [references(r[task.spec.target_field]) for r in task.eval_rows]
    per_row = rouge_l_rows(predictions, refs)
    records = [
        {
            "row": i,
            "row_id": row_id(task.prompt(row)),
            "score": score,
            "reference": None,
            "prediction": pred,
            "label_logprobs": None,
        }
        for i, (row, pred, score) in enumerate(zip(task.eval_rows, predictions, per_row))
    ]
    return Evaluation(sum(per_row) / len(per_row), records)
