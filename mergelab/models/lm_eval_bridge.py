"""Tasks from lm-evaluation-harness, scored on MergeLab's loaded model.

A study task may name an lm-eval task (``lm_eval: {task: arc_easy}``) instead of a data file and a
template. lm-eval's own task definition builds the prompts, few-shot context, filters and metrics;
MergeLab hands it the model it already holds (base, expert or merge swapped in place) wrapped in
lm-eval's ``HFLM``, so the base is loaded once for every model of the study, and keeps lm-eval's
per-sample log (``log_samples``) as its per-row records.

Scores are on MergeLab's scale: metrics that are a proportion (accuracy, exact match) × 100, others
as lm-eval reports them. A metric's direction is lm-eval's ``higher_is_better``: a lower-is-better
one (perplexity, word_perplexity, bits_per_byte, …) enters Eq. 1 with performance = 1 / metric
(:func:`mergelab.analysis.equations.merging_loss`). Its aggregation must be one whose value the
per-row records can rebuild under resampling (:data:`mergelab.choices.AGGREGATIONS`: a mean of rows,
or the perplexity family's ratio of sums — each row keeps its log-likelihood and its word or byte
count as ``score`` and ``weight``); corpus-level ones (bleu, chrf, ter, f1, mcc) are refused with a
clear message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

from ..choices import AGGREGATIONS
from .evaluation import Evaluation

#: the ``data:`` value that means lm-eval's own task registry (hub datasets; needs hub access)
BUILTIN = "lm-eval"
#: metrics that are proportions (0–1 per row, mean over rows): shown × 100 like MergeLab's accuracy
PERCENT_METRICS = {"acc", "acc_norm", "acc_mutual_info", "exact_match", "em"}

log = logging.getLogger(__name__)


class LmEvalTaskError(ValueError):
    """An lm-eval task MergeLab cannot score: unknown, a group, no such metric, an aggregation the
    per-row records cannot rebuild."""


@dataclass(frozen=True)
class LmEvalTask:
    """One lm-eval task as a study names it.

    Attributes:
        name: the task's name in lm-eval (``arc_easy``) or in a task YAML under ``include_path``.
        include_path: a folder of task YAMLs (custom tasks over local files); None = lm-eval's own.
        num_fewshot: few-shot examples; None = the task's default.
        limit: score the first ``limit`` documents (lm-eval's ``--limit``); None = all.
        metric: the metric Eq. 1 uses; None = the task's first metric.
        filter: the filter whose output is scored (``none`` unless the task defines others).
    """

    name: str
    include_path: str | None = None
    num_fewshot: int | None = None
    limit: int | None = None
    metric: str | None = None
    filter: str = "none"


@cache
def task_manager(include_path: str | None):
    """lm-eval's task index: only the YAMLs under ``include_path`` when given (indexing lm-eval's
    thousands of built-in tasks takes seconds and is not needed then), else the built-in tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_path is None, verbosity="ERROR")


def load_task(cfg: LmEvalTask):
    """The lm-eval Task object for ``cfg`` (its documents are read here: local files, or the hub)."""
    from lm_eval.tasks import get_task_dict

    manager = task_manager(cfg.include_path)
    if cfg.name not in manager.all_tasks:
        where = f"the task YAMLs in {cfg.include_path}" if cfg.include_path else "lm-eval's tasks"
        raise LmEvalTaskError(f"lm-eval task {cfg.name!r} is not among {where}")
    if cfg.name in manager.all_groups:
        raise LmEvalTaskError(f"{cfg.name!r} is an lm-eval group: name each of its tasks as a study task")
    try:
        task = get_task_dict([cfg.name], manager)[cfg.name]
    except Exception as exc:  # lm-eval raises whatever its dataset loader raises
        raise LmEvalTaskError(
            f"lm-eval task {cfg.name!r} cannot be loaded: {' '.join(str(exc).split())[:300]}"
        ) from None
    if cfg.num_fewshot is not None:
        task.set_config(key="num_fewshot", value=cfg.num_fewshot)
    return task


@dataclass(frozen=True)
class Metric:
    """The metric Eq. 1 uses for one lm-eval task: its name, whether higher is better (lm-eval's
    ``higher_is_better``) and the name of its aggregation (:data:`mergelab.choices.AGGREGATIONS`)."""

    name: str
    higher_is_better: bool
    aggregation: str


def primary_metric(task, cfg: LmEvalTask) -> Metric:
    """The metric Eq. 1 uses: ``cfg.metric`` or the task's first; refused when its aggregation is
    not one the per-row records can rebuild (corpus-level scores such as bleu or f1)."""
    from lm_eval.api.registry import AGGREGATION_REGISTRY

    names = [m["metric"] for m in task.config.metric_list or []] or list(task.higher_is_better())
    metric = cfg.metric or (names[0] if names else None)
    if metric is None or metric not in names:
        raise LmEvalTaskError(f"lm-eval task {cfg.name!r} has no metric {metric!r} (it has {names})")
    function = task.aggregation().get(metric)
    aggregation = next(
        (k for k, v in AGGREGATION_REGISTRY.items() if v is function), getattr(function, "__name__", "?")
    )
    if aggregation not in AGGREGATIONS:
        raise LmEvalTaskError(
            f"lm-eval task {cfg.name!r}: {metric} is aggregated by {aggregation!r}, which is not a mean of rows "
            f"(MergeLab takes {', '.join(AGGREGATIONS)}: their intervals resample the rows); name another with metric:"
        )
    return Metric(metric, bool(task.higher_is_better().get(metric, True)), aggregation)


def eval_docs(task, limit: int | None) -> list[dict]:
    """The documents lm-eval scores (its eval split, the first ``limit``)."""
    docs = list(task.eval_docs)
    return docs[:limit] if limit else docs


def probe_docs(task) -> list[dict]:
    """Documents for hidden-state probes, kept apart from the scored ones where the task allows:
    its training split, else its validation split when it scores the test split, else its eval
    documents themselves."""
    if task.has_training_docs():
        return list(task.training_docs())
    if task.has_test_docs() and task.has_validation_docs():
        return list(task.validation_docs())
    return list(task.eval_docs)


def prompt(task, doc: dict) -> str:
    """The text lm-eval puts before the answer for ``doc`` (zero-shot), for hidden states."""
    if task.OUTPUT_TYPE == "loglikelihood_rolling":  # the scored text is the target (wikitext's page)
        return str(task.doc_to_target(doc))
    text = task.doc_to_text(doc)
    if isinstance(text, int):  # a multiple-choice task whose context is one of its choices
        text = task.doc_to_choice(doc)[text]
    return str(text)


_MODELS: dict[int, object] = {}


def _hflm(model, tokenizer, batch_size: int, device):
    """lm-eval's HF wrapper around the model MergeLab holds (one per loaded model: weights swapped
    into it in place are what it scores)."""
    from lm_eval.models.huggingface import HFLM

    key = id(model)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    return _MODELS[key]


def evaluate(model, tokenizer, cfg: LmEvalTask, batch_size: int = 8, device="cpu", task=None) -> Evaluation:
    """Score the model as it is now on one lm-eval task, through lm-eval's ``simple_evaluate``.

    Args:
        model: a loaded transformers causal LM (MergeLab swaps experts and merges into it).
        tokenizer: its tokenizer.
        cfg: the task as the study names it.
        task: lm-eval's Task for ``cfg`` when the caller loaded it already (its metric, output type and
            choices are read from it); None loads it.
    Returns:
        the task's primary metric (× 100 for proportions), its direction and aggregation, and one
        record per scored document: its position, a hash of its prompt, its own score (for the
        perplexity family: its log-likelihood, with its word or byte count as ``weight``), the
        target, the prediction (the chosen choice, or the filtered generation) and, for multiple
        choice, each choice's log-likelihood.
    """
    import lm_eval

    task = task if task is not None else load_task(cfg)
    metric = primary_metric(task, cfg)
    out = lm_eval.simple_evaluate(
        model=_hflm(model, tokenizer, batch_size, device),
        tasks=[cfg.name],
        task_manager=task_manager(cfg.include_path),
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
        verbosity="ERROR",
    )
    key = f"{metric.name},{cfg.filter}"
    results = out["results"][cfg.name]
    if key not in results:
        raise LmEvalTaskError(f"lm-eval task {cfg.name!r} reported no {key!r} (it reported {sorted(results)})")
    scale = 100.0 if metric.name in PERCENT_METRICS else 1.0
    samples = sorted(
        (s for s in out["samples"][cfg.name] if s.get("filter", "none") == cfg.filter), key=lambda s: s["doc_id"]
    )
    multiple_choice = task.OUTPUT_TYPE == "multiple_choice"
    records = []
    for i, s in enumerate(samples):
        resps = s["filtered_resps"]
        if multiple_choice:
            lls = [float(r[0]) for r in resps]
            choices = task.doc_to_choice(s["doc"])
            prediction = str(choices[max(range(len(lls)), key=lls.__getitem__)])
        else:
            lls = None
            prediction = str(resps[0] if isinstance(resps, list) and resps else resps)
        value = s[metric.name]
        weighted = isinstance(value, (list, tuple))  # (log-likelihood, words or bytes)
        records.append(
            {
                "row": i,
                "row_id": str(s["prompt_hash"])[:12],
                "score": float(value[0]) if weighted else scale * float(value),
                "weight": float(value[1]) if weighted else None,
                "reference": str(s["target"]),
                "prediction": prediction,
                "label_logprobs": lls,
            }
        )
    return Evaluation(
        scale * float(results[key]),
        records,
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        aggregation=metric.aggregation,
    )
