"""The study's story in plain words, computed from its stored rows: which task collapses and how
badly (with its interval), whether MDS pointed at it, what the study's statistics say of the paper's
claim — supports, contradicts, or cannot tell — and what a verified swap changed, told as "within
noise" when its interval covers 0. Each chart gets a "what this shows" sentence from the numbers it
draws. Nothing here is typed in, and no sentence depends on which way the evidence points: the
verbs come from signs and intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mergelab.analysis import grouping, predictors

from ..storage.store import Store
from . import protocol, stats, uncertainty, views

ALPHA = stats.ALPHA
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
    "95 % interval": "the range the number would fall in on 95 % of redraws of the evaluation rows (a paired "
    "bootstrap: expert and merge scored on the same rows); a change whose interval covers 0 is "
    "within noise",
    "one-sided p": "the chance of a correlation at least this strong in the paper's direction if there were none; "
    "a correlation the other way never counts as support",
    "reliability": "how much of a group's spread in best loss across tasks is real rather than the noise of "
    "scoring a finite number of rows (1 = all real, 0 or less = all noise)",
    "Δ": "Theorem 1: the largest root-mean-square distance between two experts' hidden states; every merge "
    "distorts at least Δ²/4",
    "LMC": "linear mode connectivity: the experts' weights can be averaged without leaving the region where "
    "they all work; Theorem 1's upper bound assumes it",
}


@dataclass
class Headline:
    study: str
    group: str | None = None
    tasks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    task: str | None = None  # the group's worst task: lowest best-loss over methods
    best_loss: float = np.nan
    best_ci: tuple[float, float] = (np.nan, np.nan)
    best_method: str | None = None
    collapsed: bool = False  # at or below COLLAPSE under every method
    mds: float = np.nan
    mds_rank: int | None = None  # 1 = the group's highest MDS
    top_mds_task: str | None = None  # the task MDS flagged (the group's highest MDS)
    correlation: stats.Correlation | None = None  # MDS vs best loss in the story's group
    detectable_r: float = np.nan
    reliability: float = np.nan
    verdict: str = ""  # what the study's Table 5 says of the paper's claim: supports / contradicts / cannot tell
    verdict_detail: str = ""
    predictor: str = ""  # the sentence on which signal tracked collapse here
    swap: pd.Series | None = None  # a row of protocol.swap_effects
    published_swap: pd.DataFrame | None = None  # the paper's Table 6, for the paper study
    warnings: list[str] = field(default_factory=list)

    # kept for readers of the old fields
    @property
    def r(self) -> float:
        return self.correlation.r if self.correlation else np.nan

    @property
    def p(self) -> float:
        return self.correlation.p_expected if self.correlation else np.nan

    @property
    def n(self) -> int:
        return self.correlation.n if self.correlation else 0


def story_group(store: Store, study_id: str, losses: pd.DataFrame | None = None) -> str | None:
    """The group the story is about — every page opens on it: the evidence group whose worst task has
    the lowest best-loss (among groups with MDS when some have it)."""
    losses = views.loss_table(store, study_id) if losses is None else losses
    candidates = list(grouping.evidence_groups(store, study_id))
    with_mds = [g for g in candidates if views.mds_table(store, study_id, g)["mds"].notna().any()]
    candidates = with_mds or candidates
    methods = views.best_of(store, study_id)
    worst = {}
    for g in candidates:
        best = views.best_loss(losses, g, methods)["best_loss"].dropna()
        if len(best):
            worst[g] = best.min()
    return min(worst, key=worst.get) if worst else (candidates[0] if candidates else None)


def _verdict(t5: pd.DataFrame) -> tuple[str, str]:
    """supports / contradicts / cannot tell, from Table 5: the combined row when the study has
    groups that share no task, else its one group, else each overlapping group read alone — and the
    sentence that says why."""
    groups = t5[~t5["group"].isin(["combined", "pooled"])].dropna(subset=["r"])
    comb = t5[t5["group"] == "combined"].dropna(subset=["r"])
    if groups.empty:
        return "cannot tell", "MDS vs best loss could not be tested on any group."
    det = groups["detectable_r"].dropna()
    power = (
        f" With {int(groups['n'].median())} tasks a group detects only |r| ≥ {det.median():.2f} with 80 % power."
        if len(det)
        else ""
    )
    if len(comb) or len(groups) == 1:
        row = comb.iloc[0] if len(comb) else groups.iloc[0]
        names = t5.attrs.get("combined_groups") or []
        what = (
            f"combined over the {len(names)} groups that share no task ({', '.join(names)}; Fisher's z)"
            if len(comb)
            else f"in {row['group']} ({int(row['n'])} tasks)"
        )
        r, p = row["r"], row["p_expected"]
        ci = f"95 % interval {_r(row['ci_low'])} to {_r(row['ci_high'])}"
        if r < 0 and p < ALPHA:
            return "supports", (
                f"MDS tracks the best loss in the paper's direction {what}: r = {_r(r)} ({ci}), one-sided p = {p:.3g}."
            )
        if r > 0 and 1 - p < ALPHA:
            return "contradicts", (
                f"MDS tracks the best loss *opposite* to the paper's direction {what}: r = "
                f"{_r(r)} ({ci}) — tasks with higher MDS merged better here."
            )
        side = "in the paper's direction" if r < 0 else "opposite to the paper's direction"
        return "cannot tell", (
            f"MDS vs best loss {what}: r = {_r(r)} ({ci}), {side}, one-sided p = {p:.3g} — "
            f"not significant, so this study cannot tell whether MDS predicts collapse.{power}"
        )
    support = groups[(groups["r"] < 0) & (groups["p_expected"] < ALPHA)]
    against = groups[(groups["r"] > 0) & (1 - groups["p_expected"] < ALPHA)]
    listed = ", ".join(f"{g} {_r(r)}" for g, r in zip(groups["group"], groups["r"]))
    way = sum(groups["r"] < 0)
    text = (
        f"Its {len(groups)} groups share tasks, so they cannot be combined into one test. Read alone (r: "
        f"{listed}), {way} of {len(groups)} point the paper's way, {len(support)} significantly, and "
        f"{len(against)} significantly the other way.{power}"
    )
    if len(support) and not len(against):
        return "supports in some groups", text
    if len(against) and not len(support):
        return "contradicts in some groups", text
    return "cannot tell", text


def _r(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−") if np.isfinite(x) else "undefined"


def headline(
    store: Store,
    study_id: str,
    collapse: float = COLLAPSE,
    *,
    t5: pd.DataFrame | None = None,
    group_frame: pd.DataFrame | None = None,
) -> Headline:
    """The story of ``study_id``, computed from its rows. ``t5`` (:func:`~.protocol.table5`) and
    ``group_frame`` (:func:`~.protocol.mds_vs_loss` of the story's group, :func:`story_group`) when
    the caller has them already (the dashboard keeps them across processes)."""
    h = Headline(study_id)
    losses = views.loss_table(store, study_id)
    h.group = story_group(store, study_id, losses)
    if h.group is None:
        h.warnings.append("This study has no task groups yet.")
        return h
    h.tasks = store.groups(study_id)[h.group]
    methods = views.best_of(store, study_id)
    sub = losses[losses["group_name"] == h.group]
    if methods:
        sub = sub[sub["method"].isin(methods)]
    h.methods = list(dict.fromkeys(sub["method"]))
    draws = uncertainty.draws_for(store, study_id)
    frame = group_frame if group_frame is not None else protocol.mds_vs_loss(store, study_id, h.group, draws)
    if sub["loss"].notna().any():
        known = frame.dropna(subset=["best_loss"])
        worst = known.loc[known["best_loss"].idxmin()]
        h.task, h.best_loss, h.best_method = worst["task"], float(worst["best_loss"]), worst["best_method"]
        h.best_ci = (float(worst["ci_low"]), float(worst["ci_high"]))
        h.collapsed = bool(h.best_loss <= collapse)
    else:
        h.warnings.append(f"No merged scores for {h.group} yet: queue and run its merges.")
    if frame["mds"].notna().any() and h.task in set(frame["task"]):
        ranked = frame.dropna(subset=["mds"]).sort_values("mds", ascending=False).reset_index(drop=True)
        h.mds = float(ranked.loc[ranked["task"] == h.task, "mds"].iloc[0])
        h.mds_rank = int(ranked.index[ranked["task"] == h.task][0]) + 1
        h.top_mds_task = ranked.loc[0, "task"]
        try:
            h.correlation = stats.correlation(frame["mds"], frame["best_loss"], predictors.PREDICTORS["MDS"].expect)
            h.detectable_r = stats.detectable_r(h.correlation.n)
        except stats.StatsError as exc:
            h.warnings.append(f"MDS vs best loss cannot be tested on {h.group}: {exc}.")
        h.reliability = uncertainty.reliability(frame, draws).reliability
    t5 = t5 if t5 is not None else protocol.table5(store, study_id, draws)
    h.verdict, h.verdict_detail = _verdict(t5)
    sw = protocol.swap_effects(store, study_id, draws)
    sw = sw[sw["parent"] == h.group]
    if len(sw):
        h.swap = sw.sort_values("worst_after", ascending=False, na_position="last").iloc[0]
    if study_id == "paper":
        pub = store.published_stats(study_id)
        t6 = pub[pub["ref"] == "Table 6"]
        if len(t6):
            wide = t6.assign(group=t6["key"].str.split("|").str[0], what=t6["key"].str.split("|").str[1])
            h.published_swap = wide.pivot(index="group", columns="what", values="value").reset_index()
    return h


def worst_task(store: Store, study_id: str, group: str, collapse: float = COLLAPSE) -> tuple:
    """(task, its best loss, collapsed?) for the task of ``group`` with the lowest best loss over the
    ``best_of`` methods; (None, nan, False) before any merge."""
    best = views.best_loss(views.loss_table(store, study_id), group, views.best_of(store, study_id)).dropna()
    if best.empty:
        return None, np.nan, False
    row = best.loc[best["best_loss"].idxmin()]
    return row["task"], float(row["best_loss"]), bool(row["best_loss"] <= collapse)


def _pct(x: float) -> str:
    return f"{x:+.1f} %".replace("-", "−") if np.isfinite(x) else "undefined"


def _points(x: float) -> str:
    return f"{x:+.1f} points".replace("-", "−") if np.isfinite(x) else "undefined"


def _ci(lo: float, hi: float, unit: str = "") -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval: no per-row records"
    return f"95 % interval {lo:+.1f} to {hi:+.1f}{unit}".replace("-", "−")


def significance(p: float, n: int, r: float = np.nan, expect: int = -1) -> str:
    """In words: a one-sided test in the expected direction. 'significant in the paper's direction
    (one-sided p = …)', 'opposite to the paper's direction', or 'not significant on n tasks'."""
    if not np.isfinite(p):
        return "not testable"
    if np.isfinite(r) and np.sign(r) != expect:
        return f"opposite to the paper's direction (r {'>' if r > 0 else '<'} 0), so no support for it"
    if p < ALPHA:
        return f"significant in the paper's direction (one-sided p = {p:.3g})"
    return f"not significant on {n} tasks (one-sided p = {p:.3g})"


def change_words(change: float, lo: float, hi: float) -> str:
    """How a worst loss moved, from the change's sign and interval (a higher loss is better): 'rose
    (better)', 'fell (worse)', 'moved within noise' when the interval covers 0, 'moved (no interval
    to judge it)' without one."""
    noise = uncertainty.within_noise(lo, hi)
    if noise is None:
        return "moved (no interval to judge it)" if np.isfinite(change) else "is not measured yet"
    if noise:
        return "moved within noise"
    return "rose (better)" if change > 0 else "fell (worse)"


def sentences(h: Headline, collapse: float = COLLAPSE) -> list[str]:
    """The headline as a few plain sentences (Markdown)."""
    if h.group is None or h.task is None:
        return h.warnings or ["No merged results yet."]
    n_methods = len(h.methods)
    out = []
    ci = _ci(*h.best_ci, " %")
    if h.collapsed:
        out.append(
            f"When the {len(h.tasks)} tasks of **{h.group}** are merged, **{h.task}** collapses: even its "
            f"best merging loss over {n_methods} methods is **{_pct(h.best_loss)}** ({h.best_method}; {ci}), "
            f"at or below the {_pct(collapse)} collapse line. Changing the method does not save it."
        )
    else:
        out.append(
            f"When the {len(h.tasks)} tasks of **{h.group}** are merged, the hardest task is **{h.task}**: "
            f"its best merging loss over {n_methods} methods is **{_pct(h.best_loss)}** ({h.best_method}; "
            f"{ci}) — no task collapses under every method."
        )
    if h.mds_rank is not None:
        if h.mds_rank == 1:
            rank = f"the highest of {len(h.tasks)}: MDS flagged it"
        else:
            rank = f"rank {h.mds_rank} of {len(h.tasks)}: MDS did not flag it (it flagged **{h.top_mds_task}**)"
        out.append(
            f"Its Merging Difficulty Score (MDS, from hidden states alone — no merge needed) is "
            f"**{h.mds:.2f}, {rank}**."
        )
        if h.correlation is not None:
            c = h.correlation
            out.append(
                f"Across {h.group}, MDS vs best loss: r = {_r(c.r)} "
                f"(95 % interval {_r(c.ci_low)} to {_r(c.ci_high)}), "
                f"{significance(c.p_expected, c.n, c.r, c.expect)}; with {c.n} tasks only |r| ≥ "
                f"{h.detectable_r:.2f} is detected with 80 % power."
            )
    if h.verdict:
        out.append(f"**The paper's claim on this study: {h.verdict}.** {h.verdict_detail}")
    if h.swap is not None:
        s = h.swap
        verb = change_words(s["change"], s["change_ci_low"], s["change_ci_high"])
        mds_verb = (
            "lowered"
            if s["worst_mds_after"] < s["worst_mds_before"]
            else "raised"
            if s["worst_mds_after"] > s["worst_mds_before"]
            else "kept"
        )
        tail = "" if s["merged_tasks"] == s["tasks"] else " (some of its merges are still running)"
        same = (
            f" The worst task is **{s['worst_task_after']}** both times."
            if s["worst_task_before"] == s["worst_task_after"] and s["worst_task_after"]
            else ""
        )
        out.append(
            f"Swapping **{s['removed']}** for **{s['added']}**, verified by merging: the group's worst loss "
            f"{verb}, {_pct(s['worst_before'])} → {_pct(s['worst_after'])} (change "
            f"{_points(s['change'])}, {_ci(s['change_ci_low'], s['change_ci_high'], ' points')}); the swap "
            f"{mds_verb} the worst MDS ({s['worst_mds_before']:.2f} → {s['worst_mds_after']:.2f}).{same}{tail}"
        )
    elif h.published_swap is not None and len(h.published_swap) > 1:
        t6 = h.published_swap.set_index("group")
        first, rest = t6.index[0], list(t6.index[1:])
        out.append(
            f"The paper's swap (Table 6): replacing the collapsing task of ({first}) by lower-MDS tasks gives "
            + ", ".join(
                f"({g}) worst loss {_pct(t6.loc[g, 'worst_loss'])} (was "
                f"{_pct(t6.loc[first, 'worst_loss'])}), worst MDS {t6.loc[g, 'worst_mds']:.2f}"
                for g in rest
            )
            + "."
        )
    return out + h.warnings


def chart_note(kind: str, **data) -> str:
    """The 'what this shows' sentence under a chart, from the numbers it draws."""
    if kind == "loss_bars":
        df, collapse = data["losses"], data.get("collapse", COLLAPSE)
        ext = views.loss_extremes(df, collapse)
        hit = ext.loc[ext["collapsed_under_all"], "task"].tolist()
        known = ext.dropna(subset=["best_loss"])
        if known.empty:
            return "No merged scores to show yet."
        worst = known.loc[known["best_loss"].idxmin()]
        text = (
            f"Each bar is one task's merging loss under one method. The hardest task is {worst['task']} "
            f"(best {_pct(worst['best_loss'])}). "
        )
        text += (
            f"Collapsed under every method: {', '.join(hit)}."
            if hit
            else f"No task is at or below {collapse:g} % under every method."
        )
        return text
    if kind == "hiddensim":
        sim = data["sim"]
        if sim.attrs.get("undefined"):
            return f"HiddenSim is {sim.attrs['undefined']}."
        m = sim.to_numpy(float).copy()
        np.fill_diagonal(m, np.nan)
        mean = np.nanmean(m, axis=1)
        far = sim.index[int(np.nanargmin(mean))]
        text = (
            f"Bright = two experts respond alike to the same inputs. At this setting {far} is the least like the "
            f"others (mean HiddenSim {np.nanmin(mean):.2f}): the paper predicts it is the most likely to collapse."
        )
        worst = data.get("worst")
        if worst is not None and worst[0] is not None:
            task, best, collapsed = worst
            what = "collapsed" if collapsed else "merged worst"
            text += f" In the merges, {task} {what} (best loss {_pct(best)})" + (
                " — the same task." if task == far else f" — not {far}."
            )
        return text
    if kind == "mds_vs_loss":
        frame = data["frame"]
        ok = frame.dropna(subset=["mds", "best_loss"])
        if len(ok) < 3:
            return f"Only {len(ok)} tasks with both an MDS and a merged score: too few to test."
        c = stats.correlation(ok["mds"], ok["best_loss"], predictors.PREDICTORS["MDS"].expect)
        return (
            f"Each dot is a task; the paper expects higher MDS → lower (worse) best loss, r < 0. Here r = "
            f"{_r(c.r)} (95 % interval {_r(c.ci_low)} to {_r(c.ci_high)}), "
            f"{significance(c.p_expected, c.n, c.r, c.expect)}."
        )
    if kind == "pvalue_grid":
        grid = data["grid"]
        p = grid["p_expected"] if "p_expected" in grid else grid["p_value"]
        as_expected = grid["direction"].str.startswith("in ") if "direction" in grid else pd.Series(True, grid.index)
        k, n = int(((p < ALPHA) & as_expected).sum()), int(p.notna().sum())
        against = (
            int((grid["direction"].str.startswith("opposite") & ((1 - p) < ALPHA)).sum()) if "direction" in grid else 0
        )
        n_rows = int(grid["n"].max()) if "n" in grid and grid["n"].notna().any() else None
        warn = f" Each test has only {n_rows} points: only large effects can show." if n_rows and n_rows < 20 else ""
        other = f" {against} are significant the other way (not support)." if against else ""
        return (
            f"{k} of {n} cells are significant (one-sided p < {ALPHA}) in the direction their metric would "
            f"predict collapse (green, marked ✱).{other}{warn}"
        )
    if kind == "swap":
        table = data["table"]
        if table.empty or not np.isfinite(table.iloc[-1]["worst_after"]):
            return "The swap's merges are still running."
        s = table.iloc[-1]
        verb = change_words(s["change"], s["change_ci_low"], s["change_ci_high"])
        return (
            f"Left: the worst best-loss over the group's tasks (error bars: 95 % intervals); right: its worst "
            f"MDS. With {s['added']} in place of {s['removed']} the worst loss {verb}: {_pct(s['worst_before'])} "
            f"→ {_pct(s['worst_after'])} (change {_points(s['change'])}, "
            f"{_ci(s['change_ci_low'], s['change_ci_high'], ' points')})."
        )
    if kind == "theory":
        table = data["table"]
        inside = int(table["inside_interval"].sum())
        return (
            f"{inside} of {len(table)} real merges have a measured distortion inside Theorem 1's interval "
            "[Δ²/4, d/(2(d+1))·Δ²]"
            + (
                "; those above it left the experts' convex hull, as the theorem allows "
                "when linear mode connectivity fails."
                if inside < len(table)
                else "."
            )
        )
    raise ValueError(f"no note for chart {kind!r}")


# --- the Statistics page's words -----------------------------------------------------------------------
def table5_sentences(t5: pd.DataFrame, power: dict) -> list[str]:
    """Table 5 in words: the verdict on the paper's claim, then what the groups could detect."""
    verdict, detail = _verdict(t5)
    out = [f"**The paper's claim (higher MDS → worse best loss) on this study: {verdict}.** {detail}"]
    groups = t5[~t5["group"].isin(["combined", "pooled"])]
    rel = groups["reliability"].dropna()
    if len(rel):
        low = groups[groups["reliability"] < 0.8]
        rows = low["rows_needed"].dropna()
        more = (
            f" {len(low)} of {len(rel)} groups are below 0.8"
            + (
                f"; reaching 0.8 would take about {int(rows.max())} eval rows per task."
                if len(rows)
                else "; their spread is noise, so more rows of these tasks would not tell."
            )
            if len(low)
            else ""
        )
        out.append(
            "Reliability of the best-loss column (share of its spread that is not row-sampling noise): "
            + ", ".join(f"{g} {r:.2f}" for g, r in zip(groups["group"], groups["reliability"]) if np.isfinite(r))
            + "."
            + more
        )
    elif len(groups):
        out.append("No reliability: " + uncertainty.NO_RECORDS + ".")
    if np.isfinite(power.get("detectable_r", np.nan)):
        att = power["attenuated_r"]
        need = power["groups_needed"]
        out.append(
            f"Power: a group of {power['n']} tasks detects |r| ≥ {power['detectable_r']:.2f} with 80 % power "
            f"(one-sided). The paper's effect, r = {_r(power['paper_r'])}"
            + (
                f", would read as r ≈ {_r(att)} at this study's reliability"
                if np.isfinite(power["mean_reliability"])
                else ""
            )
            + (
                f"; {int(need)} disjoint group{'s' if need != 1 else ''} of {power['n']} would detect it "
                "with 80 % power."
                if np.isfinite(need)
                else "."
            )
        )
    return out


def table4_sentences(t4: pd.DataFrame, reliability: pd.DataFrame) -> list[str]:
    """Table 4 in words: cells significant in their metric's expected direction, HiddenSim vs the
    conflict metrics, and whether the pair losses rise above their noise."""

    def count(frame):
        support = ((frame["p_expected"] < ALPHA) & frame["direction"].str.startswith("in ")).sum()
        return int(support), int(frame["p_expected"].notna().sum())

    hs, conf = t4[t4["metric"] == "hiddensim"], t4[t4["metric"] != "hiddensim"]
    (k_hs, n_hs), (k_c, n_c) = count(hs), count(conf)
    n_pairs = int(t4["n"].max()) if t4["n"].notna().any() else 0
    printed = ""
    if "p_paper" in t4 and t4["p_paper"].notna().any():
        ph = int((t4.loc[t4["metric"] == "hiddensim", "p_paper"] < ALPHA).sum())
        pc = int((t4.loc[t4["metric"] != "hiddensim", "p_paper"] < ALPHA).sum())
        printed = f" The paper printed p < {ALPHA} for {ph} HiddenSim and {pc} conflict cells (two-sided)."
    out = [
        f"Over **{n_pairs} pairwise merges**: HiddenSim tracks the pair loss in its expected direction "
        f"(more similar → better) for **{k_hs} of {n_hs}** methods, the four conflict metrics for "
        f"**{k_c} of {n_c}** method × metric cells (one-sided p < {ALPHA}).{printed}"
    ]
    if n_pairs:
        k = (1 + np.sqrt(1 + 8 * n_pairs)) / 2  # n pairs of one group = k (k − 1) / 2
        of = f"{int(k)} tasks" if float(k).is_integer() else "the tasks of the pairwise groups"
        out.append(
            f"The {n_pairs} pairs are built from {of}, so they share tasks and are not independent: these "
            "p-values treat them as independent (as the paper's Table 4 does) and overstate the evidence. "
            "Intervals that resample whole tasks are in the signal comparison below (level 'pair')."
        )
    if n_pairs and n_pairs < 20:
        out.append(
            f"Only {n_pairs} pairs per method: a test this small detects only |r| ≥ "
            f"{stats.detectable_r(n_pairs):.2f} with 80 % power."
        )
    rel = reliability.dropna(subset=["reliability"]) if len(reliability) else reliability
    if len(rel):
        out.append(
            "Reliability of the pair losses (share of their spread that is not row-sampling noise): "
            + ", ".join(f"{m} {r:.2f}" for m, r in zip(rel["method"], rel["reliability"]))
            + "."
        )
    return out


def anova_sentences(anova: pd.DataFrame, printed: pd.DataFrame) -> list[str]:
    by = anova.set_index("factor")
    if not by["p_value"].notna().all():
        return []
    pub = printed.pivot(index="setting", columns="factor", values="p_value")
    paper = "; ".join(f"{s}: task p = {r['task']:.3g}, method p = {r['method']:.3g}" for s, r in pub.iterrows())
    same = (
        "the task matters more than the method"
        if by.loc["task", "p_value"] < by.loc["method", "p_value"]
        else "the method matters as much as the task or more"
    )
    return [
        f"Task: F = {by.loc['task', 'F']:.2f}, p = {by.loc['task', 'p_value']:.3g}; method: F = "
        f"{by.loc['method', 'F']:.2f}, p = {by.loc['method', 'p_value']:.3g} — here {same}. The paper ({paper}): "
        "collapse is a property of the task combination, not of the technique."
    ]


def predictor_sentence(comparison: pd.DataFrame) -> str:
    """Which signal tracked collapse here: the strongest one above the family-wise permutation bar,
    with its direction and interval — or that none beats its null."""
    best = predictors.best_predictor(comparison)
    bars = comparison.groupby("level")["familywise_q95"].first()
    bar_text = ", ".join(f"{lvl} |r| > {q:.2f}" for lvl, q in bars.items() if np.isfinite(q))
    if best is None:
        top = comparison.loc[comparison["r"].abs().idxmax()] if comparison["r"].notna().any() else None
        strongest = (
            f" The strongest, {top['predictor']} ({top['level']}), has r = {_r(top['r'])} ({top['direction']})."
            if top is not None
            else ""
        )
        return (
            f"**No predictor beats its permutation null on this study** (family-wise bar: {bar_text}), so none "
            f"can be said to track collapse here.{strongest}"
        )
    way = "as it claims" if str(best["direction"]).startswith("in ") else "**opposite** to what it claims"
    rep = (
        f"; it points its expected way in {int(best['groups_expected'])} of {int(best['groups_tested'])} "
        "groups that share no task"
        if best["groups_tested"]
        else ""
    )
    covers_zero = bool(best["ci_low"] <= 0 <= best["ci_high"]) or not np.isfinite(best["ci_low"])
    shared = "pairs share tasks" if best["level"] == "pair" else "tasks recur across groups that overlap"
    caveat = (
        f" Its interval, which resamples whole tasks (the permutation bar does not, and {shared}), covers 0: "
        "within noise, so this is a lead to test on new groups, not a finding."
        if covers_zero
        else ""
    )
    return (
        f"**Strongest signal above the family-wise permutation bar ({bar_text}): {best['predictor']}** "
        f"({best['level']}), r = {_r(best['r'])} (95 % interval {_r(best['ci_low'])} to {_r(best['ci_high'])}), "
        f"{way}{rep}.{caveat}"
    )


def swap_record_sentence(record: dict) -> str:
    """How often this study's verified swaps helped, in one sentence."""
    n = record["verified"]
    return (
        f"Across this study's {n} verified swap{'s' if n != 1 else ''}: {record['helped']} raised the group's "
        f"worst loss beyond noise, {record['within_noise']} moved it within noise, {record['hurt']} lowered it"
        + (f", {record['no_interval']} without an interval (no per-row records)" if record["no_interval"] else "")
        + "."
    )
