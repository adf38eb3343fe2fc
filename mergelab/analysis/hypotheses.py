"""The paper's three claims as preregistered tests (data/llm/PREREGISTRATION.md), each a verdict
computed from the stored rows in the direction the claim states, with the power the test had:

* H1 — MDS predicts the best merging loss (r < 0): Fisher's z over the disjoint groups (Table 5's
  ``combined`` row).
* H2 — the four parameter-conflict metrics do not: the same combination per metric, one-sided in
  the metric's own expected direction, uncorrected for the four tests.
* H3 — the MDS-chosen swap lowers the group's collapse: the change of the worst best-loss with its
  paired-bootstrap interval, per verified swap.

Verdict words: ``supported`` / ``contradicted`` (significant the other way) / ``cannot tell`` for a
correlation; ``supported`` / ``contradicted`` / ``within noise`` for an interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..merging.conflicts import METRICS as CONFLICTS
from ..storage.store import Store
from . import protocol, stats
from .grouping import evidence_groups
from .predictors import combine_over_groups, predictor_of, task_level_rows

COLUMNS = [
    "hypothesis",
    "claim",
    "measure",
    "estimate",
    "ci_low",
    "ci_high",
    "p_expected",
    "groups",
    "detectable_r",
    "verdict",
    "note",
]


def correlation_verdict(r: float, p_expected: float, expect: int, alpha: float = stats.ALPHA) -> str:
    """A combined correlation's verdict on a claim that it runs in direction ``expect``."""
    if not (np.isfinite(r) and np.isfinite(p_expected)):
        return "not measured"
    if np.sign(r) == expect and p_expected < alpha:
        return "supported"
    if np.sign(r) == -expect and (1.0 - p_expected) < alpha:
        return "contradicted"
    return "cannot tell"


def interval_verdict(low: float, high: float) -> str:
    """An interval's verdict on a claim that the quantity is above 0."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "not measured"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "within noise"


def _conflict_combinations(store: Store, study_id: str, comparison: pd.DataFrame | None) -> dict[str, dict]:
    """Each conflict metric's combination over the disjoint groups: the predictor comparison's
    task-level rows when the caller has them, else :func:`~.predictors.combine_over_groups` on the
    task rows (the same function the comparison uses)."""
    cols = [f"mean {m}" for m in CONFLICTS]
    if comparison is not None:
        task = comparison[(comparison["level"] == "task in group") & comparison["predictor"].isin(cols)]
        return {r["predictor"]: r for r in task.to_dict(orient="records")}
    frame, _ = task_level_rows(store, study_id)
    groups = evidence_groups(store, study_id)
    return {
        col: combine_over_groups(frame, col, predictor_of(col).expect, groups)
        for col in cols
        if len(frame) and col in frame
    }


def hypothesis_tests(
    store: Store,
    study_id: str,
    *,
    t5: pd.DataFrame | None = None,
    swaps: pd.DataFrame | None = None,
    comparison: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per test: H1, H2 (one row per conflict metric), H3 (one row per verified swap).

    ``verdict`` is the test's outcome on the claim as the hypothesis states it (for H2 the claim is
    that the metric does *not* predict: a metric whose combination is significant in its expected
    direction makes H2 fail for it, which reads ``contradicted``). ``t5`` and ``swaps``: Table 5 and
    the swap effects, ``comparison`` the predictor comparison (H2 reads its combined rows) when the
    caller has them already (computed here otherwise)."""
    rows = []
    t5 = t5 if t5 is not None else protocol.table5(store, study_id)
    groups_rows = t5[~t5["group"].isin(["combined", "pooled"])]
    comb = t5[t5["group"] == "combined"]
    combined_groups = t5.attrs.get("combined_groups", [])
    ns = groups_rows.set_index("group").reindex(combined_groups)["n"].tolist()
    if len(comb):
        c = comb.iloc[0]
        rows.append(
            {
                "hypothesis": "H1",
                "claim": "MDS predicts the best merging loss (r < 0)",
                "measure": "Pearson r of MDS with the best loss, Fisher's z over the disjoint groups",
                "estimate": c["r"],
                "ci_low": c["ci_low"],
                "ci_high": c["ci_high"],
                "p_expected": c["p_expected"],
                "groups": len(combined_groups),
                "detectable_r": stats.combined_detectable_r(ns),
                "verdict": correlation_verdict(c["r"], c["p_expected"], -1),
                "note": c["note"],
            }
        )
    else:
        rows.append(
            {
                "hypothesis": "H1",
                "claim": "MDS predicts the best merging loss (r < 0)",
                "verdict": "not measured",
                "note": "fewer than two groups that share no task have merged scores; the combined test needs "
                "independent groups",
            }
        )
    combined = _conflict_combinations(store, study_id, comparison)
    for metric in CONFLICTS:
        col = f"mean {metric}"
        expect = predictor_of(col).expect
        row: dict[str, object] = {
            "hypothesis": "H2",
            "claim": f"{metric} does not predict the best loss",
            "measure": f"Pearson r of the task's mean {metric} in its group with the best loss "
            f"(expected {'r < 0' if expect < 0 else 'r > 0'} if it did), Fisher's z over the disjoint groups",
        }
        c = combined.get(col)
        if c is not None and np.isfinite(c["combined_r"]):
            predicts = correlation_verdict(c["combined_r"], c["combined_p"], expect)
            row.update(
                estimate=c["combined_r"],
                ci_low=c["combined_ci_low"],
                ci_high=c["combined_ci_high"],
                p_expected=c["combined_p"],
                groups=int(c["groups_tested"]),
                detectable_r=c["combined_detectable_r"],
                # H2 claims the metric does not predict: it fails where the metric is significant
                # in its expected direction, and holds otherwise (also when it runs the other way)
                verdict="contradicted" if predicts == "supported" else "supported",
                note=f"one-sided in the metric's expected direction; {int(c['groups_tested'])} groups; "
                "not corrected for the four tests"
                + ("; significant the other way" if predicts == "contradicted" else ""),
            )
        else:
            row.update(verdict="not measured", note="fewer than two groups that share no task have this metric")
        rows.append(row)
    eff = swaps if swaps is not None else protocol.swap_effects(store, study_id)
    done = eff[eff["merged_tasks"] == eff["tasks"]] if len(eff) else eff
    for s in done.itertuples():
        rows.append(
            {
                "hypothesis": "H3",
                "claim": "the swap chosen by MDS raises the group's worst best-loss",
                "measure": f"{s.parent}: {s.removed} → {s.added}, change of the worst best-loss "
                "(points), paired bootstrap over eval rows",
                "estimate": s.change,
                "ci_low": s.change_ci_low,
                "ci_high": s.change_ci_high,
                "groups": 1,
                "verdict": interval_verdict(s.change_ci_low, s.change_ci_high),
                "note": "one swap is one observation",
            }
        )
    if done.empty:
        rows.append(
            {
                "hypothesis": "H3",
                "claim": "the swap chosen by MDS raises the group's worst best-loss",
                "verdict": "not measured",
                "note": "no verified swap yet",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def sentences(tests: pd.DataFrame) -> list[str]:
    """One plain sentence per test of :func:`hypothesis_tests`, its verdict last, with the interval
    and the power it had; "not measured" says why."""
    out = []
    for t in tests.itertuples():
        head = f"**{t.hypothesis}** — {t.claim}"
        if t.verdict == "not measured":
            out.append(f"{head}: not measured ({t.note}).")
            continue
        est = f"{t.estimate:+.2f}" if t.hypothesis != "H3" else f"{t.estimate:+.1f} points"
        ci = (
            f"95 % {t.ci_low:+.2f} to {t.ci_high:+.2f}"
            if t.hypothesis != "H3"
            else (f"95 % {t.ci_low:+.1f} to {t.ci_high:+.1f}")
        )
        body = f"{t.measure}: {est} ({ci}"
        if np.isfinite(t.p_expected):
            body += f", one-sided p = {t.p_expected:.2g}"
        body += ")"
        power = (
            f"; with {int(t.groups)} disjoint groups it detects |r| ≥ {t.detectable_r:.2f} at 80 % power"
            if np.isfinite(t.detectable_r)
            else ""
        )
        out.append(f"{head}: {body}{power} → **{t.verdict}**.")
    return out
