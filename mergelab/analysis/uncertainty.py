"""How much each merging loss can be trusted: a paired bootstrap over eval rows.

An expert and every merge are scored on the same eval rows of a task, so a resample draws rows once
per task and scores every model on the same draw (its per-row records, :mod:`~mergelab.storage.store`
``row_records``). From those draws come a 95 % interval for

* each merging loss (Eq. 1) — expert and merge resampled together;
* each task's *best* loss over methods — the max taken inside every resample, so the optimism of
  picking the best of several noisy methods shows in the interval;
* a group's *worst* loss — the min over tasks inside every resample;
* the change a swap makes to the worst loss — tasks the two groups share are drawn once for both;

and the *reliability* of a group's best-loss column: the share of its spread across tasks that is not
sampling noise, 1 − mean(noise variance) / variance across tasks (≤ 0: the column is noise).

A resample of a task is fixed by the study's seed and the task's name, so every number drawn from
one task uses the same draws. Where there is nothing to resample the interval is NaN and ``note``
says why: the expert scores 0 (Eq. 1 divides by it), or the result has no per-row records (computed
before MergeLab kept them: recompute the study).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..storage.roles import held_out_name
from ..storage.store import Store
from . import equations

N_BOOT = 2000
LEVEL = 0.95
NO_RECORDS = "no per-row records (computed before MergeLab kept them): recompute the study for a CI"
ZERO_EXPERT = equations.UNDEFINED_LOSS
EXPERT = ("", "expert")
BASE = ("", "base")


@dataclass
class TaskDraws:
    """One task's resampled scores: per model — (group, method), the expert ``("", "expert")``,
    the base ``("", "base")`` — its score on all rows and on each of ``n_boot`` resamples, and
    whether higher is better for the task's metric."""

    task: str
    n_rows: int
    higher_is_better: bool = True
    point: dict[tuple[str, str], float] = field(default_factory=dict)
    draws: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def _counts(task: str, n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each row enters each resample, (n_boot, n): fixed by the seed and the task."""
    digest = int.from_bytes(hashlib.sha256(f"{seed}:{task}".encode()).digest()[:8], "little")
    return np.random.default_rng(digest).multinomial(n, np.full(n, 1.0 / n), size=n_boot)


def _macro_f1(counts: np.ndarray, pred: np.ndarray, ref: np.ndarray, labels: int) -> np.ndarray:
    """Macro F1 (0–100) over the labels present in references or predictions, for each resample
    (rows weighted by ``counts``) — the shipped F1 metric, resampled. pred, ref: (n,) label ids."""
    p1, r1 = np.eye(labels)[pred], np.eye(labels)[ref]
    tp = counts @ (p1 * r1)
    fp = counts @ p1 - tp
    fn = counts @ r1 - tp
    den = 2 * tp + fp + fn
    present = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / np.where(present, den, 1), 0.0)
    return 100 * f1.sum(-1) / np.maximum(present.sum(-1), 1)


def task_draws(
    records: pd.DataFrame,
    metric: str,
    n_boot: int = N_BOOT,
    seed: int = 0,
    aggregation: str = "mean",
    higher_is_better: bool = True,
) -> TaskDraws:
    """Resampled scores of every model with records on one task (rows paired by position; a model
    whose rows differ from the expert's is left out). A score is what the task's ``aggregation``
    makes of its rows: :func:`~.equations.aggregate` of their weighted mean Σ n·w·score / Σ n·w, n the
    row's count in the resample, w its weight (none: 1) — or macro F1 for ``metric`` "f1"."""
    task = str(records["task"].iloc[0])
    keys = list(dict.fromkeys(zip(records["group_name"], records["method"])))
    by = {k: sub.sort_values("row") for k, sub in records.groupby(["group_name", "method"], sort=False)}
    ref_key = EXPERT if EXPERT in by else keys[0]
    ref_ids = by[ref_key]["row_id"].to_numpy()
    n = len(ref_ids)
    out = TaskDraws(task, n, higher_is_better)
    counts = _counts(task, n, n_boot, seed)
    for key in keys:
        sub = by[key]
        if len(sub) != n or not np.array_equal(sub["row_id"].to_numpy(), ref_ids):
            continue  # other rows (another eval_limit or data version): not pairable
        if metric == "f1":
            names = sorted(set(sub["reference"].dropna()) | set(sub["prediction"].dropna()))
            ids = {v: i for i, v in enumerate(names)}
            pred = np.array([ids[v] for v in sub["prediction"]])
            ref = np.array([ids[v] for v in sub["reference"]])
            out.draws[key] = _macro_f1(counts, pred, ref, len(names))
            out.point[key] = float(_macro_f1(np.ones((1, n)), pred, ref, len(names))[0])
        else:
            scores = sub["score"].to_numpy(float)
            weights = sub["weight"].to_numpy(float) if "weight" in sub else np.ones(n)
            weights = np.where(np.isnan(weights), 1.0, weights)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.draws[key] = equations.aggregate(aggregation, (counts @ (scores * weights)) / (counts @ weights))
            out.point[key] = equations.aggregate(aggregation, (scores * weights).sum() / weights.sum())
    return out


class Draws:
    """Every task's resampled scores for one study, computed once (pages cache it)."""

    def __init__(self, store: Store, study_id: str, n_boot: int = N_BOOT, seed: int = 0):
        self.n_boot = n_boot
        records = store.row_records(study_id)
        how = store.results(study_id).drop_duplicates("task").set_index("task")
        self.tasks: dict[str, TaskDraws] = {}
        for task, sub in records.groupby("task", sort=False):
            known = task in how.index
            self.tasks[str(task)] = task_draws(
                sub,
                how.at[task, "metric"] if known else "accuracy",
                n_boot,
                seed,
                aggregation=how.at[task, "aggregation"] if known else "mean",
                higher_is_better=bool(how.at[task, "higher_is_better"]) if known else True,
            )

    def has(self, task: str, key: tuple[str, str]) -> bool:
        return task in self.tasks and key in self.tasks[task].draws and EXPERT in self.tasks[task].draws

    def loss(self, task: str, group: str, method: str) -> tuple[np.ndarray | None, str]:
        """Resampled Eq. 1 loss of ``task`` in ``group``'s ``method`` merge, or (None, why not)."""
        key = (group, method)
        if not self.has(task, key):
            return None, NO_RECORDS
        td = self.tasks[task]
        e, m = td.draws[EXPERT], td.draws[key]
        if not td.higher_is_better:  # performance is 1 / metric (equations.merging_loss)
            if td.point[key] == 0:
                return None, equations.UNDEFINED_LOWER_LOSS
            e, m = m, e
        elif td.point[EXPERT] == 0:
            return None, ZERO_EXPERT
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(e > 0, 100 * (m - e) / np.where(e > 0, e, 1), np.nan), ""

    def best_loss(self, task: str, group: str, methods: list[str]) -> tuple[np.ndarray | None, str]:
        """Resampled best loss over ``methods`` (the max inside each resample)."""
        samples = []
        for m in methods:
            s, why = self.loss(task, group, m)
            if s is None:
                return None, why
            samples.append(s)
        if not samples:
            return None, "undefined: no merged score"
        return np.max(np.vstack(samples), axis=0), ""

    def ratio(self, task: str, group: str, method: str) -> tuple[np.ndarray | None, str]:
        """Resampled merged ÷ expert score of ``task`` (MergeBench's normalized performance; expert ÷
        merged for a lower-is-better metric), or (None, why not). It is 1 + Eq. 1 / 100, resample by
        resample."""
        loss, why = self.loss(task, group, method)
        return (None, why) if loss is None else (1 + loss / 100, "")

    def difference(self, task: str, key_a: tuple[str, str], key_b: tuple[str, str]) -> np.ndarray | None:
        """Resampled improvement of a over b on one task (same rows), e.g. expert over base: a − b,
        or b − a for a lower-is-better metric, so that > 0 always means a is better."""
        if task not in self.tasks or key_a not in self.tasks[task].draws or key_b not in self.tasks[task].draws:
            return None
        td = self.tasks[task]
        return equations.improvement(td.draws[key_a], td.draws[key_b], td.higher_is_better)


_DRAWS: dict[tuple, Draws] = {}


def _encode(draws: Draws) -> dict[str, np.ndarray]:
    """Draws as named arrays: one per (task, model), and the rest as JSON text."""
    arrays: dict[str, np.ndarray] = {}
    tasks: list[dict] = []
    for t in draws.tasks.values():
        keys = list(t.draws)
        tasks.append(
            {"task": t.task, "n_rows": t.n_rows, "higher_is_better": t.higher_is_better, "keys": keys,
             "point": [t.point[k] for k in keys]}
        )  # fmt: skip
        for i, k in enumerate(keys):
            arrays[f"d{len(tasks) - 1}_{i}"] = t.draws[k]
    arrays["meta"] = np.array(json.dumps({"n_boot": draws.n_boot, "tasks": tasks}))
    return arrays


def _decode(arrays: dict[str, np.ndarray]) -> Draws:
    meta = json.loads(str(arrays["meta"]))
    out = Draws.__new__(Draws)
    out.n_boot, out.tasks = meta["n_boot"], {}
    for j, t in enumerate(meta["tasks"]):
        keys = [tuple(k) for k in t["keys"]]
        td = TaskDraws(t["task"], t["n_rows"], t["higher_is_better"])
        td.point = dict(zip(keys, t["point"]))
        td.draws = {k: arrays[f"d{j}_{i}"] for i, k in enumerate(keys)}
        out.tasks[td.task] = td
    return out


def draws_for(store: Store, study_id: str) -> Draws:
    """The study's :class:`Draws`, computed once per store content (the last few kept in this
    process; and kept beside the store for the next process, :func:`~mergelab.storage.report_cache.cached_arrays`)."""
    from ..storage.report_cache import cached_arrays

    key = (str(store.path), store.content_stamp(), study_id)
    if key not in _DRAWS:
        while len(_DRAWS) >= 8:
            _DRAWS.pop(next(iter(_DRAWS)))
        _DRAWS[key], _ = cached_arrays(
            store, study_id, f"draws:{N_BOOT}", lambda: Draws(store, study_id), _encode, _decode
        )
    return _DRAWS[key]


def interval(samples: np.ndarray | None, level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, standard error) of resampled values: the percentile interval; NaN when more than
    5 % of the resamples are undefined."""
    if samples is None:
        return np.nan, np.nan, np.nan
    ok = samples[np.isfinite(samples)]
    if len(ok) < 0.95 * len(samples) or len(ok) < 10:
        return np.nan, np.nan, np.nan
    tail = 100 * (1 - level) / 2
    return float(np.percentile(ok, tail)), float(np.percentile(ok, 100 - tail)), float(ok.std(ddof=1))


def within_noise(low: float, high: float) -> bool | None:
    """True if the interval covers 0 (a change 'within noise'), None if there is no interval."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return bool(low <= 0 <= high)


# --- tables ---------------------------------------------------------------------------------------------
def loss_intervals(draws: Draws, losses: pd.DataFrame) -> pd.DataFrame:
    """``losses`` (views.loss_table rows) with ci_low, ci_high, se of each loss and a note."""
    out = losses.copy()
    cols = {"ci_low": [], "ci_high": [], "se": [], "ci_note": []}
    for r in losses.itertuples():
        s, why = draws.loss(r.task, r.group_name, r.method)
        lo, hi, se = interval(s)
        cols["ci_low"].append(lo)
        cols["ci_high"].append(hi)
        cols["se"].append(se)
        cols["ci_note"].append(why if s is None else ("" if np.isfinite(lo) else "too few defined resamples"))
    for k, v in cols.items():
        out[k] = v
    return out


def best_losses(draws: Draws, losses: pd.DataFrame, group: str, methods: list[str] | None = None) -> pd.DataFrame:
    """Per task of ``group``: best loss over ``methods`` (all its methods if None), the method that
    gave it, its 95 % interval and SE (max taken inside each resample), the mean over resamples
    (above the point value when picking the best of several noisy methods flatters it), a note."""
    sub = losses[losses["group_name"] == group]
    if methods:
        sub = sub[sub["method"].isin(methods)]
    rows = []
    for task, t in sub.groupby("task", sort=False):
        known = t.dropna(subset=["loss"])
        row = {
            "task": task,
            "best_loss": np.nan,
            "best_method": "undefined",
            "ci_low": np.nan,
            "ci_high": np.nan,
            "se": np.nan,
            "boot_mean": np.nan,
            "note": "",
        }
        if known.empty:
            row["note"] = next((n for n in t.get("note", []) if n), "undefined: no merged score")
            rows.append(row)
            continue
        best = known.loc[known["loss"].idxmax()]
        row.update(best_loss=float(best["loss"]), best_method=best["method"])
        s, why = draws.best_loss(task, group, list(t["method"]))
        lo, hi, se = interval(s)
        row.update(ci_low=lo, ci_high=hi, se=se, note=why)
        if s is not None and np.isfinite(lo):
            row["boot_mean"] = float(np.nanmean(s))
        rows.append(row)
    return pd.DataFrame(
        rows, columns=["task", "best_loss", "best_method", "ci_low", "ci_high", "se", "boot_mean", "note"]
    )


def worst_samples(
    draws: Draws, losses: pd.DataFrame, group: str, tasks: list[str], methods: list[str] | None = None
) -> tuple[np.ndarray | None, str]:
    """Resampled worst best-loss of a group (min over its tasks inside each resample)."""
    sub = losses[losses["group_name"] == group]
    if methods:
        sub = sub[sub["method"].isin(methods)]
    samples = []
    for task in tasks:
        ms = list(sub.loc[sub["task"] == task, "method"])
        s, why = draws.best_loss(task, group, ms) if ms else (None, "undefined: no merged score")
        if s is None:
            return None, why
        samples.append(s)
    return (np.min(np.vstack(samples), axis=0), "") if samples else (None, "no tasks")


@dataclass
class Reliability:
    """How much of a group's spread in best loss across tasks is real rather than sampling noise."""

    reliability: float  # 1 − noise / observed (≤ 0: the spread is noise)
    observed_var: float  # variance of the best losses across tasks
    noise_var: float  # mean resampling variance of one task's best loss
    n_tasks: int
    n_rows: int  # eval rows per task (the smallest)
    note: str = ""

    def rows_for(self, target: float = 0.8) -> float:
        """Eval rows per task that would bring the reliability to ``target`` (noise variance falls
        as 1 / rows); NaN where the spread is all noise, so more rows of these tasks cannot tell."""
        true = self.observed_var - self.noise_var
        if not (np.isfinite(true) and true > 0 and self.noise_var > 0):
            return np.nan
        return float(np.ceil(self.n_rows * self.noise_var * target / ((1 - target) * true)))


def reliability(best: pd.DataFrame, draws: Draws | None = None) -> Reliability:
    """Reliability of a best-loss column (:func:`best_losses`), from its point values and SEs."""
    ok = best.dropna(subset=["best_loss", "se"])
    n_rows = min((draws.tasks[t].n_rows for t in ok["task"] if draws and t in draws.tasks), default=0)
    if len(ok) < 3:
        why = NO_RECORDS if best["se"].isna().all() and len(best) else "fewer than 3 tasks with an interval"
        return Reliability(np.nan, np.nan, np.nan, len(ok), n_rows, why)
    observed = float(ok["best_loss"].var(ddof=1))
    noise = float((ok["se"] ** 2).mean())
    rel = 1 - noise / observed if observed > 0 else np.nan
    return Reliability(rel, observed, noise, len(ok), n_rows)


def normalized_scores(
    draws: Draws, losses: pd.DataFrame, categories: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """MergeBench's normalized performance, defined once: per merge and task, merged ÷ expert score
    (= 1 + Eq. 1 / 100); then per merge, the mean over the group's tasks ("group mean") and over the
    tasks of each declared category present in the group ("category: <name>"). Intervals: paired
    bootstrap over each task's eval rows, the mean taken inside every resample (tasks are resampled
    independently: their rows differ).

    Args:
        draws: the study's resampled scores.
        losses: :func:`~.views.loss_table` rows (group_name, method, task, loss).
        categories: {category: [task, ...]} from the study spec; None or {} for none.
    Returns:
        columns group_name, method, level ("task" / "group mean" / "category: …"), task (the task,
        or the tasks averaged), n_tasks, normalized, ci_low, ci_high, note.
    """
    rows = []
    for (group, method), sub in losses.groupby(["group_name", "method"], sort=False):
        samples: dict[str, np.ndarray] = {}
        for r in sub.itertuples():
            s, why = draws.ratio(r.task, group, method)
            lo, hi, _ = interval(s)
            value = 1 + r.loss / 100 if np.isfinite(r.loss) else np.nan
            rows.append(
                dict(group_name=group, method=method, level="task", task=r.task, n_tasks=1, normalized=value,
                     ci_low=lo, ci_high=hi, note=why)
            )  # fmt: skip
            if s is not None:
                samples[r.task] = s
        sets = {"group mean": list(sub["task"])}
        for name, members in (categories or {}).items():
            present = [t for t in members if t in set(sub["task"])]
            if present:
                sets[f"category: {name}"] = present
        for level, tasks in sets.items():
            values = sub.set_index("task").loc[tasks, "loss"]
            mean = float(np.mean(1 + values / 100)) if values.notna().all() else np.nan
            have = [samples[t] for t in tasks if t in samples]
            lo, hi, _ = interval(np.mean(np.vstack(have), axis=0)) if len(have) == len(tasks) else (np.nan,) * 3
            note = "" if len(have) == len(tasks) else "some tasks have no interval (see their rows)"
            rows.append(
                dict(group_name=group, method=method, level=level, task=", ".join(tasks), n_tasks=len(tasks),
                     normalized=mean, ci_low=lo, ci_high=hi, note=note)
            )  # fmt: skip
    return pd.DataFrame(
        rows,
        columns=["group_name", "method", "level", "task", "n_tasks", "normalized", "ci_low", "ci_high", "note"],
    )


FORGETTING_COLUMNS = [
    "group_name", "method", "level", "task", "n_tasks", "score", "base_score", "change", "ci_low", "ci_high",
    "retained", "note",
]  # fmt: skip


def forgetting(draws: Draws, held: pd.DataFrame) -> pd.DataFrame:
    """Forgetting as MergeBench reports it: a group's merge scored on tasks outside the group against
    the untrained base on the same rows. Per merge and held-out task, ``change`` = merged − base
    (points; < 0 = the merge lost skill the base had) and ``retained`` = merged ÷ base — for a
    lower-is-better metric base − merged and base ÷ merged, so the signs read the same; then per merge
    the mean over its held-out tasks ("mean over held-out tasks"). Intervals: paired bootstrap over
    each task's eval rows (merged and base resampled together), the mean taken inside each resample.

    Args:
        draws: the study's resampled scores.
        held: :func:`~.views.held_out_scores` rows (group_name, method, task, score, base_score,
            higher_is_better).
    Returns:
        one row per (group_name, method, level, task) in :data:`FORGETTING_COLUMNS`.
    """
    if held.empty:
        return pd.DataFrame(columns=FORGETTING_COLUMNS)
    held = held.copy()
    higher = held["higher_is_better"].astype(bool).to_numpy() if "higher_is_better" in held else True
    held["change"] = equations.improvement(held["score"], held["base_score"], higher)  # > 0: merge better
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(higher, held["score"] / held["base_score"], held["base_score"] / held["score"])
    held["retained"] = np.where(np.isfinite(ratio), ratio, np.nan)
    rows = []
    for (group, method), sub in held.groupby(["group_name", "method"], sort=False):
        samples = {}
        for r in sub.itertuples():
            s = draws.difference(r.task, (held_out_name(group), method), BASE)
            lo, hi, _ = interval(s)
            rows.append(
                dict(group_name=group, method=method, level="task", task=r.task, n_tasks=1, score=r.score,
                     base_score=r.base_score, change=r.change, ci_low=lo, ci_high=hi,
                     retained=r.retained, note="" if s is not None else NO_RECORDS)
            )  # fmt: skip
            if s is not None:
                samples[r.task] = s
        tasks = list(sub["task"])
        have = [samples[t] for t in tasks if t in samples]
        lo, hi, _ = interval(np.mean(np.vstack(have), axis=0)) if len(have) == len(tasks) else (np.nan,) * 3
        rows.append(
            dict(group_name=group, method=method, level="mean over held-out tasks", task=", ".join(tasks),
                 n_tasks=len(tasks), score=float(sub["score"].mean()), base_score=float(sub["base_score"].mean()),
                 change=float(sub["change"].mean()), ci_low=lo, ci_high=hi,
                 retained=float(np.nanmean(sub["retained"])) if sub["retained"].notna().any() else np.nan,
                 note="" if len(have) == len(tasks) else "some tasks have no interval (see their rows)")
        )  # fmt: skip
    return pd.DataFrame(rows, columns=FORGETTING_COLUMNS)
