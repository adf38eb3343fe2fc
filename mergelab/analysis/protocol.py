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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..choices import DISTANCES
from ..merging.conflicts import METRICS as CONFLICTS
from ..storage import states as states_io
from ..storage.roles import Swap
from ..storage.store import Store
from . import equations, stats, uncertainty, views
from . import paper as paper_tables

#: the poolings compared in the predictor comparison (first-token states of a causal LM see only the prompt's
#: first word)
POOLINGS = ("mean", "last")


# --- what each predictor claims ----------------------------------------------------------------
@dataclass(frozen=True)
class Predictor:
    """A candidate signal of collapse and the direction in which it would predict it: ``expect`` =
    −1 if a higher value should go with a lower (worse) merging loss, +1 if with a higher one."""

    family: str
    expect: int
    meaning: str


#: One declaration per predictor family; a column's family is its name's first word(s).
PREDICTORS = {
    "MDS": Predictor("MDS", -1, "higher MDS (less like the group's other experts) → worse loss"),
    "HiddenSim": Predictor("HiddenSim", +1, "more similar experts → better pair loss"),
    "merge distortion": Predictor("merge distortion", -1, "the merge moves the task's hidden states "
                                                          "further from its expert's → worse loss"),
    "magnitude_change_ratio": Predictor("magnitude_change_ratio", -1, "more parameter conflict → worse loss"),
    "sign_change_ratio": Predictor("sign_change_ratio", -1, "more parameter conflict → worse loss"),
    "conflicting_magnitude_change_ratio": Predictor("conflicting_magnitude_change_ratio", -1,
                                                    "more parameter conflict → worse loss"),
    "task_vector_cosine": Predictor("task_vector_cosine", +1, "more aligned task vectors → better loss"),
}


def predictor_of(column: str) -> Predictor:
    """The declaration a table column belongs to ('MDS l2 L30 mean', 'mean sign_change_ratio', …)."""
    name = column.removeprefix("mean ")
    for family in sorted(PREDICTORS, key=len, reverse=True):
        if name == family or name.startswith(family + " "):
            return PREDICTORS[family]
    raise KeyError(f"no predictor declaration for column {column!r}")


def direction_words(r: float, expect: int, what: str = "the expected direction") -> str:
    """'in the expected direction' / 'opposite to the expected direction' / 'no correlation'."""
    if not np.isfinite(r):
        return "undefined"
    if r == 0:
        return "no correlation"
    return f"in {what}" if np.sign(r) == expect else f"opposite to {what}"


# --- groups by role ----------------------------------------------------------------------------
def evidence_groups(store: Store, study_id: str) -> dict[str, list[str]]:
    """The study's drawn and declared groups: no swap, no pair, no pool."""
    return store.groups(study_id)


def pair_groups(store: Store, study_id: str) -> dict[str, list[str]]:
    return store.groups(study_id, role="pair")


def swaps(store: Store, study_id: str) -> dict[str, Swap]:
    return store.swaps(study_id)


def overlaps(groups: dict[str, list[str]]) -> pd.DataFrame:
    """Tasks shared by each pair of groups (only pairs that share some): group_a, group_b, shared."""
    names = list(groups)
    rows = [{"group_a": a, "group_b": b, "shared": len(set(groups[a]) & set(groups[b]))}
            for i, a in enumerate(names) for b in names[i + 1:]]
    frame = pd.DataFrame(rows, columns=["group_a", "group_b", "shared"])
    return frame[frame["shared"] > 0].reset_index(drop=True)


def disjoint_groups(groups: dict[str, list[str]]) -> list[str]:
    """The largest run of groups, in the spec's order, that share no task (taken greedily)."""
    chosen, used = [], set()
    for g, tasks in groups.items():
        if not used & set(tasks):
            chosen.append(g)
            used |= set(tasks)
    return chosen


def overlap_warning(groups: dict[str, list[str]]) -> str:
    """A plain sentence when groups share tasks ('' when they are disjoint)."""
    ov = overlaps(groups)
    if ov.empty:
        return ""
    pairs = ", ".join(f"{r.group_a}/{r.group_b} {r.shared}" for r in ov.itertuples())
    return (f"These groups share tasks ({pairs}): their rows are not independent, so pooled p-values would "
            "overstate the evidence. The combined test uses only groups that share no task; pooled intervals "
            "resample whole tasks.")


def _correlation(x, y, expect: int) -> tuple[stats.Correlation | None, str]:
    try:
        return stats.correlation(x, y, expect), ""
    except stats.StatsError as exc:
        return None, f"undefined: {exc}"


def _corr_columns(c: stats.Correlation | None, note: str, n: int) -> dict:
    if c is None:
        return {"n": n, "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "direction": "undefined",
                "p_expected": np.nan, "p_two_sided": np.nan, "note": note}
    return {"n": c.n, "r": c.r, "ci_low": c.ci_low, "ci_high": c.ci_high,
            "direction": direction_words(c.r, c.expect), "p_expected": c.p_expected,
            "p_two_sided": c.p_two_sided, "note": note}


# --- identical methods -----------------------------------------------------------------------------
def identical_methods(losses: pd.DataFrame) -> dict[str, str]:
    """method → the level it is counted as: methods whose scores are equal in every cell where both
    were scored are one level, named 'LA = TA' (in the order the methods first appear)."""
    wide = losses.pivot_table(index=["group_name", "task"], columns="method", values="score", aggfunc="first")
    methods = list(dict.fromkeys(losses["method"]))
    label = {m: m for m in methods}
    for i, a in enumerate(methods):
        if label[a] != a:
            continue
        same = [a]
        for b in methods[i + 1:]:
            both = wide[[a, b]].dropna() if a in wide and b in wide else pd.DataFrame()
            if len(both) and label[b] == b and np.array_equal(both[a].to_numpy(), both[b].to_numpy()):
                same.append(b)
        if len(same) > 1:
            for m in same:
                label[m] = " = ".join(same)
    return label


def _one_level_per_merge(losses: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    labels = identical_methods(losses)
    merged = sorted({v for v in labels.values() if " = " in v})
    out = losses.assign(method=losses["method"].map(labels)).drop_duplicates(["group_name", "task", "method"])
    note = (f"{'; '.join(merged)}: identical scores in every cell, counted as one level" if merged else "")
    return out, note


# --- Table 4: pairwise merges ----------------------------------------------------------------
def pair_losses(store: Store, study_id: str) -> pd.DataFrame:
    """pair, task_a, task_b, method, loss_a, loss_b, pair_loss (mean of the two)."""
    pairs = pair_groups(store, study_id)
    losses = views.loss_table(store, study_id)
    losses = losses[losses["group_name"].isin(pairs)]
    rows = []
    for (pair, method), sub in losses.groupby(["group_name", "method"], sort=False):
        a, b = pairs[pair]
        by_task = sub.set_index("task")["loss"]
        la, lb = by_task.get(a, np.nan), by_task.get(b, np.nan)
        rows.append({"pair": pair, "task_a": a, "task_b": b, "method": method, "loss_a": la, "loss_b": lb,
                     "pair_loss": np.nanmean([la, lb]) if np.isfinite([la, lb]).all() else np.nan})
    return pd.DataFrame(rows, columns=["pair", "task_a", "task_b", "method", "loss_a", "loss_b", "pair_loss"])


def _parent(spec: dict, groups: dict[str, list[str]], a: str, b: str) -> str | None:
    for g in spec.get("pairwise") or []:
        if a in groups.get(g, []) and b in groups.get(g, []):
            return g
    return None


def pair_predictors(store: Store, study_id: str, *, layer: int = -1, pooling: str = "mean",
                    distances=("l2",), layers=None) -> pd.DataFrame:
    """Per pair: the four conflict metrics and HiddenSim(i, j) in the parent group, for each
    distance (and each layer of ``layers``; column ``hiddensim`` is l2 at ``layer``)."""
    pairs = pair_groups(store, study_id)
    groups = evidence_groups(store, study_id)
    spec = views.spec_dict(store, study_id)
    pm = store.pair_metrics(study_id)
    wide = pm.pivot_table(index=["task_a", "task_b"], columns="name", values="value") if len(pm) else None
    sims: dict[tuple, pd.DataFrame] = {}
    rows = []
    for pair, (a, b) in pairs.items():
        row = {"pair": pair, "task_a": a, "task_b": b}
        for metric in CONFLICTS:
            value = np.nan
            if wide is not None and metric in wide.columns:
                for key in ((a, b), (b, a)):
                    if key in wide.index:
                        value = wide.loc[key, metric]
            row[metric] = value
        parent = _parent(spec, groups, a, b)
        for d in distances:
            for lay in (layers or [layer]):
                col = "hiddensim" if (d, lay) == ("l2", layer) else f"hiddensim_{d}_L{lay}"
                row[col] = np.nan
                if parent and views.has_states(store, study_id, groups[parent]):
                    key = (parent, d, lay)
                    if key not in sims:
                        try:
                            sims[key] = views.similarity(store, study_id, groups[parent], layer=lay,
                                                           pooling=pooling, distance=d)
                        except equations.AnalysisError:
                            sims[key] = None
                    if sims[key] is not None:
                        row[col] = sims[key].loc[a, b]
        rows.append(row)
    return pd.DataFrame(rows)


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
    columns = ["metric", "method", "expected", "n", "r", "ci_low", "ci_high", "direction", "p_expected",
               "p_two_sided", "note"]
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
            rows.append({"metric": metric, "method": method, "expected": decl.meaning,
                         **_corr_columns(c, note, int(sub[[metric, "pair_loss"]].notna().all(axis=1).sum()))})
    return pd.DataFrame(rows, columns=columns)


# --- Table 5 over groups -------------------------------------------------------------------------
def mds_vs_loss(store: Store, study_id: str, group: str, draws: uncertainty.Draws | None = None,
                **kw) -> pd.DataFrame:
    """Per task of ``group``: its MDS (the study's HiddenSim settings unless given) and its best
    loss over the study's ``best_of`` methods with the 95 % interval (see :mod:`.uncertainty`)."""
    kw = {**views.hidden_settings(store, study_id), **kw}
    tasks = store.groups(study_id, role=("group", "swap")).get(group, [])
    mds = views.mds_table(store, study_id, group, tasks=tasks, **kw)
    mds = mds.rename(columns={"note": "mds_note"}) if "note" in mds else mds.assign(mds_note="")
    losses = views.loss_table(store, study_id)
    draws = draws if draws is not None else uncertainty.draws_for(store, study_id)
    best = uncertainty.best_losses(draws, losses, group, views.best_of(store, study_id))
    out = (pd.DataFrame({"task": tasks}).merge(mds[["task", "mds", "mds_note"]], on="task", how="left")
           .merge(best, on="task", how="left"))
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
    columns = ["group", "n", "r", "ci_low", "ci_high", "direction", "p_expected", "p_two_sided", "reliability",
               "detectable_r", "rows_needed", "note"]
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
        rows.append({"group": group, **_corr_columns(c, note or rel.note, n), "reliability": rel.reliability,
                     "detectable_r": stats.detectable_r(tasks_scored), "rows_needed": rel.rows_for(0.8)})
        rows[-1]["direction"] = direction_words(rows[-1]["r"], expect, "the paper's direction")
    out = pd.DataFrame(rows, columns=columns)
    tested = out.dropna(subset=["r"])
    disjoint = disjoint_groups({g: groups[g] for g in tested["group"] if tested.set_index("group").loc[g, "n"] > 3})
    out.attrs["combined_groups"] = disjoint if len(disjoint) > 1 else []
    if len(disjoint) > 1:
        sub = out.set_index("group").loc[disjoint]
        try:
            comb = stats.fisher_combine(sub["r"], sub["n"], expect)
            out.loc[len(out)] = {"group": "combined", "n": comb.n, "r": comb.r, "ci_low": comb.ci_low,
                                 "ci_high": comb.ci_high, "direction": direction_words(comb.r, expect,
                                                                                        "the paper's direction"),
                                 "p_expected": comb.p_expected, "p_two_sided": np.nan, "reliability": np.nan,
                                 "detectable_r": np.nan, "rows_needed": np.nan,
                                 "note": f"Fisher's z over {comb.groups} disjoint groups ({', '.join(disjoint)})"}
        except stats.StatsError as exc:
            out.loc[len(out)] = {"group": "combined", "note": f"undefined: {exc}"}
    if len(frames) > 1:
        allrows = pd.concat([f.assign(group=g) for g, f in frames.items()], ignore_index=True)
        ok = allrows.dropna(subset=["mds", "best_loss"])
        c, note = _correlation(ok["mds"], ok["best_loss"], expect)
        lo, hi = stats.cluster_bootstrap_r(ok["mds"], ok["best_loss"], ok["task"])
        row = {"group": "pooled", **_corr_columns(c, note, len(ok)), "ci_low": lo, "ci_high": hi,
               "reliability": np.nan, "detectable_r": np.nan, "rows_needed": np.nan}
        shared = not overlaps(groups).empty
        row["note"] = note or ("rows of all groups together; interval from resampling whole tasks; MDS is "
                               "scaled within each group" + ("; p omitted: groups share tasks" if shared else ""))
        if shared:
            row["p_expected"] = row["p_two_sided"] = np.nan
        row["direction"] = direction_words(row["r"], expect, "the paper's direction")
        out.loc[len(out)] = row
    out.attrs.update(overlap=overlap_warning(groups), paper_r=_with_paper_effect(),
                     combined_groups=out.attrs.get("combined_groups", []))
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
    return {"paper_r": paper_r, "mean_reliability": float(rel.mean()) if len(rel) else np.nan,
            "attenuated_r": attenuated, "n": n, "detectable_r": stats.detectable_r(n) if n > 3 else np.nan,
            "groups_needed": stats.groups_needed(attenuated, n) if n > 3 else np.nan}


# --- Table 3 ---------------------------------------------------------------------------------------------
def anova(store: Store, study_id: str, group: str | None = None) -> pd.DataFrame:
    """Table 3: one-way ANOVA of merging loss by method and by task over the evidence groups' merge
    rows (or one group's): swaps and pairs left out, identical methods one level."""
    losses = views.loss_table(store, study_id)
    keep = [group] if group else list(evidence_groups(store, study_id))
    losses = losses[losses["group_name"].isin(keep)].dropna(subset=["loss"])
    losses, same = _one_level_per_merge(losses)
    shared = "" if group else ("a task in several groups contributes several rows (not independent)"
                               if not overlaps(evidence_groups(store, study_id)).empty else "")
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


# --- which signal predicts collapse --------------------------------------------------------------------
def _stored_layers(store: Store, study_id: str, tasks: list[str]) -> list[int]:
    """Every stored layer but the embeddings (layer 0)."""
    info = views.states_info(store, study_id, tasks[0])
    return [lay for lay in info["layers"] if lay != 0] or info["layers"][-1:]


def _merge_distortion(store: Store, study_id: str, group: str, tasks: list[str], layer: int, pooling: str,
                      methods: list[str] | None) -> dict[str, float]:
    """Per task: the mean distance between the merged model's and the task's expert's hidden states on
    the task's own probes, averaged over the merges with stored states (Theorem 1's δ, per task)."""
    root = store.states_root
    merged_methods = [m for m in states_io.merged_methods(root, study_id, group) if not methods or m in methods]
    if not merged_methods:
        return {}
    out: dict[str, list[float]] = {t: [] for t in tasks}
    experts = {t: states_io.read_states(root, study_id, states_io.expert_name(t)) for t in tasks}
    for method in merged_methods:
        arrays, owners, stored = states_io.read_states(root, study_id, states_io.merged_name(group, method))
        merged = arrays[pooling][views.layer_position(stored, layer)]
        ids = views.probe_ids(owners)
        for t in tasks:
            e_arrays, e_owners, e_stored = experts[t]
            e = e_arrays[pooling][views.layer_position(e_stored, layer)]
            e_ids = {pid: i for i, pid in enumerate(views.probe_ids(e_owners))}
            pairs = [(i, e_ids[pid]) for i, pid in enumerate(ids) if pid[0] == t and pid in e_ids]
            if pairs:
                mi, ei = zip(*pairs)
                out[t].append(float(np.linalg.norm(merged[list(mi)] - e[list(ei)], axis=-1).mean()))
    return {t: float(np.mean(v)) for t, v in out.items() if v}


def task_level_rows(store: Store, study_id: str) -> tuple[pd.DataFrame, list[str]]:
    """(group, task, best_loss, predictors…) over every evidence group, and the predictor columns:
    MDS at every stored layer, distance and pooling ('MDS l2 L30 mean'), the task's mean conflict
    metrics with its group's other tasks, and the merge distortion."""
    groups = evidence_groups(store, study_id)
    losses = views.loss_table(store, study_id)
    methods = views.best_of(store, study_id)
    settings = views.hidden_settings(store, study_id)
    pm = store.pair_metrics(study_id)
    frames, columns = [], []
    for group, tasks in groups.items():
        f = views.best_loss(losses, group, methods).set_index("task").reindex(tasks).reset_index()
        f.insert(0, "group", group)
        if views.has_states(store, study_id, tasks):
            for lay in _stored_layers(store, study_id, tasks):
                for pooling in POOLINGS:
                    for d in DISTANCES:
                        col = f"MDS {d} L{lay} {pooling}"
                        m = views.mds_table(store, study_id, group, layer=lay, distance=d,
                                              pooling=pooling).set_index("task")["mds"]
                        f[col] = f["task"].map(m)
                        columns.append(col)
            dist = _merge_distortion(store, study_id, group, tasks, settings.get("layer", -1),
                                     settings.get("pooling", "mean"), methods)
            if dist:
                f["merge distortion"] = f["task"].map(dist)
                columns.append("merge distortion")
        else:
            m = views.mds_table(store, study_id, group).set_index("task")["mds"]
            if len(m):
                f["MDS (published)"] = f["task"].map(m)
                columns.append("MDS (published)")
        for metric in CONFLICTS:
            sub = pm[pm["name"] == metric] if len(pm) else pm
            vals = {}
            for t in tasks:
                s = sub[((sub.task_a == t) & sub.task_b.isin(tasks)) | ((sub.task_b == t) & sub.task_a.isin(tasks))]
                vals[t] = s["value"].mean() if len(s) else np.nan
            f[f"mean {metric}"] = f["task"].map(vals)
            columns.append(f"mean {metric}")
        frames.append(f)
    if not frames:
        return pd.DataFrame(), []
    frame = pd.concat(frames, ignore_index=True)
    columns = [c for c in dict.fromkeys(columns) if frame[c].notna().any()]
    return frame, columns


def pair_level_rows(store: Store, study_id: str) -> tuple[pd.DataFrame, list[str]]:
    """(pair, best pair loss over methods, predictors…) and the predictor columns."""
    losses = pair_losses(store, study_id)
    if losses.empty:
        return pd.DataFrame(), []
    methods = views.best_of(store, study_id)
    if methods:
        losses = losses[losses["method"].isin(methods)]
    best = losses.groupby(["pair", "task_a", "task_b"], sort=False)["pair_loss"].max().rename("best_loss")
    layers = None
    groups = evidence_groups(store, study_id)
    spec = views.spec_dict(store, study_id)
    parents = [g for g in spec.get("pairwise") or [] if g in groups]
    if parents and views.has_states(store, study_id, groups[parents[0]]):
        layers = _stored_layers(store, study_id, groups[parents[0]])
    preds = pair_predictors(store, study_id, distances=DISTANCES, layers=layers,
                            pooling=views.hidden_settings(store, study_id).get("pooling", "mean"))
    preds = preds.rename(columns=lambda c: c.replace("hiddensim_", "HiddenSim ").replace("_L", " L"))
    frame = best.reset_index().merge(preds, on=["pair", "task_a", "task_b"])
    columns = [c for c in frame.columns if (c.startswith("HiddenSim ") or c in CONFLICTS) and frame[c].notna().any()]
    frame["group"] = parents[0] if parents else ""
    return frame, columns


def _pair_bootstrap_r(x, y, a, b, n_boot: int, seed: int) -> tuple[float, float]:
    """Interval of r over pairs when tasks are resampled: a pair enters as often as both its tasks do
    (pairs that share a task are not independent)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    tasks = sorted(set(a) | set(b))
    ia = np.array([tasks.index(t) for t in a])[ok]
    ib = np.array([tasks.index(t) for t in b])[ok]
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(tasks), len(tasks)), minlength=len(tasks))
                       for _ in range(n_boot)])
    rs = stats.weighted_r(x[ok], y[ok], (counts[:, ia] * counts[:, ib]).astype(float))
    rs = rs[np.isfinite(rs)]
    if len(rs) < n_boot / 2:
        return np.nan, np.nan
    return float(np.percentile(rs, 2.5)), float(np.percentile(rs, 97.5))


def compare(frame: pd.DataFrame, columns: list[str], level: str, *, n_boot: int = 1000, n_perm: int = 1000,
            seed: int = 0, groups: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per predictor on the same rows: Pearson r with a 95 % interval from resampling whole
    tasks, its direction against the predictor's declaration, one-sided and two-sided p; a
    permutation null (best loss shuffled within groups: the 95th percentile of |r| for this
    predictor, and of the largest |r| over all predictors — the family-wise bar); and, across the
    disjoint groups, in how many r points the expected way and Fisher's z of them combined."""
    ok_rows = frame.dropna(subset=["best_loss"])
    y = ok_rows["best_loss"].to_numpy(float)
    strata = ok_rows["group"].to_numpy() if "group" in ok_rows else np.zeros(len(ok_rows))
    xs = np.vstack([ok_rows[c].to_numpy(float) for c in columns]) if columns else np.empty((0, len(ok_rows)))
    null = stats.permutation_null(xs, y, strata, n_perm, seed) if columns else np.empty((n_perm, 0))
    finite = np.isfinite(null).any(axis=1)
    familywise = float(np.percentile(np.nanmax(null[finite], axis=1), 95)) if finite.any() else np.nan
    present = set(ok_rows["group"]) if "group" in ok_rows else set()
    disjoint = disjoint_groups({g: t for g, t in groups.items() if g in present}) if groups else []
    out = []
    for j, col in enumerate(columns):
        decl = predictor_of(col)
        c, note = _correlation(ok_rows[col], y, decl.expect)
        row = {"level": level, "predictor": col, "expected": decl.meaning,
               **_corr_columns(c, note, int(np.isfinite(xs[j]).sum()))}
        row["ci_low"] = row["ci_high"] = row["spearman_rho"] = row["spearman_p"] = np.nan
        if c is not None:
            ok = np.isfinite(xs[j])
            sp = sps.spearmanr(xs[j][ok], y[ok])
            row["spearman_rho"], row["spearman_p"] = float(sp.statistic), float(sp.pvalue)
            if level == "pair":
                row["ci_low"], row["ci_high"] = _pair_bootstrap_r(ok_rows[col], y, ok_rows["task_a"],
                                                                  ok_rows["task_b"], n_boot, seed)
            else:
                row["ci_low"], row["ci_high"] = stats.cluster_bootstrap_r(ok_rows[col], y, ok_rows["task"],
                                                                          n_boot, seed)
        q95 = float(np.nanpercentile(null[:, j], 95)) if np.isfinite(null[:, j]).any() else np.nan
        r = row["r"]
        row.update(null_q95=q95, familywise_q95=familywise,
                   beats_null=bool(np.isfinite(r) and abs(r) > q95),
                   beats_familywise=bool(np.isfinite(r) and abs(r) > familywise))
        per_group = []
        for g in disjoint:
            sub = ok_rows[ok_rows["group"] == g]
            cg, _ = _correlation(sub[col], sub["best_loss"], decl.expect)
            if cg is not None:
                per_group.append(cg)
        row["groups_expected"] = sum(cg.as_expected for cg in per_group)
        row["groups_tested"] = len(per_group)
        if len(per_group) > 1:
            comb = stats.fisher_combine([cg.r for cg in per_group], [cg.n for cg in per_group], decl.expect)
            row.update(combined_r=comb.r, combined_p=comb.p_expected)
        else:
            row.update(combined_r=np.nan, combined_p=np.nan)
        out.append(row)
    return pd.DataFrame(out)


def predictor_comparison(store: Store, study_id: str, *, n_boot: int = 1000, n_perm: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """Every candidate predictor of merging loss on the same rows, per task in its evidence group and
    per pair (see :func:`compare`)."""
    parts = []
    tasks, cols = task_level_rows(store, study_id)
    if len(tasks):
        parts.append(compare(tasks, cols, "task in group", n_boot=n_boot, n_perm=n_perm, seed=seed,
                             groups=evidence_groups(store, study_id)))
    pairs, pcols = pair_level_rows(store, study_id)
    if len(pairs):
        parts.append(compare(pairs, pcols, "pair", n_boot=n_boot, n_perm=n_perm, seed=seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def best_predictor(comparison: pd.DataFrame) -> pd.Series | None:
    """The predictor with the largest |r| among those above the family-wise permutation bar of their
    level; None when none is."""
    if comparison.empty:
        return None
    ok = comparison[comparison["beats_familywise"]]
    if ok.empty:
        return None
    return ok.loc[ok["r"].abs().idxmax()]


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
        per_task[name] = {t: sub[((sub.task_a == t) & sub.task_b.isin(tasks))
                                 | ((sub.task_b == t) & sub.task_a.isin(tasks))]["value"].mean() for t in tasks}
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
    kw = views.hidden_settings(store, study_id)
    out = {"experts": expert_evidence(store, study_id, draws),
           "losses": uncertainty.loss_intervals(draws, views.loss_table(store, study_id))}
    for group, tasks in evidence_groups(store, study_id).items():
        if views.has_states(store, study_id, tasks):
            sim = views.similarity(store, study_id, tasks, **kw)
            frame = sim.reset_index(names="task")
            if sim.attrs.get("undefined"):
                frame["note"] = sim.attrs["undefined"]
            out[f"hiddensim:{group}"] = frame
        out[f"mds_vs_best_loss:{group}"] = mds_vs_loss(store, study_id, group, draws)
    t5 = table5(store, study_id, draws)
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
def loss_intervals(store: Store, study_id: str) -> pd.DataFrame:
    """Every merging loss (:func:`~.views.loss_table`) with its 95 % interval and SE (paired bootstrap
    over eval rows) or a ``ci_note`` saying why it has none."""
    return uncertainty.loss_intervals(uncertainty.draws_for(store, study_id), views.loss_table(store, study_id))


def best_loss_intervals(store: Store, study_id: str, group: str) -> pd.DataFrame:
    """Per task of ``group``: its best loss over the ``best_of`` methods with its 95 % interval."""
    return uncertainty.best_losses(uncertainty.draws_for(store, study_id), views.loss_table(store, study_id), group,
                                   views.best_of(store, study_id))


# --- experts and swaps ------------------------------------------------------------------------------
def expert_evidence(store: Store, study_id: str, draws: uncertainty.Draws | None = None) -> pd.DataFrame:
    """Per task: the expert's score, the base's, the difference with its 95 % interval (same rows),
    and how far one eval row moves Eq. 1 (10⁴ / (rows · expert score), in points)."""
    draws = draws if draws is not None else uncertainty.draws_for(store, study_id)
    res = store.results(study_id)
    experts = res[res["method"] == "expert"].set_index("task")
    base = res[res["method"] == "base"].set_index("task")["score"]
    rows = []
    for task, r in experts.iterrows():
        d = draws.difference(task, uncertainty.EXPERT, uncertainty.BASE)
        lo, hi, _ = uncertainty.interval(d)
        n = draws.tasks[task].n_rows if task in draws.tasks else np.nan
        rows.append({"task": task, "metric": r["metric"], "expert_score": r["score"], "base_score": base.get(task),
                     "gain": r["score"] - base.get(task, np.nan), "gain_ci_low": lo, "gain_ci_high": hi,
                     "eval_rows": n,
                     "points_per_row": 1e4 / (n * r["score"]) if np.isfinite(n) and r["score"] > 0 else np.nan})
    return pd.DataFrame(rows, columns=["task", "metric", "expert_score", "base_score", "gain", "gain_ci_low",
                                       "gain_ci_high", "eval_rows", "points_per_row"])


def swap_effects(store: Store, study_id: str, draws: uncertainty.Draws | None = None) -> pd.DataFrame:
    """Per swap: the parent's and the swap's worst best-loss and worst MDS, the change in worst loss
    with its 95 % interval (tasks the two share resampled once for both) and whether it is within
    noise, and how many of the swap's tasks have merged scores yet."""
    sw = swaps(store, study_id)
    if not sw:
        return pd.DataFrame(columns=["swap", "parent", "removed", "added", "worst_before", "worst_after",
                                     "worst_task_before", "worst_task_after", "worst_mds_before", "worst_mds_after",
                                     "worst_before_ci_low", "worst_before_ci_high", "worst_after_ci_low",
                                     "worst_after_ci_high", "change", "change_ci_low", "change_ci_high",
                                     "within_noise", "merged_tasks", "tasks", "note"])
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
        row.update(change=row["worst_after"] - row["worst_before"], change_ci_low=lo, change_ci_high=hi,
                   within_noise=uncertainty.within_noise(lo, hi), merged_tasks=int(merged),
                   tasks=len(groups.get(name, [])), note=why_b or why_a)
        rows.append(row)
    return pd.DataFrame(rows)


def swap_frame(effect: pd.Series) -> pd.DataFrame:
    """One swap (a row of :func:`swap_effects`) as the two bars of its before/after chart: the parent
    and the swap, each with its worst best-loss, that loss's 95 % interval, and its worst MDS."""
    rows = []
    for side, name in (("before", effect["parent"]), ("after", f"{effect['removed']} → {effect['added']}")):
        rows.append({"group": name, "worst_loss": effect[f"worst_{side}"], "worst_mds": effect[f"worst_mds_{side}"],
                     "ci_low": effect[f"worst_{side}_ci_low"], "ci_high": effect[f"worst_{side}_ci_high"]})
    return pd.DataFrame(rows)


# --- the swap advisor ----------------------------------------------------------------------------------
def swap_advice(store: Store, study_id: str, group: str, collapse: float = -30.0) -> pd.DataFrame:
    """Replacements for ``group``'s highest-MDS task, ranked by the new group's worst MDS (hidden
    states only), each beside what the study already measured of the candidate: its best loss in
    every other group it was merged in, whether it collapsed there, and its mean pair loss with the
    group's tasks (where pairs were merged). Candidates: the study's ``pool``, else every task of its
    other groups. ``change``: new worst MDS − the group's now (< 0 is
    better by this measure). ``attrs``: removed, current_worst_mds, any_improves."""
    groups = store.groups(study_id, role=("group", "swap"))
    tasks = groups[group]
    pool = [t for t in (store.pool(study_id) or dict.fromkeys(t for g in groups.values() for t in g))
            if t not in tasks]  # the spec's pool, else every other task of the study
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
            sub = best_pairs[((best_pairs.task_a == t) & best_pairs.task_b.isin(tasks))
                             | ((best_pairs.task_b == t) & best_pairs.task_a.isin(tasks))]
            return float(sub["pair_loss"].mean()) if len(sub) else np.nan

        out["pair_loss_with_group"] = out["candidate"].map(with_group)
    out.attrs.update(cands.attrs, any_improves=bool(out["improves"].any()), group=group)
    return out


def swap_record(store: Store, study_id: str) -> dict:
    """How the study's verified swaps came out: how many raised the worst loss beyond noise, how
    many were within noise, how many lowered it (and how many have no interval yet)."""
    eff = swap_effects(store, study_id)
    done = eff[eff["merged_tasks"] == eff["tasks"]] if len(eff) else eff
    helped = int(((done["change_ci_low"] > 0)).sum()) if len(done) else 0
    hurt = int(((done["change_ci_high"] < 0)).sum()) if len(done) else 0
    noise = int((done["within_noise"] == True).sum()) if len(done) else 0  # noqa: E712 (None = no interval)
    return {"verified": len(done), "helped": helped, "within_noise": noise, "hurt": hurt,
            "no_interval": len(done) - helped - hurt - noise}


# --- admission of candidate tasks (data/llm/PREREGISTRATION.md) -----------------------------------------
def admission(store: Store, study_id: str, *, min_gain: float = 10.0, min_gain_low: float = 5.0,
              max_points_per_row: float = 2.0) -> pd.DataFrame:
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
            why.append(f"gain's 95 % low {r.gain_ci_low:.1f} < {min_gain_low:g}" if np.isfinite(r.gain_ci_low)
                       else "no interval for the gain")
        if not (np.isfinite(r.points_per_row) and r.points_per_row <= max_points_per_row):
            why.append(f"one row moves Eq. 1 by {r.points_per_row:.2f} > {max_points_per_row:g} points")
        reasons.append("; ".join(why))
    return ev.assign(admitted=[not w for w in reasons], why_not=reasons)
