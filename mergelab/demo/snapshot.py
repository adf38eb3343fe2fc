"""Ship a computed study as files (rows as CSV, hidden states as float16 safetensors) and load
it into any store, so the dashboard opens on finished results instantly. Job rows come along
marked done, so `mergelab run` on the same spec redoes nothing unless asked to."""

from __future__ import annotations

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
    spec = parse_spec(spec_path)
    runner.register(store, spec, description=(Path(spec_path).parent / "README.md").read_text()
                    if (Path(spec_path).parent / "README.md").exists() else "")
    store.add_results(spec.name, pd.read_csv(snapshot / "results.csv", keep_default_na=True))
    pm = pd.read_csv(snapshot / "pair_metrics.csv")
    if len(pm):
        store.add_pair_metrics(spec.name, pm)
    done = pd.read_csv(snapshot / "jobs.csv")
    with store.transaction() as con:
        con.executemany(
            "INSERT OR IGNORE INTO jobs(study_id, kind, unit_key, payload, status, progress, message, "
            "attempts, created_at, updated_at) VALUES (?,?,?,?, 'done', 1, 'shipped result', 0, 0, 0)",
            [(spec.name, r.kind, r.unit_key, r.payload) for r in done.itertuples()])
    target = runner.states_dir(store, spec.name)
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted((snapshot / "states").glob("*.safetensors")):
        if not (target / f.name).exists():
            shutil.copy2(f, target / f.name)
    return spec.name
