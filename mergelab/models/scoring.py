"""Scores of predictions: accuracy and F1 through the shipped `evaluate` metric modules (offline),
rougeL through rouge-score, against every reference of a row (the best match counts, as
Super-NaturalInstructions scores).

A *task* here is anything with ``name``, ``eval_rows``, ``prompt(row)``, ``label_index(row)`` and a
``spec`` carrying ``labels``, ``metric``, ``target_field`` and ``max_new_tokens`` — the study
layer's TaskData.
"""

from __future__ import annotations

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


def rouge_l(predictions: list[str], refs: list[list[str]]) -> float:
    """Mean rougeL F-measure (0–100), each prediction against its best-matching reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100.0 * sum(max(scorer.score(ref, p)["rougeL"].fmeasure for ref in rs)
                       for rs, p in zip(refs, predictions)) / len(refs)


def classification_score(task, predictions: list[int]) -> float:
    """The task's metric (accuracy or F1, 0–100) of predicted label indices."""
    refs = [task.label_index(r) for r in task.eval_rows]
    return 100.0 * _metric(task.spec.metric).compute(predictions=predictions, references=refs)[task.spec.metric]


def generation_score(task, predictions: list[str]) -> float:
    return rouge_l(predictions, [references(r[task.spec.target_field]) for r in task.eval_rows])
