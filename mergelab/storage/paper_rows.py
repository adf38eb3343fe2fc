"""The paper's published tables (``data/paper/*.csv``, transcribed by hand; ``PROVENANCE.md`` says
from where) and their load into a store as the study ``paper``, served like any live study."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import DATA_DIR
from .store import Store

PAPER_DIR = DATA_DIR / "paper"
STUDY_ID = "paper"
STUDY_NAME = "Paper: Cao et al. 2026 (published tables)"
METHODS = ["LA", "TA", "TIES", "DARE", "SLERP"]
GLUE_TASKS = ["COLA", "MNLI", "MRPC", "QNLI", "QQP", "RTE", "SST-2", "WNLI"]
#: Tables 7–10 groups as stored: the paper's group label → the group name used in the store.
DETAIL_GROUPS = {"GLUE": "GLUE Qwen2.5-3B (Table 7)", "a": "(a)", "b": "(b)", "c": "(c)"}


def load_tables(directory: Path = PAPER_DIR) -> dict[str, pd.DataFrame]:
    """All published tables, tidy long format, keyed by table name."""
    read = lambda name: pd.read_csv(directory / name)
    return {
        "table1": read("table1_loss_summary.csv"),
        "table2": read("table2_glue_qwen.csv"),
        "table3": read("table3_anova.csv"),
        "table4": read("table4_pair_pearson.csv"),
        "table5": read("table5_mds_pearson.csv"),
        "table6": read("table6_swap.csv"),
        "detail_losses": read("tables7_10_group_losses.csv"),
        "detail_mds": read("tables7_10_group_mds.csv"),
    }


def load_into(store: Store, directory: Path = PAPER_DIR) -> str:
    """Write the paper study into ``store`` in one transaction (idempotent); returns its study id."""
    tables = load_tables(directory)
    with store.batch():
        _write(store, tables)
    return STUDY_ID


def _write(store: Store, tables: dict[str, pd.DataFrame]) -> None:
    store.upsert_study(
        STUDY_ID,
        STUDY_NAME,
        "paper",
        "The published tables of 'An Empirical Study and Theoretical Explanation on "
        "Task-Level Model-Merging Collapse' (Cao et al., preprint 2026-03-11). "
        "Read only; every statistic is recomputed from these rows.",
    )
    t2 = tables["table2"]
    rows = pd.DataFrame(
        {
            "group_name": "GLUE (Table 2)",
            "model": t2["model"],
            "task": t2["task"],
            "method": t2["method"],
            "metric": "accuracy",
            "score": t2["merged_score"],
            "expert_score": t2["ft_score"],
            "loss": t2["published_loss"],
            "source": "published",
        }
    )
    detail = tables["detail_losses"]
    models = {"GLUE": "Qwen2.5-3B"}
    detail_rows = pd.DataFrame(
        {
            "group_name": detail["group"].map(DETAIL_GROUPS),
            "task": detail["task"],
            "model": detail["group"].map(models).fillna("Mistral-7B + Lots-of-LoRAs"),
            "method": detail["method"],
            "metric": detail["group"].map({"GLUE": "accuracy"}).fillna("rougeL"),
            "loss": detail["published_loss"],
            "source": "published",
        }
    )
    store.add_results(STUDY_ID, pd.concat([rows, detail_rows], ignore_index=True))
    mds = tables["detail_mds"]
    store.add_task_metrics(
        STUDY_ID,
        pd.DataFrame(
            {
                "group_name": mds["group"].map(DETAIL_GROUPS),
                "task": mds["task"],
                "name": "mds",
                "value": mds["mds"],
                "source": "published",
            }
        ),
    )
    groups = {"GLUE (Table 2)": GLUE_TASKS}
    for key, name in DETAIL_GROUPS.items():
        groups[name] = list(mds.loc[mds["group"] == key, "task"])
    store.set_groups(STUDY_ID, groups)
    published = []
    for r in tables["table3"].itertuples():
        published.append({"ref": "Table 3", "key": f"{r.setting}|{r.factor}", "value": r.p_value})
    for r in tables["table4"].itertuples():
        published.append({"ref": "Table 4", "key": f"{r.metric}|{r.method}", "value": r.p_value})
    for r in tables["table5"].itertuples():
        published.append({"ref": "Table 5", "key": DETAIL_GROUPS[r.group], "value": r.p_value})
    for r in tables["table6"].itertuples():
        published.append({"ref": "Table 6", "key": f"{r.group}|worst_loss", "value": r.worst_loss})
        published.append({"ref": "Table 6", "key": f"{r.group}|worst_mds", "value": r.worst_mds})
    store.add_published_stats(STUDY_ID, published)
