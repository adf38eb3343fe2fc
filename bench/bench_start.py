"""How long the CLI takes to start, as a user waits for it: whole processes, medians with min–max,
and whether torch or transformers were imported at all (Python's -X importtime).

    .venv/bin/python bench/bench_start.py [--repeat 5]

Commands that need no model must not import torch (goal: under 1 s on 2 cores); `mergekit-yaml
--help` is timed beside them for scale.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MERGELAB = [sys.executable, "-m", "mergelab"]


def commands(work: Path) -> dict[str, list[str]]:
    return {
        "mergelab --help": [*MERGELAB, "--help"],
        "mergelab methods": [*MERGELAB, "methods"],
        "mergelab report demo": [*MERGELAB, "report", "--study", "demo", "--db", str(work / "m.db")],
        "mergelab export-mergekit": [
            *MERGELAB,
            "export-mergekit",
            "--base",
            "org/base",
            "--adapters",
            "org/a",
            "org/b",
            "--method",
            "ties",
            "--out",
            str(work / "merge.yaml"),
        ],
        "mergelab run --help": [*MERGELAB, "run", "--help"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "mergekit-yaml --help": [str(Path(sys.executable).parent / "mergekit-yaml"), "--help"],
    }


def heavy_imports(cmd: list[str]) -> str:
    if cmd[0] != sys.executable:
        return "—"
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True).stderr
    mods = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in err.splitlines() if "|" in line}
    return ", ".join(m for m in ("torch", "transformers", "peft", "mergekit") if m in mods) or "none"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mergelab-start-"))
    # the store (with the bundled studies) made once, before the timings
    subprocess.run([*MERGELAB, "report", "--study", "demo", "--db", str(work / "m.db")], capture_output=True)
    print(f"# CLI start — {time.strftime('%Y-%m-%d')} — whole processes, {args.repeat} runs each")
    print("command,median_s,min_s,max_s,exit,heavy_imports")
    for name, cmd in commands(work).items():
        times, code = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            code = subprocess.run(cmd, capture_output=True).returncode
            times.append(time.perf_counter() - t)
        print(
            f"{name},{statistics.median(times):.2f},{min(times):.2f},{max(times):.2f},{code},{heavy_imports(cmd)}",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
