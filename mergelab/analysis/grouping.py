"""A study's groups by role and what may be combined: evidence groups (drawn or declared), swaps and
pairs; which groups share tasks and the largest set that share none; methods that are one merge."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..storage.roles import Swap
from ..storage.store import Store


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
    rows = [
        {"group_a": a, "group_b": b, "shared": len(set(groups[a]) & set(groups[b]))}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
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


def testable_disjoint_groups(groups: dict[str, list[str]], tested: dict[str, int]) -> list[str]:
    """The groups a combined test uses: :func:`disjoint_groups` among those with at least 4 tested
    tasks (``tested``: group → tasks with both values; Fisher's z weighs a group by n − 3), so a
    group that cannot be tested never takes the place of one that can."""
    return disjoint_groups({g: t for g, t in groups.items() if tested.get(g, 0) > 3})


def overlap_warning(groups: dict[str, list[str]]) -> str:
    """A plain sentence when groups share tasks ('' when they are disjoint)."""
    ov = overlaps(groups)
    if ov.empty:
        return ""
    pairs = ", ".join(f"{r.group_a}/{r.group_b} {r.shared}" for r in ov.itertuples())
    return (
        f"These groups share tasks ({pairs}): their rows are not independent, so pooled p-values would "
        "overstate the evidence. The combined test uses only groups that share no task; pooled intervals "
        "resample whole tasks."
    )


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
        for b in methods[i + 1 :]:
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
    note = f"{'; '.join(merged)}: identical scores in every cell, counted as one level" if merged else ""
    return out, note
