"""The world the fault suites try bad inputs against: a tiny causal study run to completion in a
store, and a snapshot of that store's rows and files to compare before and after."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import yaml

from mergelab.study import executors, planner
from mergelab.study.bundled import open_store

from tinymodels import make_tiny_causal_study


# --- the world the bad inputs are tried against -------------------------------------------------
class World:
    """A tiny causal study run to completion in a store (rows and state files to protect), its
    base and adapters, and a folder of broken variants made on demand."""

    def __init__(self, root: Path):
        self.root = root
        self.spec_path = make_tiny_causal_study(root / "study")
        self.study = self.spec_path.parent
        self.base = self.study / "base"
        self.good = [self.study / "adapters" / f"c{i}" for i in range(3)]
        self.db = root / "store" / "mergelab.db"
        store = open_store(self.db)  # bundled studies loaded once, so later opens write nothing
        planner.prepare(store, self.spec_path)
        out = executors.run_worker(store, "tiny-causal")
        assert out["failed"] == 0
        self.spec = yaml.safe_load(self.spec_path.read_text())
        self.bad = root / "bad"
        self.bad.mkdir()
        self._n = 0

    def fresh(self, name: str) -> Path:
        self._n += 1
        return self.bad / f"{self._n}-{name}"

    def adapter(self, name: str, edit) -> str:
        """A copy of adapter c1 changed by ``edit(folder)``."""
        folder = self.fresh(name)
        shutil.copytree(self.good[1], folder)
        edit(folder)
        return str(folder)

    def base_copy(self, name: str, edit) -> str:
        folder = self.fresh(name)
        shutil.copytree(self.base, folder)
        edit(folder)
        return str(folder)

    def spec_file(self, change=None, text: str | bytes | None = None) -> str:
        """A spec YAML beside the good one (so relative paths resolve), changed by ``change(d)``
        or given as raw ``text``."""
        self._n += 1
        path = self.study / f"bad-{self._n}.yaml"
        if text is not None:
            (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
            return str(path)
        data = json.loads(json.dumps(self.spec))
        change(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)

    def data_file(self, name: str, content: bytes) -> str:
        path = self.study / "data" / f"{name}.jsonl"
        path.write_bytes(content)
        return f"data/{name}.jsonl"


def snapshot(db: Path) -> tuple[str, dict]:
    """Every row of the store (as SQL) and the bytes of every file beside it."""
    con = sqlite3.connect(db)
    try:
        rows = "\n".join(con.iterdump())
    finally:
        con.close()
    files = {
        str(p.relative_to(db.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(db.parent.rglob("*"))
        if p.is_file() and not p.name.startswith(db.name)
    }
    return rows, files


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``mergelab ARGS`` in this process: (exit code, what it wrote to stderr)."""
    from mergelab import cli

    capsys.readouterr()
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_clear_line(code, err: str, expected: str | None = None) -> None:
    """Bad input's contract: exit 2, exactly one non-blank line on stderr, no traceback, and that
    line names ``expected`` (case-insensitive) when given."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err[-1500:]}"
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    if expected is not None:
        assert expected.lower() in lines[0].lower(), lines[0]
