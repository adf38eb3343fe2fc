"""A study's work as the Run page shows it: batches of queued units with their ETA, units per Ray
actor, failures grouped by their error — functions of the job rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: what each kind of unit does, in words (the Run page's labels)
UNIT_WORDS = {
    "base": "base-model scores",
    "expert": "expert scores",
    "states": "expert hidden states",
    "merge": "merged-model scores",
    "mstates": "merged-model hidden states",
    "conflicts": "conflict metrics",
}


def _unit_seconds(jobs: pd.DataFrame) -> pd.Series:
    """Seconds from claim to finish of each finished unit, less the first unit of each worker, which
    also loaded the model (kept where it is a worker's only one)."""
    took = (jobs["finished_at"] - jobs["started_at"]).where(jobs["status"] == "done")
    done = jobs[took.notna()]
    if "worker" in done and done["worker"].notna().any():
        first = done.sort_values("started_at").groupby("worker").head(1).index
        several = done.groupby("worker")["id"].transform("size") > 1
        took = took.drop(index=[i for i in first if several.get(i, False)])
    return took


def run_batches(jobs: pd.DataFrame) -> pd.DataFrame:
    """Progress per batch of units the user queued (units enqueued together share their queue time):
    units, done, running, queued, failed, cancelled, what they are (in words), and an ETA from the
    batch's own finished units (median seconds from claim to finish, each worker's first unit — the
    one that loaded the model — left out; the study's, until one of the batch has finished)."""
    if jobs.empty:
        return pd.DataFrame(
            columns=[
                "queued_at",
                "units",
                "done",
                "running",
                "queued",
                "failed",
                "cancelled",
                "what",
                "seconds_per_unit",
                "eta_s",
            ]
        )
    took = _unit_seconds(jobs)
    overall = float(took.median()) if took.notna().any() else np.nan
    rows = []
    for created, batch in jobs.groupby("created_at", sort=True):
        counts = batch["status"].value_counts()
        kinds = batch["kind"].value_counts()
        per = took.reindex(batch.index).median()
        per = float(per) if np.isfinite(per) else overall
        left = int(counts.get("queued", 0) + counts.get("running", 0))
        rows.append(
            {
                "queued_at": created,
                "units": len(batch),
                **{s: int(counts.get(s, 0)) for s in ("done", "running", "queued", "failed", "cancelled")},
                "what": ", ".join(f"{n} {UNIT_WORDS.get(k, k)}" for k, n in kinds.items()),
                "seconds_per_unit": per,
                "eta_s": left * per if left else 0.0,
            }
        )
    return pd.DataFrame(rows)


def actor_progress(jobs: pd.DataFrame) -> pd.DataFrame:
    """Units per Ray actor — done and running — from the messages the Ray executor leaves on each
    unit ("on ray actor-2" while it runs, "done on actor-2" after); empty when no unit ran on Ray."""
    actor = jobs["message"].fillna("").str.extract(r"(?:on ray|done on) (actor-\d+)")[0]
    ran = jobs.assign(actor=actor)[actor.notna() & jobs["status"].isin(["done", "running"])]
    if ran.empty:
        return pd.DataFrame(columns=["actor", "done", "running"])
    counts = ran.groupby(["actor", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=["done", "running"], fill_value=0).reset_index()
    counts["n"] = counts["actor"].str.split("-").str[1].astype(int)
    return counts.sort_values("n").drop(columns="n").reset_index(drop=True)


def failures(jobs: pd.DataFrame) -> list[dict]:
    """Failed units grouped by their error: the error, how many units, which, and one full traceback."""
    failed = jobs[jobs["status"] == "failed"]
    out = []
    for error, sub in failed.groupby("error", sort=False):
        out.append(
            {
                "error": error,
                "count": len(sub),
                "units": sub["id"].tolist(),
                "kinds": sorted(set(sub["kind"])),
                "traceback": next((t for t in sub["traceback"] if t), ""),
            }
        )
    return sorted(out, key=lambda f: -f["count"])
