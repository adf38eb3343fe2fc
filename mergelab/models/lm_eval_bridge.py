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
or the perplexity family's ratio of sums — each row keeps its log-likelihood per word or byte and
its word or byte count as ``score`` and ``weight``); corpus-level ones (bleu, chrf, ter, f1, mcc) are refused with a
clear message.

A study task may also name an lm-eval *group* (``mmlu``, or a group YAML of your own): it is one task
for one adapter, scored by the group's own ``aggregate_metric_list`` over its subtasks, and its
per-row records are every subtask's rows in turn — weighted 1 each when the group weighs subtasks by
size, else 1 / (the subtask's rows), so the weighted mean of the rows is the group's mean of subtask
scores and the intervals resample exactly that. A group holding groups (mmlu → mmlu_stem, …) is
aggregated over its leaf tasks, as lm-eval does. Groups without an aggregate score of their own and
tasks whose metric is not a mean of rows are refused with a clear message.
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


#: the key a group's document carries to name its subtask (documents of a group are shallow copies)
SUBTASK = "__mergelab_subtask__"


@dataclass
class GroupTask:
    """An lm-eval group as one study task: its name, lm-eval's group config (with its
    ``aggregate_metric_list``) and its leaf tasks (name → lm-eval Task, groups inside it opened, as
    mmlu holds mmlu_stem, …: lm-eval aggregates a group over its leaf tasks), in lm-eval's order."""

    name: str
    config: dict
    tasks: dict


def _load_error(name: str, exc: Exception) -> LmEvalTaskError:
    return LmEvalTaskError(f"lm-eval task {name!r} cannot be loaded: {' '.join(str(exc).split())[:300]}")


def load_task(cfg: LmEvalTask):
    """The lm-eval Task object for ``cfg`` (its documents are read here: local files, or the hub),
    or a :class:`GroupTask` when ``cfg`` names a group."""
    from lm_eval.tasks import get_task_dict

    manager = task_manager(cfg.include_path)
    if cfg.name not in manager.all_tasks:
        where = f"the task YAMLs in {cfg.include_path}" if cfg.include_path else "lm-eval's tasks"
        raise LmEvalTaskError(f"lm-eval task {cfg.name!r} is not among {where}")
    try:
        loaded = get_task_dict([cfg.name], manager)
    except Exception as exc:  # lm-eval raises whatever its dataset loader raises
        raise _load_error(cfg.name, exc) from None
    if cfg.name in manager.all_groups:
        return _group(cfg, loaded)
    task = loaded[cfg.name]
    if cfg.num_fewshot is not None:
        task.set_config(key="num_fewshot", value=cfg.num_fewshot)
    return task


def _leaf_tasks(members: dict) -> dict:
    """name → lm-eval Task under a ``get_task_dict`` answer, groups inside it opened."""
    out = {}
    for key, member in members.items():
        out.update(_leaf_tasks(member) if isinstance(member, dict) else {key: member})
    return out


def _group(cfg: LmEvalTask, loaded: dict) -> GroupTask:
    """The group ``cfg`` names, from lm-eval's ``get_task_dict`` answer ({group: {subtask: Task or
    group}}); only the named group needs an aggregate score of its own (lm-eval aggregates its leaf
    tasks)."""
    from lm_eval.api.group import ConfigurableGroup

    (group, members), *_ = loaded.items()
    config = dict(group.config) if isinstance(group, ConfigurableGroup) else {}
    name = config.get("group", cfg.name)
    if not config.get("aggregate_metric_list"):
        raise LmEvalTaskError(
            f"lm-eval group {name!r} reports no score of its own (no aggregate_metric_list): name each of its "
            "tasks as a study task, or give the group an aggregate_metric_list"
        )
    tasks = _leaf_tasks(members)
    if cfg.num_fewshot is not None:
        for task in tasks.values():
            task.set_config(key="num_fewshot", value=cfg.num_fewshot)
    return GroupTask(name, config, tasks)


@dataclass(frozen=True)
class Metric:
    """The metric Eq. 1 uses for one lm-eval task: its name, whether higher is better (lm-eval's
    ``higher_is_better``) and the name of its aggregation (:data:`mergelab.choices.AGGREGATIONS`)."""

    name: str
    higher_is_better: bool
    aggregation: str


def primary_metric(task, cfg: LmEvalTask) -> Metric:
    """The metric Eq. 1 uses: ``cfg.metric`` or the task's first; refused when its aggregation is
    not one the per-row records can rebuild (corpus-level scores such as bleu or f1). For a group:
    the metric of its ``aggregate_metric_list``, whose subtasks must each score it as a mean of rows."""
    if isinstance(task, GroupTask):
        return _group_metric(task, cfg)
    from lm_eval.api.registry import AGGREGATION_REGISTRY

    names = [m["metric"] for m in task.config.metric_list or []] or list(task.higher_is_better())
    metric = cfg.metric or (names[0] if names else None)
    if metric is None or metric not in names:
        raise LmEvalTaskError(f"lm-eval task {cfg.name!r} has no metric {metric!r} (it has {names})")
    function = task.aggregation().get(metric)
    aggregation = next((k for k, v in AGGREGATION_REGISTRY.items() if v is function), "?")
    if aggregation not in AGGREGATIONS:
        raise LmEvalTaskError(
            f"lm-eval task {cfg.name!r}: {metric} is aggregated by {aggregation!r}, which is not a mean of rows "
            f"(MergeLab takes {', '.join(AGGREGATIONS)}: their intervals resample the rows); name another with metric:"
        )
    return Metric(metric, bool(task.higher_is_better().get(metric, True)), aggregation)


def _group_metric(group: GroupTask, cfg: LmEvalTask) -> Metric:
    names = [m["metric"] for m in group.config["aggregate_metric_list"]]
    metric = cfg.metric or names[0]
    if metric not in names:
        raise LmEvalTaskError(f"lm-eval group {cfg.name!r} aggregates no metric {metric!r} (it has {names})")
    directions = set()
    for name, task in group.tasks.items():
        sub = primary_metric(task, LmEvalTask(name, cfg.include_path, cfg.num_fewshot, cfg.limit, metric, cfg.filter))
        if sub.aggregation != "mean":
            raise LmEvalTaskError(
                f"lm-eval group {group.name!r}: its task {name!r} aggregates {metric} by {sub.aggregation!r}; a "
                "group score MergeLab can resample needs a mean of rows in every task"
            )
        directions.add(sub.higher_is_better)
    if len(directions) != 1:
        raise LmEvalTaskError(f"lm-eval group {cfg.name!r}: its tasks disagree on whether higher {metric} is better")
    return Metric(metric, directions.pop(), "mean")


def eval_docs(task, limit: int | None) -> list[dict]:
    """The documents lm-eval scores (its eval split, the first ``limit``); for a group, each
    subtask's in turn (lm-eval's limit is per subtask), each naming its subtask under :data:`SUBTASK`."""
    if isinstance(task, GroupTask):
        return [{**d, SUBTASK: name} for name, t in task.tasks.items() for d in eval_docs(t, limit)]
    docs = list(task.eval_docs)
    return docs[:limit] if limit else docs


def probe_docs(task) -> list[dict]:
    """Documents for hidden-state probes, kept apart from the scored ones where the task allows:
    its training split, else its validation split when it scores the test split, else its eval
    documents themselves; for a group, each subtask's in turn."""
    if isinstance(task, GroupTask):
        return [{**d, SUBTASK: name} for name, t in task.tasks.items() for d in probe_docs(t)]
    if task.has_training_docs():
        return list(task.training_docs())
    if task.has_test_docs() and task.has_validation_docs():
        return list(task.validation_docs())
    return list(task.eval_docs)


def prompt(task, doc: dict) -> str:
    """The text lm-eval puts before the answer for ``doc`` (zero-shot), for hidden states."""
    if isinstance(task, GroupTask):
        doc = dict(doc)
        return prompt(task.tasks[doc.pop(SUBTASK)], doc)
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
        perplexity family: its log-likelihood per word or byte, with the count as ``weight``), the
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
    if isinstance(task, GroupTask):
        records = _group_records(task, out, metric.name, cfg.filter, scale)
    else:
        records = _records(task, _samples(out, cfg.name, cfg.filter), metric.name, scale, 0, None)
    return Evaluation(
        scale * float(results[key]),
        records,
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        aggregation=metric.aggregation,
    )


def _group_records(group: GroupTask, out: dict, metric: str, filter_name: str, scale: float) -> list[dict]:
    """A group's per-row records: every leaf task's rows in turn (groups inside it opened, as lm-eval
    aggregates a group over its leaf tasks), weighted 1 when the group weighs tasks by size (its
    score is then the mean of all rows), else 1 / the task's rows (the mean of the tasks' scores)."""
    by_size = any(m.get("weight_by_size", True) for m in group.config["aggregate_metric_list"] if m["metric"] == metric)
    records: list[dict] = []
    for name, task in group.tasks.items():
        samples = _samples(out, name, filter_name)
        weight = None if by_size or not samples else 1 / len(samples)
        records += _records(task, samples, metric, scale, len(records), weight)
    return records


def _samples(out: dict, name: str, filter_name: str) -> list[dict]:
    """lm-eval's logged samples of one task for one filter, in document order."""
    return sorted(
        (s for s in out["samples"][name] if s.get("filter", "none") == filter_name), key=lambda s: s["doc_id"]
    )


def _records(task, samples: list[dict], metric: str, scale: float, start: int, weight: float | None) -> list[dict]:
    """MergeLab's per-row records of one lm-eval task's samples, numbered from ``start``; ``weight``
    for every row (None = 1) unless the metric carries its own (the perplexity family's word or byte
    count). A task's score is the weighted mean of its rows' scores (then its aggregation)."""
    multiple_choice = task.OUTPUT_TYPE == "multiple_choice"
    records = []
    for i, s in enumerate(samples, start):
        resps = s["filtered_resps"]
        if multiple_choice:
            lls = [float(r[0]) for r in resps]
            choices = task.doc_to_choice(s["doc"])
            prediction = str(choices[max(range(len(lls)), key=lls.__getitem__)])
        else:
            lls = None
            prediction = str(resps[0] if isinstance(resps, list) and resps else resps)
        value = s[metric]
        weighted = isinstance(value, (list, tuple))  # (log-likelihood, words or bytes)
        records.append(
            {
                "row": i,
                "row_id": str(s["prompt_hash"])[:12],
                # the perplexity family's row: log-likelihood per word (or byte), weighing its words
                "score": (float(value[0]) / float(value[1]) if value[1] else 0.0) if weighted else scale * float(value),
                "weight": float(value[1]) if weighted else weight,
                "reference": str(s["target"]),
                "prediction": prediction,
                "label_logprobs": lls,
            }
        )
    return records
