"""Read-side views of a study: what the store holds, as tables — its losses (Eq. 1), experts, the
spec's settings, the experts' hidden states as HiddenSim and MDS, Theorem 1's measured distortion,
and the swap searches on hidden states. Functions of a store: they read its rows and its state files
(never write), for the paper study and live studies alike; pages, the CLI report and the HTML
report all use them.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import pandas as pd

from ..storage import states as states_io
from ..storage.roles import HELD_OUT_PREFIX, held_out_parent
from ..storage.store import Store
from . import equations, hidden

UNDEFINED_LOSS = equations.UNDEFINED_LOSS


def loss_table(store: Store, study_id: str) -> pd.DataFrame:
    """Merged rows with expert score and merging loss (Eq. 1): group_name, task, method, score,
    expert_score, loss, note. Published rows keep their printed loss. Where the ratio is undefined
    (the expert scores 0; for a lower-is-better metric, the merge) the loss is NaN and ``note``
    says why; every other row is as usual."""
    res = store.results(study_id)
    merged = res[~res["method"].isin(["expert", "base"]) & ~res["group_name"].str.startswith(HELD_OUT_PREFIX)].copy()
    experts = res[res["method"] == "expert"].set_index("task")["score"]
    missing = merged["expert_score"].isna()
    merged.loc[missing, "expert_score"] = merged.loc[missing, "task"].map(experts)
    merged["note"] = ""
    higher = merged["higher_is_better"].astype(bool)
    zero = merged["loss"].isna() & (merged["expert_score"] == 0) & higher
    merged.loc[zero, "note"] = UNDEFINED_LOSS
    zero_merge = merged["loss"].isna() & (merged["score"] == 0) & ~higher
    merged.loc[zero_merge, "note"] = equations.UNDEFINED_LOWER_LOSS
    zero |= zero_merge
    need = merged["loss"].isna() & merged["expert_score"].notna() & merged["score"].notna() & ~zero
    for direction in (True, False):
        rows = need & (higher == direction)
        if rows.any():
            merged.loc[rows, "loss"] = equations.merging_loss(
                merged.loc[rows, "score"].to_numpy(float), merged.loc[rows, "expert_score"].to_numpy(float), direction
            )
    return merged[["group_name", "model", "task", "method", "score", "expert_score", "loss", "note"]]


def held_out_scores(store: Store, study_id: str) -> pd.DataFrame:
    """Each group merge scored on a held-out task (``held_out`` in the spec), beside the untrained
    base's score on that task: group_name (the merged group), method, task, score, base_score,
    higher_is_better."""
    res = store.results(study_id)
    rows = res[res["group_name"].str.startswith(HELD_OUT_PREFIX)].copy()
    base = res[res["method"] == "base"].drop_duplicates("task").set_index("task")["score"]
    rows["group_name"] = rows["group_name"].map(held_out_parent)
    rows["base_score"] = rows["task"].map(base)
    return rows[["group_name", "method", "task", "score", "base_score", "higher_is_better"]].reset_index(drop=True)


def loss_extremes(losses: pd.DataFrame, collapse: float = -30.0) -> pd.DataFrame:
    """Per task of one group's loss rows: worst and best loss over methods and which method gave
    each, and whether even the best is at or below ``collapse`` (collapse under every method).
    A task whose losses are all undefined gets NaN, method "undefined" and a note."""
    rows = []
    for task, sub in losses.groupby("task", sort=False):
        known = sub.dropna(subset=["loss"])
        if known.empty:
            note = next((n for n in sub.get("note", []) if n), "undefined: no merged score")
            rows.append(
                {
                    "task": task,
                    "worst_loss": np.nan,
                    "worst_method": "undefined",
                    "best_loss": np.nan,
                    "best_method": "undefined",
                    "collapsed_under_all": False,
                    "note": note,
                }
            )
            continue
        worst, best = known.loc[known["loss"].idxmin()], known.loc[known["loss"].idxmax()]
        rows.append(
            {
                "task": task,
                "worst_loss": worst["loss"],
                "worst_method": worst["method"],
                "best_loss": best["loss"],
                "best_method": best["method"],
                "collapsed_under_all": bool(best["loss"] <= collapse),
                "note": "",
            }
        )
    return pd.DataFrame(
        rows, columns=["task", "worst_loss", "worst_method", "best_loss", "best_method", "collapsed_under_all", "note"]
    )


def row_records(store: Store, study_id: str) -> pd.DataFrame:
    """Every per-row record of the study (one per eval row of every result), as stored."""
    return store.row_records(study_id)


def expert_table(store: Store, study_id: str) -> pd.DataFrame:
    res = store.results(study_id)
    return res[res["method"] == "expert"][["task", "metric", "score"]].reset_index(drop=True)


def best_loss(losses: pd.DataFrame, group: str, methods: list[str] | None = None) -> pd.DataFrame:
    """Per task of ``group``: its highest loss over ``methods`` (every method if None)."""
    sub = losses[losses["group_name"] == group]
    if methods:
        sub = sub[sub["method"].isin(methods)]
    return sub.groupby("task", sort=False)["loss"].max().rename("best_loss").reset_index()


def best_of(store: Store, study_id: str) -> list[str] | None:
    """The methods a task's best loss is taken over (the spec's ``best_of``; None: every method)."""
    return list(spec_dict(store, study_id).get("best_of") or []) or None


def expert_states(
    store: Store,
    study_id: str,
    tasks: list[str],
    layer: int = -1,
    pooling: str = "mean",
    k: int | None = None,
    probe_tasks: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(experts, probes, dim) pooled states of ``tasks``' experts on the probes of
    ``probe_tasks`` (default: the same tasks), first ``k`` probes per task."""
    arrays, owners = [], None
    for t in tasks:
        states, owners_t, stored = states_io.read_states(store.states_root, study_id, states_io.expert_name(t))
        arrays.append(states[pooling][layer_position(stored, layer)])
        owners = owners_t
    h = np.stack(arrays)
    wanted = set(probe_tasks or tasks)
    keep = [i for i, o in enumerate(owners) if o in wanted]
    owners = [owners[i] for i in keep]
    h = h[:, keep]
    if k is not None:
        sel = hidden.select_probes(owners, k)
        h, owners = h[:, sel], [owners[i] for i in sel]
    return h, owners


def layer_position(stored: tuple[list[int], int], layer: int) -> int:
    """Where ``layer`` (0 = embeddings, −1 = last) sits among the stored layers; AnalysisError
    naming the stored ones if the study did not keep it."""
    layers, n_total = stored
    wanted = n_total + layer if layer < 0 else layer
    if wanted not in layers:
        raise equations.AnalysisError(f"layer {layer} was not stored for this study (stored: {layers})")
    return layers.index(wanted)


def states_info(store: Store, study_id: str, task: str) -> dict:
    """Stored layer numbers (0 = embeddings), the model's layer count and probe owners of one
    expert's stored states."""
    _, owners, (layers, n_total) = states_io.read_states(store.states_root, study_id, states_io.expert_name(task))
    return {"layers": layers, "n_layers": n_total, "probe_tasks": owners}


def has_states(store: Store, study_id: str, tasks: list[str]) -> bool:
    return states_io.has_expert_states(store.states_root, study_id, tasks)


def similarity(
    store: Store,
    study_id: str,
    tasks: list[str],
    *,
    layer: int = -1,
    pooling: str = "mean",
    distance: str = "l2",
    k: int | None = None,
) -> pd.DataFrame:
    """HiddenSim (Eq. 2) of ``tasks``. Where Eq. 2 is undefined (one pair, or every distance
    equal: max − min = 0) the off-diagonal cells are NaN and ``attrs['undefined']`` says why."""
    h, _ = expert_states(store, study_id, tasks, layer, pooling, k)
    try:
        return hidden.similarity_frame(h, tasks, distance)
    except equations.AnalysisError as exc:
        frame = pd.DataFrame(np.where(np.eye(len(tasks), dtype=bool), 1.0, np.nan), index=tasks, columns=tasks)
        frame.attrs["undefined"] = _undefined(exc, len(tasks))
        return frame


def _undefined(exc: Exception, n: int) -> str:
    if n == 2:
        return (
            "undefined for a group of 2: Eq. 2 rescales distances by their max − min, and one pair "
            "has a single distance"
        )
    return f"undefined: {exc}"


def mds_table(
    store: Store,
    study_id: str,
    group: str,
    tasks: list[str] | None = None,
    *,
    layer: int = -1,
    pooling: str = "mean",
    distance: str = "l2",
    k: int | None = None,
    n_boot: int = 0,
) -> pd.DataFrame:
    """MDS per task of a group (stored published MDS for studies without hidden states)."""
    tasks = tasks or store.groups(study_id, role=("group", "swap")).get(group, [])
    if tasks and has_states(store, study_id, tasks):
        h, _ = expert_states(store, study_id, tasks, layer, pooling, k)
        try:
            if n_boot:
                return hidden.mds_with_ci(h, tasks, distance, n_boot=n_boot)
            return pd.DataFrame({"task": tasks, "mds": hidden.mds_of(h, distance)})
        except equations.AnalysisError as exc:
            return pd.DataFrame({"task": tasks, "mds": np.nan, "note": _undefined(exc, len(tasks))})
    tm = store.task_metrics(study_id)
    sub = tm[(tm["group_name"] == group) & (tm["name"] == "mds")]
    return sub[["task", "value"]].rename(columns={"value": "mds"}).reset_index(drop=True)


def spec_dict(store: Store, study_id: str) -> dict:
    """The study's stored spec as plain data ({} for published studies); not validated, so it
    reads even when the study's files have moved."""
    return copy.deepcopy(_parse_spec_text(store.spec_text(study_id)))  # callers may change their copy


@lru_cache(maxsize=32)
def _parse_spec_text(text: str) -> dict:
    import yaml

    return (yaml.safe_load(text) or {}) if text else {}


def hidden_settings(store: Store, study_id: str) -> dict:
    """The study spec's HiddenSim settings (layer, pooling, distance), for views that default to
    what the study asked for; {} for studies without a spec."""
    hidden_spec = spec_dict(store, study_id).get("hidden") or {}
    return {k: hidden_spec[k] for k in ("layer", "pooling", "distance") if k in hidden_spec}


def _group_worst_mds(store: Store, study_id: str, tasks: list[str], **kw) -> np.ndarray:
    """MDS of ``tasks`` measured as a study of that group would: on the group's own probes."""
    h, _ = expert_states(store, study_id, tasks, **kw)
    return hidden.mds_of(h, "l2")


def swap_candidates(
    store: Store, study_id: str, group: list[str], pool: list[str], *, remove: str | None = None, **kw
) -> pd.DataFrame:
    """Rank pool tasks as replacements for ``remove`` (default: the group's worst-MDS task) by
    the new group's worst MDS, from stored hidden states alone (no merge needed). Each candidate
    group is measured on its own probes, exactly as running it as a study would."""
    current = _group_worst_mds(store, study_id, group, **kw)
    remove = remove or group[int(np.argmax(current))]
    rows = []
    for cand in pool:
        if cand in group:
            continue
        new = [cand if t == remove else t for t in group]
        m = _group_worst_mds(store, study_id, new, **kw)
        rows.append(
            {
                "candidate": cand,
                "new_worst_mds": float(m.max()),
                "worst_task": new[int(np.argmax(m))],
                "candidate_mds": float(m[new.index(cand)]),
            }
        )
    out = pd.DataFrame(rows).sort_values("new_worst_mds").reset_index(drop=True)
    out.attrs.update(removed=remove, current_worst_mds=float(current.max()))
    return out


def best_subset(store: Store, study_id: str, tasks: list[str], m: int, max_combos: int = 5000, **kw) -> pd.DataFrame:
    """Groups of size ``m`` from ``tasks`` with the lowest worst MDS (each measured on its own
    probes; exhaustive up to ``max_combos`` combinations)."""
    from itertools import combinations, islice

    h_all, owners = expert_states(store, study_id, tasks, probe_tasks=tasks, **kw)
    # Eq. 2's L2 distance of a group on its probes is the mean over those probes of per-probe
    # distances: computed once for all experts and probes, then only averaged per combination
    per_probe = hidden.per_probe_l2(h_all)  # (experts, experts, probes)
    owners = np.asarray(owners)
    rows = []
    for combo in islice(combinations(range(len(tasks)), m), max_combos):
        idx = list(combo)
        probes = np.flatnonzero(np.isin(owners, [tasks[i] for i in idx]))
        try:
            worst = float(hidden.mds_of_distances(per_probe[np.ix_(idx, idx, probes)].mean(-1)).max())
        except equations.AnalysisError:
            continue
        rows.append({"tasks": ", ".join(tasks[i] for i in combo), "worst_mds": worst})
    return pd.DataFrame(rows).sort_values("worst_mds").head(10).reset_index(drop=True)


def probe_ids(owners: list[str]) -> list[tuple[str, int]]:
    """Each probe as (its task, the n-th probe of that task): how probes align across files."""
    seen: dict[str, int] = {}
    out = []
    for o in owners:
        out.append((o, seen.get(o, 0)))
        seen[o] = seen.get(o, 0) + 1
    return out


def theory(store: Store, study_id: str, group: str, layer: int = -1, pooling: str = "mean") -> pd.DataFrame:
    """Theorem 1 per merge method: Δ, the interval, measured δ_max, inside or not."""
    tasks = store.groups(study_id, role=("group", "swap")).get(group, [])
    if not has_states(store, study_id, tasks):
        return pd.DataFrame()
    h, owners = expert_states(store, study_id, tasks, layer, pooling)
    experts = equations.theorem1_report(h)  # Δ, the interval and the Jung construction: once
    want = probe_ids(owners)
    rows = []
    root = store.states_root
    for method in states_io.merged_methods(root, study_id, group):
        merged, m_owners, stored = states_io.read_states(root, study_id, states_io.merged_name(group, method))
        where = {pid: i for i, pid in enumerate(probe_ids(m_owners))}
        keep = [where[pid] for pid in want]  # align probes by (task, n-th probe of that task)
        _, worst = equations.distortion(merged[pooling][layer_position(stored, layer)][keep], h)
        rows.append(
            {
                "method": method,
                "delta": experts["delta"],
                "d": experts["d"],
                "lower": experts["lower"],
                "upper": experts["upper"],
                "upper_per_input": experts["upper_per_input"],
                "jung_distortion": experts["jung_distortion"],
                "delta_max": worst,
                "inside_interval": bool(experts["lower"] <= worst <= experts["upper"]),
            }
        )
    return pd.DataFrame(rows)
