"""The study's story in plain words, computed from its stored rows: which task collapses and how
badly, what predicted it, and what the swap fixed — and a "what this shows" sentence for each chart,
with a plain warning where n is small or a result is not significant. Nothing here is typed in:
every number comes from the rows the pages also draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..storage.store import Store
from . import stats
from . import views as results

ALPHA = 0.05
COLLAPSE = -30.0

GLOSSARY = {
    "merging": "combining several fine-tuned adapters (one per task) into one set of weights, without training",
    "merging loss": "Eq. 1: how much a task's score drops when its expert is replaced by the merge, in % "
                    "(0 = no loss, −100 = nothing left)",
    "collapse": f"a task whose merging loss is at or below {COLLAPSE:g} % under every merging method: the method "
                "is not the problem, the task combination is",
    "HiddenSim": "Eq. 2: how alike two experts' hidden states are on the same inputs, rescaled to [0, 1] within a "
                 "group (1 = the closest pair, 0 = the farthest)",
    "MDS": "Merging Difficulty Score, Eq. 3: 1 / a task's mean HiddenSim to the others in its group; higher = "
           "harder to merge",
    "Δ": "Theorem 1: the largest root-mean-square distance between two experts' hidden states; every merge "
         "distorts at least Δ²/4",
    "LMC": "linear mode connectivity: the experts' weights can be averaged without leaving the region where "
           "they all work; Theorem 1's upper bound assumes it",
}


@dataclass
class Swap:
    name: str
    removed: str
    added: str
    worst_before: float
    worst_after: float
    mds_before: float
    mds_after: float
    complete: bool  # every task of the swapped group has merged scores


@dataclass
class Headline:
    study: str
    group: str | None = None
    tasks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    task: str | None = None  # the group's worst task: lowest best-loss over methods
    best_loss: float = np.nan
    best_method: str | None = None
    collapsed: bool = False  # at or below COLLAPSE under every method
    mds: float = np.nan
    mds_rank: int | None = None  # 1 = the group's highest MDS
    r: float = np.nan  # Pearson(MDS, best loss) over the group's tasks
    p: float = np.nan
    n: int = 0
    swap: Swap | None = None
    published_swap: pd.DataFrame | None = None  # the paper's Table 6, for the paper study
    warnings: list[str] = field(default_factory=list)


def _story_group(store: Store, study_id: str, losses: pd.DataFrame) -> str | None:
    """The group the story is about: the one whose worst task has the lowest best-loss (among groups
    with MDS when some have it). Swap groups are told as the swap, not as the story's group."""
    candidates = [g for g in store.groups(study_id) if not g.startswith("swap:")]
    with_mds = [g for g in candidates if results.mds_table(store, study_id, g)["mds"].notna().any()]
    candidates = with_mds or candidates
    worst = {}
    for g in candidates:
        best = results.best_loss(losses, g)["best_loss"].dropna()
        if len(best):
            worst[g] = best.min()
    return min(worst, key=worst.get) if worst else (candidates[0] if candidates else None)


def headline(store: Store, study_id: str, collapse: float = COLLAPSE) -> Headline:
    """The story of ``study_id``, computed from its rows."""
    h = Headline(study_id)
    losses = results.loss_table(store, study_id)
    h.group = _story_group(store, study_id, losses)
    if h.group is None:
        h.warnings.append("This study has no task groups yet.")
        return h
    h.tasks = store.groups(study_id)[h.group]
    sub = losses[losses["group_name"] == h.group]
    h.methods = list(dict.fromkeys(sub["method"]))
    kw = results.hidden_settings(store, study_id)
    frame = results.mds_vs_loss(store, study_id, h.group, **kw)
    if sub["loss"].notna().any():
        extremes = results.loss_extremes(sub, collapse).dropna(subset=["best_loss"])
        worst = extremes.loc[extremes["best_loss"].idxmin()]
        h.task, h.best_loss, h.best_method = worst["task"], float(worst["best_loss"]), worst["best_method"]
        h.collapsed = bool(worst["collapsed_under_all"])
    else:
        h.warnings.append(f"No merged scores for {h.group} yet: queue and run its merges.")
    if frame["mds"].notna().any() and h.task in set(frame["task"]):
        ranked = frame.dropna(subset=["mds"]).sort_values("mds", ascending=False).reset_index(drop=True)
        h.mds = float(ranked.loc[ranked["task"] == h.task, "mds"].iloc[0])
        h.mds_rank = int(ranked.index[ranked["task"] == h.task][0]) + 1
        try:
            h.r, h.p = stats.pearson(frame["mds"], frame["best_loss"])
            h.n = int((frame["mds"].notna() & frame["best_loss"].notna()).sum())
        except stats.StatsError as exc:
            h.warnings.append(f"MDS vs best loss cannot be tested on {h.group}: {exc}.")
    h.swap = _swap(store, study_id, h.group)
    if study_id == "paper":
        pub = store.published_stats(study_id)
        t6 = pub[pub["ref"] == "Table 6"]
        if len(t6):
            wide = t6.assign(group=t6["key"].str.split("|").str[0], what=t6["key"].str.split("|").str[1])
            h.published_swap = wide.pivot(index="group", columns="what", values="value").reset_index()
    return h


def _swap(store: Store, study_id: str, group: str) -> Swap | None:
    table = results.swap_table(store, study_id, group)
    if len(table) < 2:
        return None
    after = table.iloc[1:].sort_values("worst_loss", ascending=False, na_position="last").iloc[0]
    before = table.iloc[0]
    removed, _, added = after["group"].rsplit(":", 1)[1].partition("->")
    return Swap(after["group"], removed, added, float(before["worst_loss"]), float(after["worst_loss"]),
                float(before["worst_mds"]), float(after["worst_mds"]),
                complete=bool(after["merged_tasks"] == after["tasks"]))


def _pct(x: float) -> str:
    return f"{x:+.1f} %".replace("-", "−")


def significance(p: float, n: int) -> str:
    """'significant (p = …)' or 'not significant on n …' in words."""
    if not np.isfinite(p):
        return "not testable"
    if p < ALPHA:
        return f"significant (p = {p:.3g})"
    return f"not significant on {n} tasks (p = {p:.3g})"


def sentences(h: Headline, collapse: float = COLLAPSE) -> list[str]:
    """The headline as a few plain sentences (Markdown)."""
    if h.group is None or h.task is None:
        return h.warnings or ["No merged results yet."]
    n_methods = len(h.methods)
    out = []
    if h.collapsed:
        out.append(f"When the {len(h.tasks)} tasks of **{h.group}** are merged, **{h.task}** collapses: even its "
                   f"best merging loss over all {n_methods} methods is **{_pct(h.best_loss)}** ({h.best_method}), "
                   f"at or below the {collapse:g} % collapse line. Changing the method does not save it.")
    else:
        out.append(f"When the {len(h.tasks)} tasks of **{h.group}** are merged, the hardest task is **{h.task}**: "
                   f"its best merging loss over {n_methods} methods is **{_pct(h.best_loss)}** ({h.best_method}) "
                   f"— {'no task' if h.best_loss > collapse else 'it'} collapses under every method.")
    if h.mds_rank is not None:
        rank = "the highest" if h.mds_rank == 1 else f"rank {h.mds_rank} of {len(h.tasks)}"
        out.append(f"Its Merging Difficulty Score (MDS, from hidden states alone — no merge needed) is "
                   f"**{h.mds:.2f}, {rank}** in the group. Across the group, MDS tracks the best loss with "
                   f"r = {h.r:.2f}: {significance(h.p, h.n)}.")
    if h.swap is not None:
        s = h.swap
        verb = "lifts" if s.worst_after > s.worst_before else "changes"
        tail = "" if s.complete else " (some of its merges are still running)"
        out.append(f"Swapping **{s.removed}** for **{s.added}** — chosen by MDS, then verified by merging — "
                   f"{verb} the group's worst loss from **{_pct(s.worst_before)}** to **{_pct(s.worst_after)}** "
                   f"and its worst MDS from {s.mds_before:.2f} to {s.mds_after:.2f}{tail}.")
    elif h.published_swap is not None and len(h.published_swap) > 1:
        t6 = h.published_swap.set_index("group")
        first, rest = t6.index[0], list(t6.index[1:])
        out.append(f"The paper's swap (Table 6): replacing the collapsing task of ({first}) by lower-MDS tasks gives "
                   + ", ".join(f"({g}) worst loss {_pct(t6.loc[g, 'worst_loss'])} (was "
                               f"{_pct(t6.loc[first, 'worst_loss'])}), worst MDS {t6.loc[g, 'worst_mds']:.2f}"
                               for g in rest) + ".")
    return out + h.warnings


def chart_note(kind: str, **data) -> str:
    """The 'what this shows' sentence under a chart, from the numbers it draws."""
    if kind == "loss_bars":
        df, collapse = data["losses"], data.get("collapse", COLLAPSE)
        ext = results.loss_extremes(df, collapse)
        hit = ext.loc[ext["collapsed_under_all"], "task"].tolist()
        known = ext.dropna(subset=["best_loss"])
        if known.empty:
            return "No merged scores to show yet."
        worst = known.loc[known["best_loss"].idxmin()]
        text = (f"Each bar is one task's merging loss under one method. The hardest task is {worst['task']} "
                f"(best {_pct(worst['best_loss'])}). ")
        text += (f"Collapsed under every method: {', '.join(hit)}." if hit else
                 f"No task is at or below {collapse:g} % under every method.")
        return text
    if kind == "hiddensim":
        sim = data["sim"]
        if sim.attrs.get("undefined"):
            return f"HiddenSim is {sim.attrs['undefined']}."
        m = sim.to_numpy(float).copy()
        np.fill_diagonal(m, np.nan)
        mean = np.nanmean(m, axis=1)
        far = sim.index[int(np.nanargmin(mean))]
        return (f"Bright = two experts respond alike to the same inputs. {far} is the least like the others "
                f"(mean HiddenSim {np.nanmin(mean):.2f}), so it is the most likely to collapse when merged with them.")
    if kind == "mds_vs_loss":
        frame = data["frame"]
        ok = frame.dropna(subset=["mds", "best_loss"])
        if len(ok) < 3:
            return f"Only {len(ok)} tasks with both an MDS and a merged score: too few to test."
        r, p = stats.pearson(ok["mds"], ok["best_loss"])
        return (f"Each dot is a task: higher MDS should mean a lower (worse) best loss. Pearson r = {r:.2f}, "
                f"{significance(p, len(ok))}.")
    if kind == "pvalue_grid":
        grid = data["grid"]
        k, n = int((grid["p_value"] < ALPHA).sum()), int(grid["p_value"].notna().sum())
        n_rows = int(grid["n"].max()) if "n" in grid and grid["n"].notna().any() else None
        warn = f" Each test has only {n_rows} points: only large effects can show." if n_rows and n_rows < 20 else ""
        return f"{k} of {n} cells have p < {ALPHA} (green, marked ✱).{warn}"
    if kind == "swap":
        table = data["table"].dropna(subset=["worst_loss"])
        if len(table) < 2:
            return "The swap's merges are still running."
        b, a = table.iloc[0], table.iloc[-1]
        return (f"Left: the worst loss over the group's tasks; right: its worst MDS. {a['group']} has worst loss "
                f"{_pct(a['worst_loss'])} against {_pct(b['worst_loss'])} before.")
    if kind == "theory":
        table = data["table"]
        inside = int(table["inside_interval"].sum())
        return (f"{inside} of {len(table)} real merges have a measured distortion inside Theorem 1's interval "
                "[Δ²/4, d/(2(d+1))·Δ²]" + ("; those above it left the experts' convex hull, as the theorem allows "
                                            "when linear mode connectivity fails." if inside < len(table) else "."))
    raise ValueError(f"no note for chart {kind!r}")
