"""The paper's protocol as read-side views: Table 4 on pairwise merges, Table 5 over several groups
(and pooled), Table 3's ANOVA, and a comparison of every candidate predictor of merging loss.

Pure functions of store rows and stored hidden states, like :mod:`mergelab.results`; every test
that cannot run (too few rows, a constant column) gives NaN and a note, never an exception.

Definitions (pinned here, used on every page and in every report):

* A pair's merging loss, for one method, is the mean of Eq. 1 over its two tasks, each scored by
  the pair's merge. Its *best* loss is the highest over methods.
* HiddenSim(i, j) of a pair is Eq. 2 over the 8-task group the pair was expanded from (the group
  named in ``pairwise:``): one pair alone has a single distance, and Eq. 2 is undefined.
* A task's best loss in a group is its highest loss over methods (Table 5's "best merging loss").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..merging.conflicts import METRICS as CONFLICTS
from ..storage.store import Store
from . import equations as analysis
from . import stats
from . import views as results

DISTANCES = ("l2", "cosine", "cka")


def main_groups(store: Store, study_id: str) -> dict[str, list[str]]:
    """The study's task groups: no pool, no pairs."""
    return store.groups(study_id)


def pair_groups(store: Store, study_id: str) -> dict[str, list[str]]:
    return store.groups(study_id, role="pair")


def _pearson(x, y) -> tuple[float, float, int, str]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    try:
        r, p = stats.pearson(x[ok], y[ok])
        return r, p, int(ok.sum()), ""
    except stats.StatsError as exc:
        return np.nan, np.nan, int(ok.sum()), f"undefined: {exc}"


# --- Table 4: pairwise merges ----------------------------------------------------------------
def pair_losses(store: Store, study_id: str) -> pd.DataFrame:
    """pair, task_a, task_b, method, loss_a, loss_b, pair_loss (mean of the two)."""
    pairs = pair_groups(store, study_id)
    losses = results.loss_table(store, study_id)
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
    groups = main_groups(store, study_id)
    spec = results.spec_dict(store, study_id)
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
                if parent and results.has_states(store, study_id, groups[parent]):
                    key = (parent, d, lay)
                    if key not in sims:
                        try:
                            sims[key] = results.similarity(store, study_id, groups[parent], layer=lay,
                                                           pooling=pooling, distance=d)
                        except analysis.AnalysisError:
                            sims[key] = None
                    if sims[key] is not None:
                        row[col] = sims[key].loc[a, b]
        rows.append(row)
    return pd.DataFrame(rows)


def table4(store: Store, study_id: str, **kw) -> pd.DataFrame:
    """Pearson p of each conflict metric and of HiddenSim(i, j) against the pair's merging loss,
    per method, over the study's pairwise merges (the paper's Table 4). Empty without pairs."""
    losses = pair_losses(store, study_id)
    if losses.empty:
        return pd.DataFrame(columns=["metric", "method", "r", "p_value", "n", "note"])
    preds = pair_predictors(store, study_id, **kw)
    frame = losses.merge(preds, on=["pair", "task_a", "task_b"])
    rows = []
    for metric in [*CONFLICTS, "hiddensim"]:
        for method, sub in frame.groupby("method", sort=False):
            r, p, n, note = _pearson(sub[metric], sub["pair_loss"])
            rows.append({"metric": metric, "method": method, "r": r, "p_value": p, "n": n, "note": note})
    return pd.DataFrame(rows)


# --- Table 5 over groups, Table 3 ----------------------------------------------------------------
def table5_groups(store: Store, study_id: str, **kw) -> pd.DataFrame:
    """Pearson(MDS, best loss) per main group and over all groups' (group, task) rows pooled."""
    frames = []
    for group in main_groups(store, study_id):
        f = results.mds_vs_loss(store, study_id, group, **kw)
        f.insert(0, "group", group)
        frames.append(f)
    rows = []
    for f in frames:
        r, p, n, note = _pearson(f["mds"], f["best_loss"])
        rows.append({"group": f["group"].iloc[0] if len(f) else "", "n": n, "r": r, "p_value": p, "note": note})
    if len(frames) > 1:
        allrows = pd.concat(frames)
        r, p, n, note = _pearson(allrows["mds"], allrows["best_loss"])
        rows.append({"group": "pooled", "n": n, "r": r, "p_value": p, "note": note})
    return pd.DataFrame(rows, columns=["group", "n", "r", "p_value", "note"])


def anova_groups(store: Store, study_id: str) -> pd.DataFrame:
    """Table 3: one-way ANOVA of merging loss by method and by task over every main group's
    merge rows (pairs left out)."""
    losses = results.loss_table(store, study_id)
    losses = losses[losses["group_name"].isin(main_groups(store, study_id))].dropna(subset=["loss"])
    rows = []
    for factor in ("method", "task"):
        try:
            f, p = stats.anova_oneway(losses, factor, "loss")
            rows.append({"factor": factor, "F": f, "p_value": p, "n": len(losses), "note": ""})
        except stats.StatsError as exc:
            rows.append({"factor": factor, "F": np.nan, "p_value": np.nan, "n": len(losses),
                         "note": f"undefined: {exc}"})
    return pd.DataFrame(rows)


# --- which signal predicts collapse ------------------------------------------------------------
def _analysis_layers(store: Store, study_id: str, tasks: list[str]) -> list[int]:
    """Two or three layers to compare: the last, the middle one stored, and (if stored) a quarter."""
    info = results.states_info(store, study_id, tasks[0])
    stored, n = info["layers"], info["n_layers"]
    want = {n - 1, n // 2, n // 4}
    picked = sorted({min(stored, key=lambda s, w=w: abs(s - w)) for w in want} - {0})
    return picked or stored[-1:]


def task_level_rows(store: Store, study_id: str) -> tuple[pd.DataFrame, list[str]]:
    """(group, task, best_loss, predictors…) over every main group, and the predictor columns."""
    groups = main_groups(store, study_id)
    losses = results.loss_table(store, study_id)
    pm = store.pair_metrics(study_id)
    frames, columns = [], []
    for group, tasks in groups.items():
        f = results.best_loss(losses, group).set_index("task").reindex(tasks).reset_index()
        f.insert(0, "group", group)
        if results.has_states(store, study_id, tasks):
            for lay in _analysis_layers(store, study_id, tasks):
                for d in DISTANCES:
                    col = f"MDS {d} L{lay}"
                    m = results.mds_table(store, study_id, group, layer=lay, distance=d).set_index("task")["mds"]
                    f[col] = f["task"].map(m)
                    columns.append(col)
        else:
            m = results.mds_table(store, study_id, group).set_index("task")["mds"]
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
    return pd.concat(frames, ignore_index=True), list(dict.fromkeys(columns))


def pair_level_rows(store: Store, study_id: str) -> tuple[pd.DataFrame, list[str]]:
    """(pair, best pair loss over methods, predictors…) and the predictor columns."""
    losses = pair_losses(store, study_id)
    if losses.empty:
        return pd.DataFrame(), []
    best = losses.groupby(["pair", "task_a", "task_b"], sort=False)["pair_loss"].max().rename("best_loss")
    layers = None
    groups = main_groups(store, study_id)
    spec = results.spec_dict(store, study_id)
    parents = [g for g in spec.get("pairwise") or [] if g in groups]
    if parents and results.has_states(store, study_id, groups[parents[0]]):
        layers = _analysis_layers(store, study_id, groups[parents[0]])
    preds = pair_predictors(store, study_id, distances=DISTANCES, layers=layers)
    preds = preds.rename(columns=lambda c: c.replace("hiddensim_", "HiddenSim ").replace("_L", " L"))
    frame = best.reset_index().merge(preds, on=["pair", "task_a", "task_b"])
    columns = [c for c in frame.columns if c.startswith("HiddenSim") or c in CONFLICTS]
    return frame, columns


def _bootstrap_r(x: np.ndarray, y: np.ndarray, n_boot: int, rng) -> tuple[float, float]:
    n = len(x)
    idx = rng.integers(0, n, (n_boot, n))
    xs, ys = x[idx], y[idx]
    xs = xs - xs.mean(1, keepdims=True)
    ys = ys - ys.mean(1, keepdims=True)
    den = np.sqrt((xs**2).sum(1) * (ys**2).sum(1))
    r = np.where(den > 0, (xs * ys).sum(1) / np.where(den > 0, den, 1), np.nan)
    r = r[np.isfinite(r)]
    return (float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))) if len(r) >= 10 else (np.nan, np.nan)


def compare(frame: pd.DataFrame, columns: list[str], level: str, *, n_boot: int = 1000, seed: int = 0,
            group_col: str | None = None) -> pd.DataFrame:
    """One row per predictor: Pearson r and p, Spearman ρ and p, a bootstrap 95 % CI of r over
    rows, and — with ``group_col`` and at least 3 groups — leave-one-group-out: the range of r and
    the largest p when each group is left out in turn."""
    rng = np.random.default_rng(seed)
    out = []
    for col in columns:
        x, y = frame[col].to_numpy(float), frame["best_loss"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        r, p, n, note = _pearson(x, y)
        row = {"level": level, "predictor": col, "n": n, "pearson_r": r, "pearson_p": p,
               "spearman_rho": np.nan, "spearman_p": np.nan, "ci_low": np.nan, "ci_high": np.nan,
               "logo_r_min": np.nan, "logo_r_max": np.nan, "logo_p_max": np.nan, "note": note}
        if not note:
            sp = sps.spearmanr(x[ok], y[ok])
            row.update(spearman_rho=float(sp.statistic), spearman_p=float(sp.pvalue))
            row["ci_low"], row["ci_high"] = _bootstrap_r(x[ok], y[ok], n_boot, rng)
            if group_col:
                groups = frame[group_col].unique()
                if len(groups) >= 3:
                    folds = [_pearson(x[(frame[group_col] != g).to_numpy()], y[(frame[group_col] != g).to_numpy()])
                             for g in groups]
                    rs = [f[0] for f in folds if np.isfinite(f[0])]
                    if rs:
                        row.update(logo_r_min=min(rs), logo_r_max=max(rs),
                                   logo_p_max=max(f[1] for f in folds if np.isfinite(f[1])))
                else:
                    row["note"] = f"leave-one-group-out needs ≥ 3 groups, the study has {len(groups)}"
        out.append(row)
    return pd.DataFrame(out)


def predictor_comparison(store: Store, study_id: str, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every candidate predictor of merging loss on the same rows: per task in its group (best
    loss over methods vs MDS under each distance and layer, and the task's mean conflict metrics
    in the group) and per pair (best pair loss vs HiddenSim(i, j) and the four conflict metrics)."""
    parts = []
    tasks, cols = task_level_rows(store, study_id)
    if len(tasks):
        parts.append(compare(tasks, cols, "task in group", n_boot=n_boot, seed=seed, group_col="group"))
    pairs, pcols = pair_level_rows(store, study_id)
    if len(pairs):
        parts.append(compare(pairs, pcols, "pair", n_boot=n_boot, seed=seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summary(store: Store, study_id: str, *, n_boot: int = 1000) -> dict[str, pd.DataFrame]:
    """`mergelab report`: :func:`mergelab.results.summary` plus the protocol's tables where the
    study has what they need (pairs for Table 4, groups for Table 5 and ANOVA)."""
    out = results.summary(store, study_id)
    kw = results.hidden_settings(store, study_id)
    if pair_groups(store, study_id):
        out["table4_pairwise"] = table4(store, study_id, **{k: v for k, v in kw.items() if k != "distance"})
    if len(main_groups(store, study_id)) > 1:
        out["table5_over_groups"] = table5_groups(store, study_id, **kw)
        out["table3_anova_over_groups"] = anova_groups(store, study_id)
    comparison = predictor_comparison(store, study_id, n_boot=n_boot)
    if len(comparison):
        out["predictors"] = comparison
    return out
