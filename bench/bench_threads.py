"""Threads chosen on purpose (issue 27, item 1): the same work as whole processes under each thread
setting, idle and beside a competing CPU load this script starts itself.

    .venv/bin/python bench/bench_threads.py [--shape tiny|smollm2-135m|qwen2-0.5b] [--load 0 2] [--pairs 3]

Workloads, each a fresh process reading from disk:

- ``eval``: label-scoring-shaped forward passes (``--batches`` batches of 16 rows × 64 tokens, no
  gradient) of a random base at the shape's config;
- ``ties``: ``mergelab merge --method ties`` of 8 rank-16 adapters (q, k, v, o), written to disk.

Settings: ``1`` (one thread), ``2-active`` (two threads, OpenMP spin-waiting: torch's own default on
this 2-core box before MergeLab chose), ``2-passive`` (two threads, passive waiting) and ``default``
(nothing set: what MergeLab now chooses — passive, threads from affinity and cgroup quota). Runs are
interleaved (1, 2-active, 2-passive, default, 1, …) so drift hits every setting alike. ``--load N``
starts N busy processes at normal priority for the measurement (0 = idle). Prints wall seconds as
median (min–max) and the ratio of each setting's median to one thread's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_merge_process import SHAPES, build  # noqa: E402

# SmolLM2-135M's config (the bundled LLM study's base), for a forward pass with real per-op work
SHAPES.update({
    "smollm2-135m": (
        "llama",
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
        ),
    ),
})  # fmt: skip

SETTINGS = {
    "1": {"MERGELAB_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
    "2-active": {"MERGELAB_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "2-passive": {"MERGELAB_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "default": {},
}

# mergelab first, as in every MergeLab process: OpenMP reads its wait policy when torch loads it
# (before 2026-12-03 22:30 this script imported torch first, so its "default" eval rows measured
# OpenMP's own waiting, not MergeLab's choice)
EVAL = """
import sys, time
import mergelab  # chooses threads and waiting before torch's OpenMP starts
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
g = torch.Generator().manual_seed(0)
ids = torch.randint(0, model.config.vocab_size, (int(sys.argv[2]), 16, 64), generator=g)
with torch.inference_mode():
    for batch in ids:
        model(input_ids=batch).logits[:, -1].log_softmax(-1)
"""


def spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(cmd: list[str], setting: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MERGELAB_THREADS")}
    env.update(SETTINGS[setting])
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} … failed under {setting}: {proc.stderr[-600:]}")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="tiny")
    parser.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy processes beside each run")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of every setting")
    parser.add_argument("--workloads", nargs="+", default=["eval", "ties"], choices=["eval", "ties"])
    parser.add_argument("--batches", type=int, default=4, help="eval batches of 16 rows × 64 tokens")
    args = parser.parse_args()
    import torch

    from mergelab import threads

    print(
        f"# bench_threads: shape {args.shape}, {os.cpu_count()} CPUs, {threads.usable_cores()} usable "
        f"(affinity + cgroup quota), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, adapters = build(args.shape, work)
        commands = {
            "eval": [sys.executable, "-c", EVAL, str(base), str(args.batches)],
            "ties": [
                sys.executable, "-m", "mergelab", "merge", "--base", str(base),
                "--adapters", *map(str, adapters), "--method", "ties", "--out", str(work / "merged"),
            ],
        }  # fmt: skip
        for load in args.load:
            spinners = [spinner() for _ in range(load)]
            try:
                for workload in args.workloads:
                    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
                    for _ in range(args.pairs):
                        for setting in SETTINGS:
                            times[setting].append(run(commands[workload], setting))
                    one = statistics.median(times["1"])
                    for setting, values in times.items():
                        med = statistics.median(values)
                        print(
                            f"{workload:5s} load {load}  {setting:9s} {med:7.2f} s "
                            f"({min(values):.2f}–{max(values):.2f})  ×{med / one:.2f} of 1 thread"
                        )
            finally:
                for p in spinners:
                    p.kill()


if __name__ == "__main__":
    main()
