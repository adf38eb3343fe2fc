"""The paper's protocol as tables — Table 4 on pairwise merges, Table 5 over groups, Table 3's ANOVA,
and which signal predicts collapse — the one implementation pages, ``mergelab report`` and the HTML
report all use.

Pure functions of store rows, per-row records and stored hidden states; every test that cannot run
(too few rows, a constant column) gives NaN and a note, never an exception.

What counts (pinned here):

* **Groups by role.** Table 5, the ANOVA and every pooled analysis use the *evidence* groups —
  drawn at random or declared — never a swap (chosen by looking at results) nor a pair.
* **Direction.** Each predictor declares which sign means "predicts collapse" (:data:`PREDICTORS`):
  higher MDS → worse (lower) best loss, r < 0. Tests are one-sided in that direction; a result the
  other way is said to be opposite, never significant. Two-sided p stays beside it.
* **Dependence.** Groups that share tasks are not independent. The combined test is Fisher's z
  over *disjoint* groups (the largest set of them, in the spec's order); pooled rows get an interval
  from resampling whole tasks; overlaps are counted and reported.
* A task's *best* loss in a group is its highest loss over the study's ``best_of`` methods (all of
  them by default). A pair's merging loss, for one method, is the mean of Eq. 1 over its two tasks.
* Methods that gave identical scores in every cell are one level, not two (TA = LA at λ = 1/n).
* HiddenSim(i, j) of a pair is Eq. 2 over the group the pair was expanded from (``pairwise:``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..merging.conflicts import METRICS as CONFLICTS
from ..storage.store import Store
from . import equations, stats, uncertainty, views
from . import paper as paper_tables
from .grouping import (
    _one_level_per_merge,
    evidence_groups,
    identical_methods,
    overlap_warning,
    overlaps,
    pair_groups,
    swaps,
    testable_disjoint_groups,
)
from .predictors import (
    PREDICTORS,
    _corr_columns,
    _correlation,
    direction_words,
    pair_losses,
    pair_predictors,
    predictor_comparison,
    predictor_of,
)


# --- Table 4: pairwise merges ----------------------------------------------------------------
def pair_reliability(store: Store, study_id: str, draws: uncertainty.Draws | None = None) -> pd.DataFrame:
    """Per method: how much of the spread of pair losses across pairs is more than row-sampling noise
    (each pair loss resampled as the mean of its two tasks' resampled losses)."""
    losses = pair_losses(store, study_id)
    if losses.empty:
        return pd.DataFrame(columns=["method", "reliability", "pairs", "note"])
    draws = draws or uncertainty.draws_for(store, study_id)
    rows = []
    for method, sub in losses.groupby("method", sort=False):
        points, noise = [], []
        for r in sub.dropna(subset=["pair_loss"]).itertuples():
            sa, _ = draws.loss(r.task_a, r.pair, method)
            sb, _ = draws.loss(r.task_b, r.pair, method)
            if sa is None or sb is None:
                continue
            points.append(r.pair_loss)
            noise.append(np.nanvar((sa + sb) / 2, ddof=1))
        if len(points) >= 3 and np.var(points, ddof=1) > 0:
            rel, note = 1 - np.mean(noise) / np.var(points, ddof=1), ""
        else:
            rel, note = np.nan, uncertainty.NO_RECORDS if not points else "fewer than 3 pairs with records"
        rows.append({"method": method, "reliability": rel, "pairs": len(points), "note": note})
    return pd.DataFrame(rows)


def table4(store: Store, study_id: str, **kw) -> pd.DataFrame:
    """The paper's Table 4: Pearson r of each conflict metric and of HiddenSim(i, j) with the pair's
    merging loss, per method, over the study's pairwise merges — tested one-sided in the direction
    each metric would predict collapse. Empty without pairs."""
    columns = [
        "metric",
        "method",
        "expected",
        "n",
        "r",
        "ci_low",
        "ci_high",
        "direction",
        "p_expected",
        "p_two_sided",
        "note",
    ]
    losses = pair_losses(store, study_id)
    if losses.empty:
        return pd.DataFrame(columns=columns)
    scores = views.loss_table(store, study_id)
    labels = identical_methods(scores[scores["group_name"].isin(pair_groups(store, study_id))])
    losses = losses.assign(method=losses["method"].map(labels)).drop_duplicates(["pair", "method"])
    preds = pair_predictors(store, study_id, **kw)
    frame = losses.merge(preds, on=["pair", "task_a", "task_b"])
    rows = []
    for metric in [*CONFLICTS, "hiddensim"]:
        decl = predictor_of("HiddenSim" if metric == "hiddensim" else metric)
        for method, sub in frame.groupby("method", sort=False):
            c, note = _correlation(sub[metric], sub["pair_loss"], decl.expect)
            rows.append(
                {
                    "metric": metric,
                    "method": method,
                    "expected": decl.meaning,
                    **_corr_columns(c, note, int(sub[[metric, "pair_loss"]].notna().all(axis=1).sum())),
                }
            )
    return pd.DataFrame(rows, columns=columns)


# --- Table 5 over groups -------------------------------------------------------------------------
def mds_vs_loss(store: Store, study_id: str, group: str, draws: uncertainty.Draws | None = None, **kw) -> pd.DataFrame:
    """Per task of ``group``: its MDS (the study's HiddenSim settings unless given) and its best
    loss over the study's ``best_of`` methods with the 95 % interval (see :mod:`.uncertainty`)."""
    kw = {**views.hidden_settings(store, study_id), **kw}
    tasks = store.groups(study_id, role=("group", "swap")).get(group, [])
    mds = views.mds_table(store, study_id, group, tasks=tasks, **kw)
    mds = mds.rename(columns={"note": "mds_note"}) if "note" in mds else mds.assign(mds_note="")
    losses = views.loss_table(store, study_id)
    draws = draws if draws is not None else uncertainty.draws_for(store, study_id)
    best = uncertainty.best_losses(draws, losses, group, views.best_of(store, study_id))
    out = (
        pd.DataFrame({"task": tasks})
        .merge(mds[["task", "mds", "mds_note"]], on="task", how="left")
        .merge(best, on="task", how="left")
    )
    notes = [[str(n) for n in (a, b) if isinstance(n, str) and n] for a, b in zip(out["mds_note"], out["note"])]
    out["note"] = ["; ".join(dict.fromkeys(n)) for n in notes]
    return out.drop(columns=["mds_note"])


def _with_paper_effect() -> float:
    """The paper's effect size: Table 5's r over its four groups (GLUE, a, b, c), Fisher-z mean."""
    t5 = paper_tables.table5_recomputed(paper_tables.load_tables())
    rs = t5["r"].iloc[:4].to_numpy(float)
    return float(np.tanh(np.arctanh(rs).mean()))


def table5(store: Store, study_id: str, draws: uncertainty.Draws | None = None, **kw) -> pd.DataFrame:
    """The paper's Table 5: Pearson(MDS, best loss) per evidence group — with its direction, one-sided p
    in the paper's direction (r < 0), two-sided p, 95 % interval, the reliability of the group's
    best-loss column, the smallest |r| it detects with 80 % power — then the groups combined.

    Rows after the groups: ``combined`` (Fisher's z over the disjoint groups, named in ``note``) and
    ``pooled`` (every group's rows together, interval from resampling whole tasks; p omitted when
    groups share tasks). ``attrs``: ``overlap`` (the warning), ``paper_r`` (the paper's effect)."""
    columns = [
        "group",
        "n",
        "r",
        "ci_low",
        "ci_high",
        "direction",
        "p_expected",
        "p_two_sided",
        "reliability",
        "detectable_r",
        "rows_needed",
        "note",
    ]
    groups = evidence_groups(store, study_id)
    draws = draws if draws is not None else uncertainty.draws_for(store, study_id)
    expect = PREDICTORS["MDS"].expect
    rows, frames = [], {}
    for group in groups:
        f = mds_vs_loss(store, study_id, group, draws, **kw)
        frames[group] = f
        c, note = _correlation(f["mds"], f["best_loss"], expect)
        n = int(f[["mds", "best_loss"]].notna().all(axis=1).sum())
        rel = uncertainty.reliability(f, draws)
        tasks_scored = int(f["best_loss"].notna().sum())  # what the group can detect with its tasks
        rows.append(
            {
                "group": group,
                **_corr_columns(c, note or rel.note, n),
                "reliability": rel.reliability,
                "detectable_r": stats.detectable_r(tasks_scored),
                "rows_needed": rel.rows_for(0.8),
            }
        )
        rows[-1]["direction"] = direction_words(rows[-1]["r"], expect, "the paper's direction")
    out = pd.DataFrame(rows, columns=columns)
    tested = out.dropna(subset=["r"])
    disjoint = testable_disjoint_groups(groups, tested.set_index("group")["n"].to_dict())
    out.attrs["combined_groups"] = disjoint if len(disjoint) > 1 else []
    if len(disjoint) > 1:
        sub = out.set_index("group").loc[disjoint]
        try:
            comb = stats.fisher_combine(sub["r"], sub["n"], expect)
            out.loc[len(out)] = {
                "group": "combined",
                "n": comb.n,
                "r": comb.r,
                "ci_low": comb.ci_low,
                "ci_high": comb.ci_high,
                "direction": direction_words(comb.r, expect, "the paper's direction"),
                "p_expected": comb.p_expected,
                "p_two_sided": np.nan,
                "reliability": np.nan,
                "detectable_r": np.nan,
                "rows_needed": np.nan,
                "note": f"Fisher's z over {comb.groups} disjoint groups ({', '.join(disjoint)})",
            }
        except stats.StatsError as exc:
            out.loc[len(out)] = {"group": "combined", "note": f"undefined: {exc}"}
    if len(frames) > 1:
        allrows = pd.concat([f.assign(group=g) for g, f in frames.items()], ignore_index=True)
        ok = allrows.dropna(subset=["mds", "best_loss"])
        c, note = _correlation(ok["mds"], ok["best_loss"], expect)
        lo, hi = stats.cluster_bootstrap_r(ok["mds"], ok["best_loss"], ok["task"])
        row = {
            "group": "pooled",
            **_corr_columns(c, note, len(ok)),
            "ci_low": lo,
            "ci_high": hi,
            "reliability": np.nan,
            "detectable_r": np.nan,
            "rows_needed": np.nan,
        }
        shared = not overlaps(groups).empty
        row["note"] = note or (
            "rows of all groups together; interval from resampling whole tasks; MDS is "
            "scaled within each group" + ("; p omitted: groups share tasks" if shared else "")
        )
        if shared:
            row["p_expected"] = row["p_two_sided"] = np.nan
        row["direction"] = direction_words(row["r"], expect, "the paper's direction")
        out.loc[len(out)] = row
    out.attrs.update(
        overlap=overlap_warning(groups),
        paper_r=_with_paper_effect(),
        combined_groups=out.attrs.get("combined_groups", []),
    )
    return out


def power_summary(t5: pd.DataFrame) -> dict:
    """What Table 5's groups can detect: the paper's effect size, attenuated by each group's
    reliability (r_obs = r · √reliability), and the disjoint groups of this size needed to detect
    it with 80 % power."""
    paper_r = t5.attrs.get("paper_r", np.nan)
    groups = t5[~t5["group"].isin(["combined", "pooled"])]
    rel = groups["reliability"].dropna()
    attenuated = paper_r * np.sqrt(max(float(rel.mean()), 0.0)) if len(rel) else paper_r
    n = int(groups["n"].median()) if len(groups) else 0
    return {
        "paper_r": paper_r,
        "mean_reliability": float(rel.mean()) if len(rel) else np.nan,
        "attenuated_r": attenuated,
        "n": n,
        "detectable_r": stats.detectable_r(n) if n > 3 else np.nan,
        "groups_needed": stats.groups_needed(attenuated, n) if n > 3 else np.nan,
    }


# --- Table 3 ---------------------------------------------------------------------------------------------
def anova(store: Store, study_id: str, group: str | None = None) -> pd.DataFrame:
    """Table 3: one-way ANOVA of merging loss by method and by task over the evidence groups' merge
    rows (or one group's): swaps and pairs left out, identical methods one level."""
    losses = views.loss_table(store, study_id)
    keep = [group] if group else list(evidence_groups(store, study_id))
    losses = losses[losses["group_name"].isin(keep)].dropna(subset=["loss"])
    losses, same = _one_level_per_merge(losses)
    shared = (
        ""
        if group
        else (
            "a task in several groups contributes several rows (not independent)"
            if not overlaps(evidence_groups(store, study_id)).empty
            else ""
        )
    )
    rows = []
    for factor in ("method", "task"):
        base = {"factor": factor, "n": len(losses), "levels": int(losses[factor].nunique())}
        try:
            f, p = stats.anova_oneway(losses, factor, "loss")
            note = "; ".join(x for x in ((same if factor == "method" else ""), shared) if x)
            rows.append({**base, "F": f, "p_value": p, "note": note})
        except stats.StatsError as exc:
            rows.append({**base, "F": np.nan, "p_value": np.nan, "note": f"undefined: {exc}"})
    return pd.DataFrame(rows, columns=["factor", "F", "p_value", "n", "levels", "note"])


# --- exploratory: the per-task grid inside one group ------------------------------------------
def task_conflict_grid(store: Store, study_id: str, group: str) -> pd.DataFrame:
    """Inside one group: each task's mean conflict metric over its pairs in the group (and its mean
    HiddenSim to the others) vs its own loss under each method — direction-aware, like Table 4,
    but *not* the paper's Table 4, which merges pairs."""
    tasks = store.groups(study_id, role=("group", "swap")).get(group, [])
    losses = views.loss_table(store, study_id)
    losses, _ = _one_level_per_merge(losses[losses["group_name"] == group])
    pm = store.pair_metrics(study_id)
    per_task = {}
    for name, sub in pm.groupby("name"):
        per_task[name] = {
            t: sub[((sub.task_a == t) & sub.task_b.isin(tasks)) | ((sub.task_b == t) & sub.task_a.isin(tasks))][
                "value"
            ].mean()
            for t in tasks
        }
    if views.has_states(store, study_id, tasks):
        sim = views.similarity(store, study_id, tasks, **views.hidden_settings(store, study_id)).to_numpy()
        per_task["hiddensim"] = {t: (np.nansum(sim[i]) - 1) / (len(tasks) - 1) for i, t in enumerate(tasks)}
    rows = []
    for metric, vals in per_task.items():
        decl = predictor_of("HiddenSim" if metric == "hiddensim" else metric)
        for method, sub in losses.groupby("method"):
            c, note = _correlation(sub["task"].map(vals).to_numpy(float), sub["loss"].to_numpy(float), decl.expect)
            rows.append({"metric": metric, "method": method, **_corr_columns(c, note, len(sub))})
    return pd.DataFrame(rows)


def summary(store: Store, study_id: str, *, n_boot: int = 1000) -> dict[str, pd.DataFrame]:
    """Everything ``mergelab report`` prints, each table once: experts (with base and the difference's
    interval), merging losses with intervals, each evidence group's HiddenSim and MDS, Table 5,
    its power, Table 3, Table 4 (pairs), the swaps with their intervals, the predictor comparison."""
    draws = uncertainty.draws_for(store, study_id)
    losses = views.loss_table(store, study_id)
    kw = views.hidden_settings(store, study_id)
    out = {
        "experts": expert_evidence(store, study_id, draws),
        "losses": uncertainty.loss_intervals(draws, losses),
        "normalized": normalized_scores(store, study_id, draws, losses),
    }
    for group, tasks in evidence_groups(store, study_id).items():
        if views.has_states(store, study_id, tasks):
            sim = views.similarity(store, study_id, tasks, **kw)
            frame = sim.reset_index(names="task")
            if sim.attrs.get("undefined"):
                frame["note"] = sim.attrs["undefined"]
            out[f"hiddensim:{group}"] = frame
        out[f"mds_vs_best_loss:{group}"] = mds_vs_loss(store, study_id, group, draws)
    t5 = table5(store, study_id, draws)
    held = forgetting(store, study_id, draws)
    if len(held):
        out["forgetting"] = held
    out["table5"] = t5
    power = power_summary(t5)
    out["power"] = pd.DataFrame([power])
    out["table3_anova"] = anova(store, study_id)
    if pair_groups(store, study_id):
        out["table4_pairwise"] = table4(store, study_id, **{k: v for k, v in kw.items() if k != "distance"})
        out["pair_reliability"] = pair_reliability(store, study_id, draws)
    sw = swap_effects(store, study_id, draws)
    if len(sw):
        out["swaps"] = sw
    comparison = predictor_comparison(store, study_id, n_boot=n_boot)
    if len(comparison):
        out["predictors"] = comparison
    return out


# --- experts, losses and swaps ------------------------------------------------------------------------
def forgetting(store: Store, study_id: str, draws: uncertainty.Draws | None = None) -> pd.DataFrame:
    """Each group merge against the untrained base on the spec's ``held_out`` tasks
    (:func:`~.uncertainty.forgetting`); empty when the study has none."""
    return uncertainty.forgetting(
        draws or uncertainty.draws_for(store, study_id), views.held_out_scores(store, study_id)
    )


def loss_intervals(store: Store, study_id: str) -> pd.DataFrame:
    """Every merging loss (:func:`~.views.loss_table`) with its 95 % interval and SE (paired bootstrap
    over eval rows) or a ``ci_note`` saying why it has none."""
    return uncertainty.loss_intervals(uncertainty.draws_for(store, study_id), views.loss_table(store, study_id))


def normalized_scores(
    store: Store, study_id: str, draws: uncertainty.Draws | None = None, losses: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Merged ÷ expert per task, per group and per category the spec declares (``categories:``),
    with intervals (:func:`~.uncertainty.normalized_scores`); ``draws`` and ``losses`` when the caller
    has them already."""
    return uncertainty.normalized_scores(
        draws or uncertainty.draws_for(store, study_id),
        views.loss_table(store, study_id) if losses is None else losses,
        views.spec_dict(store, study_id).get("categories") or {},
    )


def best_loss_intervals(store: Store, study_id: str, group: str) -> pd.DataFrame:
    """Per task of ``group``: its best loss over the ``best_of`` methods with its 95 % interval."""
    return uncertainty.best_losses(
        uncertainty.draws_for(store, study_id), views.loss_table(store, study_id), group, views.best_of(store, study_id)
    )


# --- experts and swaps ------------------------------------------------------------------------------
def expert_evidence(store: Store, study_id: str, draws: uncertainty.Draws | None = None) -> pd.DataFrame:
    """Per task: the expert's score, the base's, which way the metric is better ("higher" or
    "lower"), the gain — how much better the expert scores than the base (expert − base, or base −
    expert for a lower-is-better metric) — with its 95 % interval (same rows), and how far one eval
    row moves Eq. 1 (10⁴ / (rows · expert score), in points; for a mean of 0/100 rows)."""
    draws = draws if draws is not None else uncertainty.draws_for(store, study_id)
    res = store.results(study_id)
    experts = res[res["method"] == "expert"].set_index("task")
    base = res[res["method"] == "base"].set_index("task")["score"]
    rows = []
    for task, r in experts.iterrows():
        d = draws.difference(task, uncertainty.EXPERT, uncertainty.BASE)
        lo, hi, _ = uncertainty.interval(d)
        n = draws.tasks[task].n_rows if task in draws.tasks else np.nan
        higher = bool(r["higher_is_better"])
        rows.append(
            {
                "task": task,
                "metric": r["metric"],
                "better": "higher" if higher else "lower",
                "expert_score": r["score"],
                "base_score": base.get(task),
                "gain": equations.improvement(r["score"], base.get(task, np.nan), higher),
                "gain_ci_low": lo,
                "gain_ci_high": hi,
                "eval_rows": n,
                "points_per_row": (
                    1e4 / (n * r["score"])
                    if np.isfinite(n) and r["score"] > 0 and higher and r["aggregation"] == "mean"
                    else np.nan
                ),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "task",
            "metric",
            "better",
            "expert_score",
            "base_score",
            "gain",
            "gain_ci_low",
            "gain_ci_high",
            "eval_rows",
            "points_per_row",
        ],
    )


def swap_effects(store: Store, study_id: str, draws: uncertainty.Draws | None = None) -> pd.DataFrame:
    """Per swap: the parent's and the swap's worst best-loss and worst MDS, the change in worst loss
    with its 95 % interval (tasks the two share resampled once for both) and whether it is within
    noise, and how many of the swap's tasks have merged scores yet."""
    sw = swaps(store, study_id)
    if not sw:
        return pd.DataFrame(
            columns=[
                "swap",
                "parent",
                "removed",
                "added",
                "worst_before",
                "worst_after",
                "worst_task_before",
                "worst_task_after",
                "worst_mds_before",
                "worst_mds_after",
                "worst_before_ci_low",
                "worst_before_ci_high",
                "worst_after_ci_low",
                "worst_after_ci_high",
                "change",
                "change_ci_low",
                "change_ci_high",
                "within_noise",
                "merged_tasks",
                "tasks",
                "note",
            ]
        )
    draws = draws if draws is not None else uncertainty.draws_for(store, study_id)
    groups = store.groups(study_id, role=("group", "swap"))
    losses = views.loss_table(store, study_id)
    methods = views.best_of(store, study_id)
    kw = views.hidden_settings(store, study_id)
    rows = []
    for name, s in sw.items():
        row = {"swap": name, "parent": s.parent, "removed": s.removed, "added": s.added}
        for side, g in (("before", s.parent), ("after", name)):
            best = views.best_loss(losses, g, methods).dropna()
            worst = best.loc[best["best_loss"].idxmin()] if len(best) else None
            row[f"worst_{side}"] = float(worst["best_loss"]) if worst is not None else np.nan
            row[f"worst_task_{side}"] = worst["task"] if worst is not None else ""
            mds = views.mds_table(store, study_id, g, tasks=groups.get(g, []), **kw)
            row[f"worst_mds_{side}"] = float(mds["mds"].max()) if len(mds) and mds["mds"].notna().any() else np.nan
        before, why_b = uncertainty.worst_samples(draws, losses, s.parent, groups.get(s.parent, []), methods)
        after, why_a = uncertainty.worst_samples(draws, losses, name, groups.get(name, []), methods)
        for side, samples in (("before", before), ("after", after)):
            row[f"worst_{side}_ci_low"], row[f"worst_{side}_ci_high"], _ = uncertainty.interval(samples)
        diff = after - before if before is not None and after is not None else None
        lo, hi, _ = uncertainty.interval(diff)
        merged = losses.loc[losses["group_name"] == name, "task"].nunique()
        row.update(
            change=row["worst_after"] - row["worst_before"],
            change_ci_low=lo,
            change_ci_high=hi,
            within_noise=uncertainty.within_noise(lo, hi),
            merged_tasks=int(merged),
            tasks=len(groups.get(name, [])),
            note=why_b or why_a,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def swap_frame(effect: pd.Series) -> pd.DataFrame:
    """One swap (a row of :func:`swap_effects`) as the two bars of its before/after chart: the parent
    and the swap, each with its worst best-loss, that loss's 95 % interval, and its worst MDS."""
    rows = []
    for side, name in (("before", effect["parent"]), ("after", f"{effect['removed']} → {effect['added']}")):
        rows.append(
            {
                "group": name,
                "worst_loss": effect[f"worst_{side}"],
                "worst_mds": effect[f"worst_mds_{side}"],
                "ci_low": effect[f"worst_{side}_ci_low"],
                "ci_high": effect[f"worst_{side}_ci_high"],
            }
        )
    return pd.DataFrame(rows)


# --- the swap advisor ----------------------------------------------------------------------------------
def worst_group(store: Store, study_id: str) -> str | None:
    """The group (role "group", not a swap or pair) whose worst best-loss over the ``best_of``
    methods is the lowest, among groups whose every task has one; None before any group is merged."""
    losses = views.loss_table(store, study_id)
    methods = views.best_of(store, study_id)
    worst: dict[str, float] = {}
    for g, tasks in store.groups(study_id).items():
        best = views.best_loss(losses, g, methods)
        if len(best) and best["best_loss"].notna().sum() == len(tasks):
            worst[g] = float(best["best_loss"].min())
    return min(worst, key=lambda g: worst[g]) if worst else None


def swap_pool(store: Store, study_id: str, group: str, pool: list[str] | None = None) -> list[str]:
    """The tasks that may replace one of ``group``'s: ``pool`` when given (a plan may fix them), else
    the study's ``pool``, else every task of its groups and swaps — those in ``group`` left out."""
    groups = store.groups(study_id, role=("group", "swap"))
    every = pool or store.pool(study_id) or dict.fromkeys(t for g in groups.values() for t in g)
    return [t for t in every if t not in groups[group]]


def swap_advice(
    store: Store, study_id: str, group: str, collapse: float = -30.0, pool: list[str] | None = None
) -> pd.DataFrame:
    """Replacements for ``group``'s highest-MDS task, ranked by the new group's worst MDS (hidden
    states only), each beside what the study already measured of the candidate: its best loss in
    every other group it was merged in, whether it collapsed there, and its mean pair loss with the
    group's tasks (where pairs were merged). Candidates: :func:`swap_pool`. ``change``: new worst MDS
    − the group's now (< 0 is better by this measure). ``attrs``: removed, current_worst_mds,
    any_improves."""
    groups = store.groups(study_id, role=("group", "swap"))
    tasks = groups[group]
    pool = swap_pool(store, study_id, group, pool)
    kw = {k: v for k, v in views.hidden_settings(store, study_id).items() if k in ("layer", "pooling")}
    cands = views.swap_candidates(store, study_id, tasks, pool, **kw)
    losses = views.loss_table(store, study_id)
    methods = views.best_of(store, study_id)
    measured: dict[str, list[str]] = {}
    collapsed: dict[str, list[str]] = {}
    for g in groups:
        if g == group:
            continue
        best = views.best_loss(losses, g, methods).dropna().set_index("task")["best_loss"]
        for t, v in best.items():
            measured.setdefault(t, []).append(f"{g} {v:+.0f} %".replace("-", "−"))
            if v <= collapse:
                collapsed.setdefault(t, []).append(g)
    pairs = pair_losses(store, study_id)
    cur = float(cands.attrs["current_worst_mds"])
    out = cands.assign(change=cands["new_worst_mds"] - cur)
    out["improves"] = out["change"] < 0
    out["measured_elsewhere"] = out["candidate"].map(lambda t: ", ".join(measured.get(t, [])) or "—")
    out["collapsed_in"] = out["candidate"].map(lambda t: ", ".join(collapsed.get(t, [])))
    if len(pairs):
        best_pairs = pairs.groupby(["task_a", "task_b"])["pair_loss"].max().reset_index()

        def with_group(t):
            sub = best_pairs[
                ((best_pairs.task_a == t) & best_pairs.task_b.isin(tasks))
                | ((best_pairs.task_b == t) & best_pairs.task_a.isin(tasks))
            ]
            return float(sub["pair_loss"].mean()) if len(sub) else np.nan

        out["pair_loss_with_group"] = out["candidate"].map(with_group)
    out.attrs.update(cands.attrs, any_improves=bool(out["improves"].any()), group=group)
    return out


def swap_record(store: Store, study_id: str) -> dict:
    """How the study's verified swaps came out: how many raised the worst loss beyond noise, how
    many were within noise, how many lowered it (and how many have no interval yet)."""
    eff = swap_effects(store, study_id)
    done = eff[eff["merged_tasks"] == eff["tasks"]] if len(eff) else eff
    helped = int((done["change_ci_low"] > 0).sum()) if len(done) else 0
    hurt = int((done["change_ci_high"] < 0).sum()) if len(done) else 0
    noise = int((done["within_noise"] == True).sum()) if len(done) else 0  # noqa: E712 (None = no interval)
    return {
        "verified": len(done),
        "helped": helped,
        "within_noise": noise,
        "hurt": hurt,
        "no_interval": len(done) - helped - hurt - noise,
    }


# --- admission of candidate tasks (data/llm/PREREGISTRATION.md) -----------------------------------------
def admission(
    store: Store, study_id: str, *, min_gain: float = 10.0, min_gain_low: float = 5.0, max_points_per_row: float = 2.0
) -> pd.DataFrame:
    """Which candidate tasks enter the study, by the preregistered rule, measured before any merge:
    the expert beats the untrained base by at least ``min_gain`` points with the lower end of the
    gain's 95 % interval at least ``min_gain_low``, and one eval row moves Eq. 1 by at most
    ``max_points_per_row`` points. One row per task with its numbers, ``admitted`` and ``why not``."""
    ev = expert_evidence(store, study_id)
    reasons = []
    for r in ev.itertuples():
        why = []
        if not np.isfinite(r.gain):
            why.append("no base score")
        elif r.gain < min_gain:
            why.append(f"gain {r.gain:.1f} < {min_gain:g}")
        if np.isfinite(r.gain) and not (np.isfinite(r.gain_ci_low) and r.gain_ci_low >= min_gain_low):
            why.append(
                f"gain's 95 % low {r.gain_ci_low:.1f} < {min_gain_low:g}"
                if np.isfinite(r.gain_ci_low)
                else "no interval for the gain"
            )
        if not np.isfinite(r.points_per_row):
            why.append("how far one row moves Eq. 1 is not defined for this metric (not a mean of 0/100 rows)")
        elif r.points_per_row > max_points_per_row:
            why.append(f"one row moves Eq. 1 by {r.points_per_row:.2f} > {max_points_per_row:g} points")
        reasons.append("; ".join(why))
    return ev.assign(admitted=[not w for w in reasons], why_not=reasons)
