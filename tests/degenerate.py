"""Studies a user can easily make on which the paper's formulas are partly undefined, written
straight into a store (rows and hidden-state files), no model needed."""

from __future__ import annotations

import json

import numpy as np
import yaml

from mergelab.storage import states as states_io
from mergelab.storage.store import Store

METHODS = ["LA", "TIES"]


def _states(rng, owners: list[str], layers: int = 3, dim: int = 8, shift: float = 0.0) -> dict:
    n = len(owners)
    return {p: rng.normal(shift, 1.0, (layers, n, dim)).astype(np.float32) for p in ("mean", "first", "last")}


def make(
    store: Store,
    name: str,
    *,
    groups: dict[str, list[str]],
    pool: list[str] = (),
    expert_scores: dict[str, float] | None = None,
    merged_tasks: dict[str, list[str]] | None = None,
    states: bool = True,
    k: int = 3,
    seed: int = 0,
    failed_units: int = 0,
    pairwise: list[str] = (),
) -> str:
    """A live study ``name``: experts with ``expert_scores`` (default 80), every group merged with
    LA and TIES and scored on ``merged_tasks[group]`` (default: all its tasks), stored hidden
    states for experts and merges, conflict metrics for every pair, ``failed_units`` failed jobs,
    and every pair of the groups in ``pairwise`` merged and scored (role "pair")."""
    rng = np.random.default_rng(seed)
    tasks = list(dict.fromkeys([t for g in groups.values() for t in g] + list(pool)))
    expert_scores = {t: 80.0 for t in tasks} | dict(expert_scores or {})
    spec = {
        "name": name,
        "base": "org/base",
        "architecture": "causal",
        "adapters": {t: f"adapters/{t}" for t in tasks},
        "tasks": {t: {"data": f"data/{t}.jsonl", "labels": ["no", "yes"], "note": f"task {t}"} for t in tasks},
        "groups": groups,
        "pool": list(pool),
        "methods": {m: {} for m in METHODS},
        "pairwise": list(pairwise),
        "hidden": {"k": k, "layer": -1, "pooling": "mean", "distance": "l2"},
    }
    store.upsert_study(name, name, "live", f"degenerate study {name}", yaml.safe_dump(spec))
    store.set_groups(name, groups)
    if pool:
        store.set_pool(name, list(pool))
    rows = [
        {
            "group_name": "",
            "model": f"expert:{t}",
            "task": t,
            "method": "expert",
            "metric": "accuracy",
            "score": expert_scores[t],
            "expert_score": expert_scores[t],
            "loss": 0.0,
        }
        for t in tasks
    ]
    for g, members in groups.items():
        for m in METHODS:
            for t in (merged_tasks or {}).get(g, members):
                rows.append(
                    {
                        "group_name": g,
                        "model": f"merged:{g}:{m}",
                        "task": t,
                        "method": m,
                        "metric": "accuracy",
                        "score": float(rng.uniform(20, 80)),
                    }
                )
    pairs = {f"pair:{a}+{b}": [a, b] for g in pairwise for i, a in enumerate(groups[g]) for b in groups[g][i + 1 :]}
    if pairs:
        store.set_groups(name, pairs, role="pair")
    for pair, members in pairs.items():
        for m in METHODS:
            for t in members:
                rows.append(
                    {
                        "group_name": pair,
                        "model": f"merged:{pair}:{m}",
                        "task": t,
                        "method": m,
                        "metric": "accuracy",
                        "score": float(rng.uniform(20, 80)),
                    }
                )
    store.add_results(name, rows)
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    store.add_pair_metrics(
        name,
        [
            {"task_a": a, "task_b": b, "name": metric, "value": float(rng.uniform(0, 1))}
            for a, b in pairs
            for metric in (
                "magnitude_change_ratio",
                "sign_change_ratio",
                "conflicting_magnitude_change_ratio",
                "task_vector_cosine",
            )
        ],
    )
    if states:
        owners = [t for t in tasks for _ in range(k)]
        for i, t in enumerate(tasks):
            states_io.write_states(
                store.states_root,
                name,
                f"expert__{t}",
                _states(rng, owners, shift=0.3 * i),
                {"probe_tasks": json.dumps(owners), "unit_key": f"{name}:states:{t}"},
            )
        for g, members in groups.items():
            g_owners = [t for t in members for _ in range(k)]
            for m in METHODS:
                states_io.write_states(
                    store.states_root,
                    name,
                    f"merged__{g}__{m}",
                    _states(rng, g_owners),
                    {"probe_tasks": json.dumps(g_owners), "unit_key": f"{name}:mstates:{g}:{m}"},
                )
    if failed_units:
        with store.transaction() as con:  # failed units, as a worker would leave them
            con.executemany(
                "INSERT INTO jobs(study_id, kind, unit_key, payload, status, attempts, error, created_at, "
                "updated_at) VALUES (?, 'merge', ?, ?, 'failed', 1, ?, 0, 0)",
                [
                    (
                        name,
                        f"{name}:merge:{i}",
                        json.dumps({"group": "g", "method": "LA", "task": tasks[0]}),
                        "LoadError: adapter 'x' is corrupted",
                    )
                    for i in range(failed_units)
                ],
            )
    return name


def pair_study(store: Store) -> str:
    """A group of 2 tasks: Eq. 2 has one distance, so HiddenSim and MDS are undefined."""
    return make(store, "pair", groups={"g": ["a", "b"]})


def zero_expert_study(store: Store) -> str:
    """An expert that scores 0: its merging loss is undefined (Eq. 1 divides by zero)."""
    return make(store, "zero", groups={"g": ["a", "b", "c", "d"]}, expert_scores={"b": 0.0})


def no_merged_rows_study(store: Store) -> str:
    """A task of the group has no merged rows yet (its units failed or are still queued)."""
    return make(
        store, "partial", groups={"g": ["a", "b", "c", "d"]}, merged_tasks={"g": ["a", "b", "c"]}, failed_units=2
    )


def records_study(
    store: Store,
    name: str,
    groups: dict[str, list[str]],
    *,
    n_rows: int = 200,
    seed: int = 0,
    expert_p: dict[str, float] | None = None,
    merged_p=None,
    swaps: dict | None = None,
    mds: dict[str, dict[str, float]] | None = None,
    methods=("LA", "TA", "TIES"),
) -> dict:
    """A live study whose every score is the mean of its per-row records (0/100 per row): experts
    correct with probability ``expert_p[t]`` (0.8), merges with ``merged_p(group, method, task)``;
    returns the row matrices {(group, method, task): (n_rows,)} so tests can recompute anything."""
    rng = np.random.default_rng(seed)
    tasks = list(dict.fromkeys(t for g in groups.values() for t in g))
    expert_p = {t: 0.8 for t in tasks} | dict(expert_p or {})
    merged_p = merged_p or (lambda g, m, t: 0.5)
    spec = {
        "name": name,
        "base": "org/base",
        "architecture": "causal",
        "adapters": {t: f"adapters/{t}" for t in tasks},
        "tasks": {t: {"data": f"data/{t}.jsonl", "labels": ["no", "yes"]} for t in tasks},
        "groups": groups,
        "methods": {m: {} for m in methods},
        "hidden": {"k": 3},
    }
    if swaps:
        spec["swaps"] = [{"group": p, "remove": r, "add": a} for p, r, a in swaps.values()]
    store.upsert_study(name, name, "live", "", yaml.safe_dump(spec))
    store.set_groups(name, groups)
    if swaps:
        store.set_groups(
            name,
            {n: [a if t == r else t for t in groups[p]] for n, (p, r, a) in swaps.items()},
            role="swap",
            meta={n: {"parent": p, "removed": r, "added": a} for n, (p, r, a) in swaps.items()},
        )
    everything = {**groups, **{n: [a if t == r else t for t in groups[p]] for n, (p, r, a) in (swaps or {}).items()}}
    rows, records, truth = [], [], {}

    def add(group, model, method, task, p):
        scores = 100.0 * (rng.random(n_rows) < p)
        truth[(group, method, task)] = scores
        rows.append(
            {
                "group_name": group,
                "model": model,
                "task": task,
                "method": method,
                "metric": "accuracy",
                "score": scores.mean(),
            }
        )
        records.extend(
            {
                "group_name": group,
                "model": model,
                "task": task,
                "method": method,
                "row": i,
                "row_id": f"{task}-{i}",
                "score": s,
                "reference": "yes",
                "prediction": "yes" if s else "no",
                "label_logprobs": [-1.0, -0.5] if s else [-0.5, -1.0],
            }
            for i, s in enumerate(scores)
        )

    for t in tasks + [a for (_, _, a) in (swaps or {}).values() if a not in tasks]:
        add("", f"expert:{t}", "expert", t, expert_p.get(t, 0.8))
    for g, members in everything.items():
        for m in methods:
            for t in members:
                add(g, f"merged:{g}:{m}", m, t, merged_p(g, m, t))
    store.add_results(name, rows)
    store.add_row_records(name, records)
    if mds:
        store.add_task_metrics(
            name,
            [{"group_name": g, "task": t, "name": "mds", "value": v} for g, by in mds.items() for t, v in by.items()],
        )
    return truth
