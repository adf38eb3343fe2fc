"""Ship a computed study as files (rows as CSV, hidden states as float16 safetensors) and load
it into any store, so the dashboard opens on finished results instantly. Job rows come along
marked done, so `mergelab run` on the same spec redoes nothing unless asked to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file, save_file

from .. import runner
from ..spec import parse_spec
from ..store import Store


def export(store: Store, study_id: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    store.results(study_id).to_csv(out / "results.csv", index=False)
    store.pair_metrics(study_id).to_csv(out / "pair_metrics.csv", index=False)
    store.query("SELECT kind, unit_key, payload FROM jobs WHERE study_id=? AND status='done' "
                "ORDER BY id", (study_id,)).to_csv(out / "jobs.csv", index=False)
    states = out / "states"
    if states.exists():
        shutil.rmtree(states)
    states.mkdir()
    for f in sorted(runner.states_dir(store, study_id).glob("*.safetensors")):
        from safetensors import safe_open

        with safe_open(f, "pt") as h:
            meta = h.metadata()
        save_file({k: v.half().contiguous() for k, v in load_file(f).items()}, states / f.name,
                  metadata=meta)


def load_into(store: Store, spec_path: Path, snapshot: Path) -> str:
    """Load a shipped study into ``store``. Its hidden-state files are copied first (each to a
    temporary name, then renamed) and its rows written last, in one go: a load that fails half-way
    (a full disk) leaves no study row, so the next open loads it again, whole."""
    spec = parse_spec(spec_path)
    target = runner.states_dir(store, spec.name)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((snapshot / "states").glob("*.safetensors")):
            if not (target / f.name).exists():
                tmp = target / f".{f.name}.tmp"
                shutil.copy2(f, tmp)
                os.replace(tmp, target / f.name)
    except OSError as exc:
        from ..store import _explain

        raise _explain(store.path, exc) from None
    readme = Path(spec_path).parent / "README.md"
    pm = pd.read_csv(snapshot / "pair_metrics.csv")
    done = pd.read_csv(snapshot / "jobs.csv")
    with store.transaction() as con:  # one transaction: the study is stored whole or not at all
        runner.register(store, spec, description=readme.read_text() if readme.exists() else "")
        store.add_results(spec.name, pd.read_csv(snapshot / "results.csv", keep_default_na=True))
        if len(pm):
            store.add_pair_metrics(spec.name, pm)
        con.executemany(
            "INSERT OR IGNORE INTO jobs(study_id, kind, unit_key, payload, status, progress, message, "
            "attempts, created_at, updated_at) VALUES (?,?,?,?, 'done', 1, 'shipped result', 0, 0, 0)",
            [(spec.name, r.kind, r.unit_key, r.payload) for r in done.itertuples()])
    return spec.name
