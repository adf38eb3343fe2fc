"""A finished study as shippable files — rows as CSV, per-row records as one compressed parquet
file, hidden states as float16 safetensors, finished unit keys — and back into any store, so the
dashboard opens on results instantly and `mergelab run` on the same spec redoes nothing unless
asked to."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import jobs, states
from .store import Store

RECORDS_FILE = "records.parquet"


def export(store: Store, study_id: str, out: Path, units: set[str] | None = None) -> None:
    """Write the study's rows, records, finished units and states into ``out``.

    Args:
        units: the unit keys the study's spec plans now; finished units outside it (superseded when a
            method's revision re-keyed its units) stay out, so a store loading the snapshot holds
            exactly the planned units. None ships every finished unit.
    """
    out.mkdir(parents=True, exist_ok=True)
    store.results(study_id).to_csv(out / "results.csv", index=False)
    store.pair_metrics(study_id).to_csv(out / "pair_metrics.csv", index=False)
    records = store.row_records(study_id)
    if len(records):
        records.to_parquet(out / RECORDS_FILE, index=False, compression="zstd")
    else:
        (out / RECORDS_FILE).unlink(missing_ok=True)
    done = [row for row in jobs.done_keys(store, study_id) if units is None or row[1] in units]
    pd.DataFrame(done, columns=["kind", "unit_key", "payload"]).to_csv(out / "jobs.csv", index=False)
    target = out / "states"
    if target.exists():
        for f in target.glob("*.safetensors"):
            f.unlink()
    states.export_states(store.states_root, study_id, target)


def load_rows(store: Store, study_id: str, snapshot: Path) -> None:
    """The snapshot's rows and finished units, into the store's open transaction (or one of
    their own); the study's registration comes first, from its spec (the study layer)."""
    store.add_results(study_id, pd.read_csv(snapshot / "results.csv", keep_default_na=True))
    if (snapshot / RECORDS_FILE).exists():
        store.add_row_records(study_id, pd.read_parquet(snapshot / RECORDS_FILE))
    pm = pd.read_csv(snapshot / "pair_metrics.csv")
    if len(pm):
        store.add_pair_metrics(study_id, pm)
    done = pd.read_csv(snapshot / "jobs.csv")
    jobs.add_done(store, study_id, list(done.itertuples(index=False, name=None)), "shipped result")


def copy_states(store: Store, study_id: str, snapshot: Path) -> None:
    states.copy_states(store.states_root, study_id, snapshot / "states")
