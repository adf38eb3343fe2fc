"""Habits the code keeps (issue 24): formatted by `ruff format`, clean under `ruff check`, and a type
check whose error count per file only shrinks (tests/data/mypy-baseline.json: lower it when you fix
some; never raise it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_check_is_clean():
    res = _run("ruff", "check", ".")
    assert res.returncode == 0, res.stdout[-3000:]


def test_the_code_is_ruff_formatted():
    res = _run("ruff", "format", "--check", ".")
    assert res.returncode == 0, "run `ruff format .`:\n" + res.stdout[-3000:]


def test_type_errors_only_shrink():
    if not (BIN / "mypy").exists():
        pytest.skip("mypy is in requirements-dev.txt")
    res = _run("mypy", "--no-error-summary")
    found: dict[str, int] = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^(mergelab/[^:]+):\d+: error:", line)
        if m:
            found[m.group(1)] = found.get(m.group(1), 0) + 1
    baseline = json.loads((ROOT / "tests" / "data" / "mypy-baseline.json").read_text())
    grown = {f: (n, baseline.get(f, 0)) for f, n in found.items() if n > baseline.get(f, 0)}
    assert not grown, f"type errors grew (now, baseline): {grown}\n" + res.stdout[-3000:]
