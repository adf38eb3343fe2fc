"""Recompute a sample of a study's finished units from scratch, in a copy of its store, and compare
what they store with what was there: each unit's scores and every per-row record. A researcher's
check that a shipped study is what its spec computes on this machine (`mergelab run --recompute`
does the same for every unit).

    .venv/bin/python bench/reproduce_units.py data/llm/study.yaml --db .mergelab/llm.db \\
        --per-kind 1 --seed 0

Copies the store (and its hidden-state files) to a temporary folder, requeues ``--per-kind``
finished score units of each kind and role (base, expert, group merge, swap merge, pair merge) drawn
with ``--seed``, runs one worker on them, and prints per unit: the largest score difference and how
many of its per-row records changed. Exit status 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _role(payload: dict) -> str:
    group = str(payload.get("group", ""))
    return "swap" if group.startswith("swap:") else "pair" if group.startswith("pair:") else "group" if group else ""


def main() -> int:
    from mergelab.storage import jobs
    from mergelab.storage.store import Store
    from mergelab.study import executors, planner
    from mergelab.study.spec import parse_spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--db", required=True)
    ap.add_argument("--per-kind", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    study = parse_spec(Path(args.spec)).name
    work = Path(tempfile.mkdtemp(prefix="mergelab-reproduce-"))
    shutil.copyfile(args.db, work / "m.db")
    states = Path(args.db).parent / "states"
    if states.exists():
        shutil.copytree(states, work / "states")
    store = Store(work / "m.db")
    planner.prepare(store, Path(args.spec))  # the spec as stored: nothing new to queue
    frame = jobs.jobs_frame(store, study)
    frame = frame[(frame["status"] == "done") & frame["kind"].isin(["base", "expert", "merge"])]
    rng = random.Random(args.seed)
    picked = []
    for (_, _), sub in frame.groupby([frame["kind"], frame["payload"].map(lambda p: _role(json.loads(p)))]):
        picked += rng.sample(list(sub.itertuples()), min(args.per_kind, len(sub)))
    results, records = store.results(study), store.row_records(study)
    before = {}
    for u in picked:
        p = json.loads(u.payload)
        group = p.get("group", "")
        if u.kind == "merge" and p.get("held_out"):
            group = f"held_out:{group}"
        model = {"base": "base", "expert": f"expert:{p['task']}"}.get(u.kind, f"merged:{group}:{p.get('method')}")
        key = (group if u.kind == "merge" else "", model, p["task"])
        r = results[(results.group_name == key[0]) & (results.model == key[1]) & (results.task == key[2])]
        rec = records[(records.group_name == key[0]) & (records.model == key[1]) & (records.task == key[2])]
        before[u.unit_key] = (u.kind, key, r["score"].tolist(), rec.sort_values("row")["score"].to_numpy())
    jobs.requeue(store, study, [u.unit_key for u in picked])
    started = time.time()
    out = executors.run_worker(store, study)
    took = time.time() - started
    results, records = store.results(study), store.row_records(study)
    worst = 0.0
    changed_rows = 0
    for kind, key, scores, rows in before.values():
        r = results[(results.group_name == key[0]) & (results.model == key[1]) & (results.task == key[2])]
        rec = records[(records.group_name == key[0]) & (records.model == key[1]) & (records.task == key[2])]
        new_rows = rec.sort_values("row")["score"].to_numpy()
        diff = max((abs(a - b) for a, b in zip(scores, r["score"].tolist())), default=float("nan"))
        moved = int((new_rows != rows).sum()) if len(new_rows) == len(rows) else max(len(rows), len(new_rows))
        worst, changed_rows = max(worst, diff), changed_rows + moved
        print(f"{kind:6s} {key[1]:60s} {key[2]:18s} score {scores[0]:8.4f} → {r['score'].iloc[0]:8.4f}  "
              f"rows changed {moved}/{len(rows)}")  # fmt: skip
    print(f"{len(picked)} units recomputed in {took:.0f} s ({out['failed']} failed); largest score difference "
          f"{worst:.3g}; per-row records changed: {changed_rows}")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return 1 if worst > 0 or changed_rows or out["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
