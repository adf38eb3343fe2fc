"""A study's scores in lm-evaluation-harness's result format: one results document per model (the
base, each expert, each merge) with lm-eval's keys, and its per-sample logs from the per-row records,
so tools that read lm-eval output (its own filename helpers, leaderboards, Zeno) read MergeLab's.

Scales follow lm-eval: proportions (MergeLab's accuracy and F1; lm-eval's acc, exact_match) as
0–1, rougeL as MergeLab stores it (0–100, as lm-eval's generation tasks report rouge). A metric's
``_stderr`` is the standard error of the mean over rows, as lm-eval reports it for mean-aggregated
metrics (F1 is not a mean of rows, and the perplexity family is a ratio of sums: no stderr; their
intervals are MergeLab's bootstrap). A perplexity-family sample keeps lm-eval's ``[log-likelihood,
words or bytes]`` pair.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

import pandas as pd

from ..storage.roles import HELD_OUT_PREFIX
from ..storage.store import Store
from . import views

#: MergeLab's metric names → lm-eval's, and the factor from MergeLab's scale to lm-eval's
METRIC_NAMES = {"accuracy": ("acc", 0.01), "f1": ("f1", 0.01), "rougeL": ("rougeL", 1.0)}
#: lm-eval metrics MergeLab shows × 100 (see mergelab.models.lm_eval_bridge.PERCENT_METRICS)
LM_EVAL_PERCENT = {"acc", "acc_norm", "acc_mutual_info", "exact_match", "em"}
#: aggregations whose per-sample values lm-eval logs as (log-likelihood, words or bytes) pairs
PAIRED_AGGREGATIONS = {"weighted_perplexity", "bits_per_byte"}


def lm_eval_metric(metric: str) -> tuple[str, float]:
    """(lm-eval's name for a stored metric, the factor from MergeLab's scale to lm-eval's)."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    return metric, (0.01 if metric in LM_EVAL_PERCENT else 1.0)


def sanitize(name: str) -> str:
    """A model name as lm-eval makes it a folder name (``lm_eval.utils.sanitize_model_name``)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _hash(text) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()


def _text(value) -> str | None:
    """A record's text cell (None where the store has none: pandas reads it back as NaN)."""
    return value if isinstance(value, str) else None


def _sample_value(record, aggregation: str, factor: float):
    """A per-row record's value as lm-eval logs it: the row's score, or for the weighted perplexity
    family (the row's score per word or byte, its count as weight) lm-eval's ``[log-likelihood,
    words or bytes]`` pair."""
    if aggregation in PAIRED_AGGREGATIONS:
        return [float(record.score) * float(record.weight), float(record.weight)]
    return float(record.score) * factor


def _model_args(spec: dict, row: pd.Series) -> str:
    """What the model is, in lm-eval's ``model_args`` form."""
    base = spec.get("base", "")
    if row["method"] == "base":
        return f"pretrained={base}"
    if row["method"] == "expert":
        return f"pretrained={base},peft={spec.get('adapters', {}).get(row['task'], '')}"
    members = (spec.get("groups") or {}).get(row["group_name"], [])
    adapters = ";".join(str(spec.get("adapters", {}).get(t, t)) for t in members)
    params = json.dumps((spec.get("methods") or {}).get(row["method"], {}), sort_keys=True)
    return f"pretrained={base},merge_method={row['method']},merge_params={params},adapters={adapters}"


def documents(store: Store, study_id: str) -> list[dict]:
    """One lm-eval results document per model of the study, each with ``samples`` ({task: [sample,
    …]}) beside the keys lm-eval writes to ``results_<time>.json``.

    Returns:
        a list of dicts with ``model_name`` (``base``, ``expert:<task>``, ``merged:<group>:<method>``),
        ``results``, ``group_subtasks``, ``configs``, ``versions``, ``n-shot``, ``higher_is_better``,
        ``n-samples``, ``config``, ``git_hash``, ``date`` and ``samples``.
    """
    rows = store.results(study_id)
    if rows.empty:
        raise ValueError(f"study {study_id!r} has no scores yet: run it first")
    records = store.row_records(study_id)
    spec = views.spec_dict(store, study_id)
    by_result = {key: part.sort_values("row") for key, part in records.groupby(["group_name", "model", "task"])}
    no_records = records.iloc[0:0]
    tasks = spec.get("tasks") or {}
    out = []
    for model, part in rows.groupby("model", sort=False):
        doc: dict = {
            "results": {},
            "group_subtasks": {},
            "configs": {},
            "versions": {},
            "n-shot": {},
            "higher_is_better": {},
            "n-samples": {},
            "samples": {},
        }
        own = part[~part["group_name"].str.startswith(HELD_OUT_PREFIX)]  # held-out rows: same model
        first = (own if len(own) else part).iloc[0]
        for r in part.itertuples(index=False):
            name, factor = lm_eval_metric(r.metric)
            le = (tasks.get(r.task) or {}).get("lm_eval") or {}
            filt = le.get("filter", "none")
            rec = by_result.get((r.group_name, r.model, r.task), no_records)
            scores = rec["score"].astype(float) * factor
            n = len(rec)
            mean_of_rows = r.aggregation == "mean" and r.metric != "f1"
            stderr = float(scores.std(ddof=1) / math.sqrt(n)) if n > 1 and mean_of_rows else None
            higher = bool(r.higher_is_better)
            doc["results"][r.task] = {
                "alias": r.task,
                f"{name},{filt}": r.score * factor,
                f"{name}_stderr,{filt}": stderr,
            }
            doc["group_subtasks"][r.task] = []
            doc["configs"][r.task] = {
                "task": le.get("task", r.task),
                "metric_list": [{"metric": name, "aggregation": r.aggregation, "higher_is_better": higher}],
                "num_fewshot": le.get("num_fewshot") or 0,
                "metadata": {"mergelab_task": r.task, "mergelab_metric": r.metric},
            }
            doc["versions"][r.task] = None
            doc["n-shot"][r.task] = le.get("num_fewshot") or 0
            doc["higher_is_better"][r.task] = {name: higher}
            doc["n-samples"][r.task] = {"original": n, "effective": n}
            doc["samples"][r.task] = [
                {
                    "doc_id": int(x.row),
                    "doc": {"row_id": x.row_id},
                    "target": _text(x.reference),
                    "arguments": {},
                    "resps": [],
                    "filtered_resps": json.loads(x.label_logprobs)
                    if isinstance(x.label_logprobs, str)
                    else [x.prediction],
                    "filter": filt,
                    "metrics": [name],
                    "doc_hash": _hash(x.row_id),
                    "prompt_hash": x.row_id,
                    "target_hash": _hash(_text(x.reference)),
                    name: _sample_value(x, r.aggregation, factor),
                    "prediction": _text(x.prediction),
                }
                for x in rec.itertuples(index=False)
            ]
        doc["config"] = {
            "model": "mergelab",
            "model_args": _model_args(spec, first),
            "batch_size": spec.get("batch_size"),
            "limit": spec.get("eval_limit"),
            "mergelab_study": study_id,
            "merge_method": None if first["method"] in ("base", "expert") else first["method"],
            "group": first["group_name"] or None,
        }
        doc.update(git_hash=None, date=None, model_name=model, model_name_sanitized=sanitize(str(model)))
        out.append(doc)
    return out
