"""A study's findings as one Markdown document (`mergelab report --format markdown`): the paper's
claims tested, Table 5, the pairs (Table 4), the experts against the base, the swaps, forgetting on
held-out tasks and the signals that tracked the loss — every sentence and number from the tables
:func:`protocol.summary` and :func:`hypotheses.hypothesis_tests` computed, in the order a reader
needs them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import hypotheses

T5_COLUMNS = ["group", "n", "r", "ci_low", "ci_high", "direction", "p_expected", "reliability", "detectable_r"]
T4_COLUMNS = ["metric", "method", "n", "r", "ci_low", "ci_high", "direction", "p_expected"]
EXPERT_COLUMNS = ["task", "metric", "better", "expert_score", "base_score", "gain", "gain_ci_low", "gain_ci_high"]
SWAP_COLUMNS = ["swap", "removed", "added", "worst_before", "worst_after", "change", "change_ci_low", "change_ci_high"]
FORGETTING_COLUMNS = ["group_name", "method", "task", "n_tasks", "change", "ci_low", "ci_high", "retained"]
PREDICTOR_COLUMNS = [
    "predictor",
    "r",
    "ci_low",
    "ci_high",
    "p_expected",
    "beats_familywise",
    "combined_r",
    "combined_p",
]


SIGNED = {"r", "ci_low", "ci_high", "change", "change_ci_low", "change_ci_high", "combined_r", "gain"}


def _cell(column: str, value) -> str:
    if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
        return str(value)
    if not np.isfinite(value):
        return "—"
    if column.startswith("p_") or column == "combined_p":
        return f"{value:.3g}"
    if column in ("n", "n_tasks"):
        return f"{int(value)}"
    return f"{value:+.2f}" if column in SIGNED or column.startswith("gain") else f"{value:.2f}"


def _table(frame: pd.DataFrame, columns: list[str]) -> str:
    shown = frame[[c for c in columns if c in frame]].copy().astype(object)
    for c in shown.columns:
        shown[c] = [_cell(c, v) for v in shown[c]]
    return shown.to_markdown(index=False, disable_numparse=True)


def document(study: str, summary: dict[str, pd.DataFrame], tests: pd.DataFrame) -> str:
    """The Markdown text: headings, the verdict sentences, then the tables they rest on."""
    parts = [f"# {study}: what the stored rows show", "", "## The paper's claims, tested", ""]
    parts += [f"- {s}" for s in hypotheses.sentences(tests)]
    t5 = summary.get("table5")
    if t5 is not None and len(t5):
        parts += ["", "## MDS against the best merging loss (Table 5)", "", _table(t5, T5_COLUMNS)]
        if t5.attrs.get("overlap"):
            parts += ["", t5.attrs["overlap"]]
    t4 = summary.get("table4_pairwise")
    if t4 is not None and len(t4):
        parts += ["", "## Pairs: each conflict metric and HiddenSim against the pair loss (Table 4)", ""]
        parts += [_table(t4, T4_COLUMNS), ""]
        parts += [
            "The pairs share tasks (every task is in several pairs), so these p-values, which treat the "
            "pairs as independent as the paper's Table 4 does, overstate the evidence; the intervals that "
            "resample whole tasks are in the signals table below (level `pair`)."
        ]
        rel = summary.get("pair_reliability")
        if rel is not None and len(rel):
            parts += ["", "Pair-loss reliability per method: " + ", ".join(
                f"{r.method} {_cell('reliability', r.reliability)} ({r.pairs} pairs)" for r in rel.itertuples()
            ) + "."]  # fmt: skip
    experts = summary.get("experts")
    if experts is not None and len(experts):
        parts += ["", "## Experts against the untrained base (points, 95 % paired-bootstrap interval)", ""]
        parts += [_table(experts, EXPERT_COLUMNS)]
    swaps = summary.get("swaps")
    if swaps is not None and len(swaps):
        parts += ["", "## Verified swaps (worst best-loss, points)", "", _table(swaps, SWAP_COLUMNS)]
    held = summary.get("forgetting")
    if held is not None and len(held):
        mean = held[held["level"] == "mean over held-out tasks"]
        parts += ["", "## Forgetting: each merge against the base on held-out tasks (merged − base, points)", ""]
        parts += [_table(mean, FORGETTING_COLUMNS)]
    pred = summary.get("predictors")
    if pred is not None and len(pred):
        task_level = pred[pred["level"] == "task in group"].copy()
        task_level = task_level.reindex(task_level["r"].abs().sort_values(ascending=False).index).head(10)
        parts += ["", "## Candidate signals of the best loss, strongest first (task in group; exploratory)", ""]
        parts += [_table(task_level, PREDICTOR_COLUMNS)]
        pair_level = pred[pred["level"] == "pair"].copy()
        if len(pair_level):
            pair_level = pair_level.reindex(pair_level["r"].abs().sort_values(ascending=False).index).head(10)
            parts += ["", "## Candidate signals of the pair loss, strongest first (intervals resample tasks)", ""]
            parts += [_table(pair_level, PREDICTOR_COLUMNS[:6])]
    return "\n".join(parts) + "\n"
