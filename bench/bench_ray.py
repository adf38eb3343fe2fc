"""A study run with the local executor and with Ray actors, on this machine, in one run: wall time,
Ray's start-up, the scheduling overhead per unit, and whether the scores are the same.

    .venv/bin/python bench/bench_ray.py [--cases tiny demo] [--actors 1 2]

Cases: the tests' tiny causal study (15 units: 3 experts, 3 states, 1 group × 2 methods, conflicts)
and the bundled demo study from scratch (MiniLM; every unit of data/demo/study.yaml). Each run
starts from an empty store. The local executor runs units in this process (torch's threads: all
cores); a Ray actor gets 1 CPU (Ray sets one thread per actor). Overhead per unit = (Ray wall −
local wall with the same total threads) / units, reported for 1 actor against local with 1 thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

from mergelab.storage.store import Store  # noqa: E402
from mergelab.study import executors, planner  # noqa: E402


def case_spec(name: str, work: Path) -> Path:
    if name == "tiny":
        from tinymodels import make_tiny_causal_study

        return make_tiny_causal_study(work / "tiny")
    return ROOT / "data" / "demo" / "study.yaml"


def scores(store: Store, study: str) -> dict:
    return {(r.group_name, r.model, r.task, r.method): r.score for r in store.results(study).itertuples()}


def run(spec: Path, db: Path, executor) -> tuple[float, int, dict]:
    store = Store(db)
    spec_obj, counts = planner.prepare(store, spec)
    t = time.perf_counter()
    out = executors.drive(store, spec_obj.name, executor)
    wall = time.perf_counter() - t
    assert out["failed"] == 0, out
    return wall, counts["new"], scores(store, spec_obj.name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["tiny", "demo"])
    parser.add_argument("--actors", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    import ray

    from mergelab.study.ray_executor import RayExecutor

    work = Path(tempfile.mkdtemp(prefix="mergelab-bench-ray-"))
    cores = os.cpu_count()
    print(
        f"# Ray vs local executor — {time.strftime('%Y-%m-%d')} — {cores} cores, torch {torch.__version__}, "
        f"ray {ray.__version__}, device cpu"
    )
    t = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    print(f"ray.init (local cluster, {cores} CPUs): {time.perf_counter() - t:.1f} s")
    print("case,executor,units,wall_s,s_per_unit,max_abs_score_diff_vs_local")
    for case in args.cases:
        spec = case_spec(case, work)
        local = {}
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            wall, units, ref = run(spec, work / f"{case}_local{threads}.db", executors.InProcess())
            local[threads] = (wall, ref)
            label = f"local ({threads} thread{'s' if threads > 1 else ''})"
            print(f"{case},{label},{units},{wall:.1f},{wall / units:.3f},0", flush=True)
        torch.set_num_threads(cores)
        for n in args.actors:
            t = time.perf_counter()
            ex = RayExecutor(actors=n)
            start = time.perf_counter() - t
            wall, units, got = run(spec, work / f"{case}_ray{n}.db", ex)
            ex.close()
            ref = local[cores][1]
            diff = max(abs(got[k] - ref[k]) for k in ref) if got.keys() == ref.keys() else float("nan")
            print(
                f"{case},ray ({n} actor{'s' if n > 1 else ''}; actors started in {start:.1f} s),{units},{wall:.1f},"
                f"{wall / units:.3f},{diff:.1e}",
                flush=True,
            )
            if n == 1:
                over = (wall - local[1][0]) / units
                print(
                    f"{case},scheduling overhead per unit (1 actor vs local 1 thread),{units},—,{over:.3f},—",
                    flush=True,
                )
    ray.shutdown()


if __name__ == "__main__":
    main()
