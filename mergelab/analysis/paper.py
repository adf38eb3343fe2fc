"""The paper's published tables as a study: load, check for internal consistency, recompute.

The numbers live in ``data/paper/*.csv`` (transcribed by hand; ``data/paper/PROVENANCE.md``
says from where). Nothing here is hard-coded: every "recomputed" value is computed from those
files with :mod:`mergelab.analysis.equations` and :mod:`mergelab.analysis.stats`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..storage.paper_rows import DETAIL_GROUPS, GLUE_TASKS, METHODS, PAPER_DIR, STUDY_ID, STUDY_NAME, load_tables
from . import equations, stats

__all__ = ["DETAIL_GROUPS", "GLUE_TASKS", "METHODS", "PAPER_DIR", "STUDY_ID", "STUDY_NAME", "load_tables"]


def table2_with_recomputed_loss(table2: pd.DataFrame) -> pd.DataFrame:
    """Table 2 with Eq. 1 recomputed from its FT and merged scores beside the printed M(Δ)."""
    out = table2.copy()
    out["recomputed_loss"] = equations.merging_loss(out["merged_score"], out["ft_score"])
    out["difference"] = out["recomputed_loss"] - out["published_loss"]
    return out


def mds_vs_best_loss(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per task of each Tables 7–10 group: its published MDS and its best loss over methods."""
    losses, mds = tables["detail_losses"], tables["detail_mds"]
    best = losses.groupby(["group", "task"], sort=False)["published_loss"].max().rename("best_loss")
    merged = mds.merge(best.reset_index(), on=["group", "task"])
    return merged[["group", "task", "mds", "best_loss"]]


def table5_recomputed(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 5: Pearson(MDS, best merging loss) per group, recomputed beside the published p."""
    frame = mds_vs_best_loss(tables)
    rows = []
    for group, sub in frame.groupby("group", sort=False):
        r, p = stats.pearson(sub["mds"], sub["best_loss"])
        rows.append({"group": group, "r": r, "p_recomputed": p})
    out = pd.DataFrame(rows).merge(tables["table5"].rename(columns={"p_value": "p_published"}), on="group", how="left")
    # Table 7's TIES row repeats Table 2's DARE values for RTE, SST-2, WNLI (see
    # consistency_checks); recompute GLUE with Table 2's own Qwen2.5-3B TIES row as well.
    fixed = dict(tables)
    t2 = tables["table2"].query("model == 'Qwen2.5-3B' and method == 'TIES'")
    detail = tables["detail_losses"].copy()
    mask = (detail["group"] == "GLUE") & (detail["method"] == "TIES")
    detail.loc[mask, "published_loss"] = (
        detail.loc[mask, "task"].map(dict(zip(t2["task"], t2["published_loss"]))).to_numpy()
    )
    fixed["detail_losses"] = detail
    sub = mds_vs_best_loss(fixed).query("group == 'GLUE'")
    r, p = stats.pearson(sub["mds"], sub["best_loss"])
    out.loc[len(out)] = {
        "group": "GLUE, Table 7 TIES row taken from Table 2",
        "r": r,
        "p_recomputed": p,
        "p_published": np.nan,
    }
    return out[["group", "r", "p_recomputed", "p_published"]]


def table3_recomputed(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 3's ANOVA recomputed from what the paper prints, beside the published p-values.

    Table 3's GLUE row pools every model of Table 1 (Llama, Qwen and T5), whose per-task losses
    are not published; only the three Qwen2.5 models of Table 2 can be recomputed, so the
    numbers differ. DARE's collapses (two −100 scores for 7B) drive the method effect.
    """
    t2 = tables["table2"]
    published = tables["table3"]
    pub = lambda factor: float(published.query("setting == 'GLUE' and factor == @factor")["p_value"].iloc[0])
    rows = []
    for label, data in [("Table 2, all five methods", t2), ("Table 2, without DARE", t2[t2["method"] != "DARE"])]:
        for factor in ("method", "task"):
            f, p = stats.anova_oneway(data, factor, "published_loss")
            rows.append(
                {
                    "data": label,
                    "factor": factor,
                    "n": len(data),
                    "F": f,
                    "p_recomputed": p,
                    "p_published_glue": pub(factor),
                }
            )
    return pd.DataFrame(rows)


def consistency_checks(tables: dict[str, pd.DataFrame], tol: float = 0.1) -> pd.DataFrame:
    """Internal inconsistencies of the published tables, computed (not transcribed).

    Returns one row per finding: table, what, detail. Checks:
    Table 2's M(Δ) against Eq. 1 on its own FT / merged scores; Table 1's Qwen rows against
    Table 2 (mean and population sd of |loss|); Table 7's rows against Table 2's Qwen2.5-3B rows;
    positive losses against Eq. 1's stated range [−100, 0].
    """
    findings = []
    t2 = table2_with_recomputed_loss(tables["table2"])
    for r in t2[t2["difference"].abs() > tol].itertuples():
        findings.append(
            {
                "table": "Table 2",
                "what": "M(Δ) differs from Eq. 1 on FT and M",
                "detail": f"{r.model} {r.method} {r.task}: printed {r.published_loss}, "
                f"(M/FT−1)·100 = {r.recomputed_loss:.2f}",
            }
        )
    t1 = tables["table1"]
    summary = (
        t2.assign(abs_loss=t2["published_loss"].abs())
        .groupby(["model", "method"])["abs_loss"]
        .agg(mean="mean", sd_pop=lambda s: s.std(ddof=0), sd_sample="std")
        .reset_index()
    )
    both = t1.merge(summary, on=["model", "method"])
    for r in both.itertuples():
        if abs(r.mean - r.mean_loss) > 0.06 or abs(r.sd_pop - r.sd_loss) > 0.06:
            findings.append(
                {
                    "table": "Table 1",
                    "what": "Qwen row differs from Table 2",
                    "detail": f"{r.model} {r.method}: printed {r.mean_loss} ± {r.sd_loss}, "
                    f"Table 2 gives {r.mean:.2f} ± {r.sd_pop:.2f} (population sd)",
                }
            )
    if len(both) and np.allclose(both["sd_pop"], both["sd_loss"], atol=0.06):
        findings.append(
            {
                "table": "Table 1",
                "what": "sd convention",
                "detail": "Table 1's ± is the population sd (ddof=0) of Table 2's losses; "
                "the sample sd is larger (e.g. Qwen2.5-3B LA: "
                f"{both.iloc[0]['sd_sample']:.1f})",
            }
        )
    findings.append(
        {
            "table": "Table 1",
            "what": "sign convention",
            "detail": "Table 1 prints losses as positive magnitudes; Tables 2 and 7–10 "
            "print them negative as Eq. 1 defines",
        }
    )
    d7 = tables["detail_losses"].query("group == 'GLUE'")
    q3 = t2[t2["model"] == "Qwen2.5-3B"]
    for method, sub in d7.groupby("method", sort=False):
        for r in sub.itertuples():
            own = q3.query("method == @method and task == @r.task")["published_loss"]
            if len(own) and abs(float(own.iloc[0]) - r.published_loss) > 1e-9:
                match = q3.query("task == @r.task and abs(published_loss - @r.published_loss) < 1e-9")
                same = ", ".join(match["method"]) or "no method"
                findings.append(
                    {
                        "table": "Table 7",
                        "what": f"{method} row differs from Table 2",
                        "detail": f"{r.task}: Table 7 {r.published_loss}, Table 2 "
                        f"Qwen2.5-3B {method} {float(own.iloc[0])}; the printed "
                        f"value is Table 2's {same}",
                    }
                )
    positive = tables["detail_losses"].query("published_loss > 0")
    if len(positive):
        items = ", ".join(
            f"({g}) {t} {m} +{v}"
            for g, t, m, v in positive[["group", "task", "method", "published_loss"]].itertuples(index=False)
        )
        findings.append(
            {
                "table": "Tables 8–10",
                "what": "losses outside Eq. 1's stated range",
                "detail": f"Eq. 1 states −100 ≤ L ≤ 0 but {len(positive)} losses are positive: {items}",
            }
        )
    return pd.DataFrame(findings, columns=["table", "what", "detail"])
