"""Which signal predicts collapse: every candidate predictor declares the sign that would mean
"predicts collapse"; each is tested on the same rows (per task in its evidence group, per pair) with an
interval from resampling whole tasks, a permutation null and a family-wise bar, and read again in
each group that shares no task with the others."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..choices import DISTANCES
from ..merging.conflicts import METRICS as CONFLICTS
from ..storage import states as states_io
from ..storage.store import Store
from . import equations, stats, views
from .grouping import evidence_groups, pair_groups, testable_disjoint_groups

#: the poolings compared (first-token states of a causal LM see only the prompt's first word)
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
    "merge distortion": Predictor(
        "merge distortion", -1, "the merge moves the task's hidden states further from its expert's → worse loss"
    ),
    "magnitude_change_ratio": Predictor("magnitude_change_ratio", -1, "more parameter conflict → worse loss"),
    "sign_change_ratio": Predictor("sign_change_ratio", -1, "more parameter conflict → worse loss"),
    "conflicting_magnitude_change_ratio": Predictor(
        "conflicting_magnitude_change_ratio", -1, "more parameter conflict → worse loss"
    ),
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


def _correlation(x, y, expect: int) -> tuple[stats.Correlation | None, str]:
    try:
        return stats.correlation(x, y, expect), ""
    except stats.StatsError as exc:
        return None, f"undefined: {exc}"


def _corr_columns(c: stats.Correlation | None, note: str, n: int) -> dict:
    if c is None:
        return {
            "n": n,
            "r": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "direction": "undefined",
            "p_expected": np.nan,
            "p_two_sided": np.nan,
            "note": note,
        }
    return {
        "n": c.n,
        "r": c.r,
        "ci_low": c.ci_low,
        "ci_high": c.ci_high,
        "direction": direction_words(c.r, c.expect),
        "p_expected": c.p_expected,
        "p_two_sided": c.p_two_sided,
        "note": note,
    }


# --- the pairs' rows ----------------------------------------------------------------------------------
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
        rows.append(
            {
                "pair": pair,
                "task_a": a,
                "task_b": b,
                "method": method,
                "loss_a": la,
                "loss_b": lb,
                "pair_loss": np.nanmean([la, lb]) if np.isfinite([la, lb]).all() else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["pair", "task_a", "task_b", "method", "loss_a", "loss_b", "pair_loss"])


def _parent(spec: dict, groups: dict[str, list[str]], a: str, b: str) -> str | None:
    for g in spec.get("pairwise") or []:
        if a in groups.get(g, []) and b in groups.get(g, []):
            return g
    return None


def pair_predictors(
    store: Store, study_id: str, *, layer: int = -1, pooling: str = "mean", distances=("l2",), layers=None
) -> pd.DataFrame:
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
            for lay in layers or [layer]:
                col = "hiddensim" if (d, lay) == ("l2", layer) else f"hiddensim_{d}_L{lay}"
                row[col] = np.nan
                if parent and views.has_states(store, study_id, groups[parent]):
                    key = (parent, d, lay)
                    if key not in sims:
                        try:
                            sims[key] = views.similarity(
                                store, study_id, groups[parent], layer=lay, pooling=pooling, distance=d
                            )
                        except equations.AnalysisError:
                            sims[key] = None
                    if sims[key] is not None:
                        row[col] = sims[key].loc[a, b]
        rows.append(row)
    return pd.DataFrame(rows)


# --- which signal predicts collapse --------------------------------------------------------------------
def _stored_layers(store: Store, study_id: str, tasks: list[str]) -> list[int]:
    """Every stored layer but the embeddings (layer 0)."""
    info = views.states_info(store, study_id, tasks[0])
    return [lay for lay in info["layers"] if lay != 0] or info["layers"][-1:]


def _merge_distortion(
    store: Store, study_id: str, group: str, tasks: list[str], layer: int, pooling: str, methods: list[str] | None
) -> dict[str, float]:
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
                        m = views.mds_table(store, study_id, group, layer=lay, distance=d, pooling=pooling).set_index(
                            "task"
                        )["mds"]
                        f[col] = f["task"].map(m)
                        columns.append(col)
            dist = _merge_distortion(
                store, study_id, group, tasks, settings.get("layer", -1), settings.get("pooling", "mean"), methods
            )
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
    preds = pair_predictors(
        store,
        study_id,
        distances=DISTANCES,
        layers=layers,
        pooling=views.hidden_settings(store, study_id).get("pooling", "mean"),
    )
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
    counts = np.stack(
        [np.bincount(rng.integers(0, len(tasks), len(tasks)), minlength=len(tasks)) for _ in range(n_boot)]
    )
    rs = stats.weighted_r(x[ok], y[ok], (counts[:, ia] * counts[:, ib]).astype(float))
    rs = rs[np.isfinite(rs)]
    if len(rs) < n_boot / 2:
        return np.nan, np.nan
    return float(np.percentile(rs, 2.5)), float(np.percentile(rs, 97.5))


def combine_over_groups(rows: pd.DataFrame, column: str, expect: int, groups: dict[str, list[str]]) -> dict:
    """Pearson r of ``column`` with the best loss in each group of :func:`testable_disjoint_groups`,
    and Fisher's z of them combined, one-sided in the direction ``expect``.

    Args:
        rows: one row per task in its group (``group``, ``column``, ``best_loss``).
        groups: every evidence group (name → tasks); only disjoint ones with ≥ 4 tested tasks count.
    Returns:
        ``groups_expected`` (groups whose r points the expected way), ``groups_tested``,
        ``combined_r`` / ``combined_ci_low`` / ``combined_ci_high`` / ``combined_p`` (NaN with fewer
        than two groups), ``combined_detectable_r`` (the |r| the combination detects at 80 % power).
    """
    ok = rows.dropna(subset=[column, "best_loss"])
    tested = ok.groupby("group").size().to_dict() if groups and "group" in ok else {}
    per_group = []
    for g in testable_disjoint_groups(groups, tested):
        sub = ok[ok["group"] == g]
        cg, _ = _correlation(sub[column], sub["best_loss"], expect)
        if cg is not None:
            per_group.append(cg)
    out = {
        "groups_expected": sum(cg.as_expected for cg in per_group),
        "groups_tested": len(per_group),
        "combined_r": np.nan,
        "combined_ci_low": np.nan,
        "combined_ci_high": np.nan,
        "combined_p": np.nan,
        "combined_detectable_r": np.nan,
    }
    if len(per_group) > 1:
        comb = stats.fisher_combine([cg.r for cg in per_group], [cg.n for cg in per_group], expect)
        out.update(
            combined_r=comb.r,
            combined_ci_low=comb.ci_low,
            combined_ci_high=comb.ci_high,
            combined_p=comb.p_expected,
            combined_detectable_r=stats.combined_detectable_r([cg.n for cg in per_group]),
        )
    return out


def compare(
    frame: pd.DataFrame,
    columns: list[str],
    level: str,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    groups: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
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
    out = []
    for j, col in enumerate(columns):
        decl = predictor_of(col)
        c, note = _correlation(ok_rows[col], y, decl.expect)
        row = {
            "level": level,
            "predictor": col,
            "expected": decl.meaning,
            **_corr_columns(c, note, int(np.isfinite(xs[j]).sum())),
        }
        row["ci_low"] = row["ci_high"] = row["spearman_rho"] = row["spearman_p"] = np.nan
        if c is not None:
            ok = np.isfinite(xs[j])
            sp = sps.spearmanr(xs[j][ok], y[ok])
            row["spearman_rho"], row["spearman_p"] = float(sp.statistic), float(sp.pvalue)
            if level == "pair":
                row["ci_low"], row["ci_high"] = _pair_bootstrap_r(
                    ok_rows[col], y, ok_rows["task_a"], ok_rows["task_b"], n_boot, seed
                )
            else:
                row["ci_low"], row["ci_high"] = stats.cluster_bootstrap_r(
                    ok_rows[col], y, ok_rows["task"], n_boot, seed
                )
        q95 = float(np.nanpercentile(null[:, j], 95)) if np.isfinite(null[:, j]).any() else np.nan
        r = row["r"]
        row.update(
            null_q95=q95,
            familywise_q95=familywise,
            beats_null=bool(np.isfinite(r) and abs(r) > q95),
            beats_familywise=bool(np.isfinite(r) and abs(r) > familywise),
        )
        row.update(combine_over_groups(ok_rows, col, decl.expect, groups or {}))
        out.append(row)
    return pd.DataFrame(out)


def predictor_comparison(
    store: Store, study_id: str, *, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Every candidate predictor of merging loss on the same rows, per task in its evidence group and
    per pair (see :func:`compare`)."""
    parts = []
    tasks, cols = task_level_rows(store, study_id)
    if len(tasks):
        parts.append(
            compare(
                tasks,
                cols,
                "task in group",
                n_boot=n_boot,
                n_perm=n_perm,
                seed=seed,
                groups=evidence_groups(store, study_id),
            )
        )
    pairs, pcols = pair_level_rows(store, study_id)
    if len(pairs):
        parts.append(compare(pairs, pcols, "pair", n_boot=n_boot, n_perm=n_perm, seed=seed))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


#: the levels the strongest signal is read at, in order: per task in its group (the claim's level, where
#: disjoint groups combine), then per pair (secondary: the pairs share tasks)
LEVEL_ORDER = ("task in group", "pair")


def best_predictor(comparison: pd.DataFrame) -> pd.Series | None:
    """The predictor with the largest |r| among those above the family-wise permutation bar of their
    level, at the first level of :data:`LEVEL_ORDER` that has one; None when none does."""
    if comparison.empty:
        return None
    ok = comparison[comparison["beats_familywise"]]
    for level in (*LEVEL_ORDER, *sorted(set(ok["level"]) - set(LEVEL_ORDER))):
        at = ok[ok["level"] == level]
        if len(at):
            return at.loc[at["r"].abs().idxmax()]
    return None
