"""SQLite store (WAL mode): every result is a row keyed by what determines it.

Studies of every kind — the paper's published tables and live studies alike — are served
through this one interface, so pages never need to know where numbers came from. Jobs live
here too (the runner claims them); a killed writer loses at most its open transaction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
    description TEXT DEFAULT '', spec TEXT DEFAULT '', created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    name TEXT NOT NULL, role TEXT NOT NULL, source TEXT DEFAULT '', meta TEXT DEFAULT '{}',
    PRIMARY KEY (study_id, name)
);
CREATE TABLE IF NOT EXISTS tasks (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    name TEXT NOT NULL, metric TEXT DEFAULT '', meta TEXT DEFAULT '{}',
    PRIMARY KEY (study_id, name)
);
CREATE TABLE IF NOT EXISTS task_groups (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    name TEXT NOT NULL, tasks TEXT NOT NULL, role TEXT DEFAULT 'group',
    PRIMARY KEY (study_id, name)
);
CREATE TABLE IF NOT EXISTS runs (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    params_hash TEXT NOT NULL, method TEXT NOT NULL, params TEXT NOT NULL,
    PRIMARY KEY (study_id, params_hash)
);
CREATE TABLE IF NOT EXISTS results (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL, model TEXT NOT NULL, task TEXT NOT NULL, method TEXT NOT NULL,
    params_hash TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL DEFAULT 0,
    metric TEXT NOT NULL DEFAULT 'score', score REAL, expert_score REAL, loss REAL,
    source TEXT NOT NULL DEFAULT 'computed', created_at REAL NOT NULL,
    PRIMARY KEY (study_id, group_name, model, task, method, params_hash, seed, metric)
);
CREATE TABLE IF NOT EXISTS hidden_distances (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    task_a TEXT NOT NULL, task_b TEXT NOT NULL, distance TEXT NOT NULL DEFAULT 'l2',
    layer INTEGER NOT NULL DEFAULT -1, pooling TEXT NOT NULL DEFAULT 'last', k INTEGER NOT NULL,
    value REAL NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (study_id, task_a, task_b, distance, layer, pooling, k)
);
CREATE TABLE IF NOT EXISTS task_metrics (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL, task TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    source TEXT NOT NULL DEFAULT 'computed',
    PRIMARY KEY (study_id, group_name, task, name, source)
);
CREATE TABLE IF NOT EXISTS pair_metrics (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    task_a TEXT NOT NULL, task_b TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (study_id, task_a, task_b, name)
);
CREATE TABLE IF NOT EXISTS published_stats (
    study_id TEXT NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    ref TEXT NOT NULL, key TEXT NOT NULL, value REAL,
    PRIMARY KEY (study_id, ref, key)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id TEXT NOT NULL, kind TEXT NOT NULL, unit_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'queued',
    progress REAL NOT NULL DEFAULT 0, message TEXT DEFAULT '', worker TEXT,
    heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""

TABLES = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)

RESULT_COLUMNS = [
    "group_name", "model", "task", "method", "params_hash", "seed", "metric",
    "score", "expert_score", "loss", "source",
]


class StoreError(RuntimeError):
    """The store cannot be opened or written (the message says which file and why)."""


def _explain(path: Path, exc: BaseException) -> StoreError:
    """One line a user can act on, for an SQLite or file-system error on the store at ``path``."""
    text = str(exc)
    low = text.lower()
    if path.is_dir():
        return StoreError(f"the store {path} is a folder; give a file such as {path / 'mergelab.db'}")
    if "is full" in low or "no space left" in low or "os error 28" in low or getattr(exc, "errno", None) == 28:
        return StoreError(f"the disk holding the store {path} is full ({text}); nothing stored was lost "
                          "— free some space and run again")
    writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if "readonly" in low or "read-only" in low or (not writable and ("unable to open" in low or "denied" in low)):
        return StoreError(f"the store {path} is read-only for this user ({text}); give a store you may "
                          "write with --db or $MERGELAB_DB")
    if "not a database" in low or "malformed" in low:
        return StoreError(f"{path} is not a MergeLab store (not a readable SQLite database: {text})")
    return StoreError(f"cannot use the MergeLab store at {path}: {text}")


class Store:
    """One SQLite database file in WAL mode. Cheap to open; safe across processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()  # the open transaction of this thread, if any
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as con:
                con.execute("PRAGMA journal_mode=WAL")
                have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if not set(TABLES) <= have:  # a new or older store: create what is missing
                    con.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise _explain(self.path, exc) from None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @contextmanager
    def transaction(self):
        """A write transaction: everything inside lands together or not at all. A transaction
        opened inside another (same store, same thread) joins it, so several store calls can be
        made one. SQLite errors become one-line :class:`StoreError` s; a failure SQLite already
        rolled back itself (a full disk) is reported as what it is, never as 'cannot rollback'."""
        outer = getattr(self._local, "con", None)
        if outer is not None:
            yield outer
            return
        try:
            con = self._connect()
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        self._local.con = con
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException as exc:
            if con.in_transaction:
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth reporting
            if isinstance(exc, sqlite3.Error):
                raise _explain(self.path, exc) from None
            raise
        finally:
            self._local.con = None
            con.close()

    def query(self, sql: str, params=()) -> pd.DataFrame:
        try:
            outer = getattr(self._local, "con", None)
            if outer is not None:  # inside a transaction: see its own writes
                return pd.read_sql_query(sql, outer, params=params)
            with closing(self._connect()) as con:
                return pd.read_sql_query(sql, con, params=params)
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            raise _explain(self.path, exc) from None

    # --- files beside the store ------------------------------------------------------------
    def states_path(self, study_id: str, name: str) -> Path:
        """The file holding one unit's hidden states: ``states/<study>/<name>.safetensors`` beside
        the store. Checked, not assumed, to lie inside the store's folder."""
        root = (self.path.parent / "states").resolve()
        path = (root / study_id / f"{name}.safetensors").resolve()
        if not path.is_relative_to(root) or path.parent.parent != root:
            raise StoreError(f"refusing to write outside the store's folder: study {study_id!r}, "
                             f"file {name!r} would land at {path}")
        return path

    def states_dir(self, study_id: str) -> Path:
        return self.states_path(study_id, "x").parent

    def write_states(self, study_id: str, name: str, tensors: dict, metadata: dict[str, str]) -> Path:
        """Write one unit's hidden states (safetensors, never a pickle) atomically: a temporary
        file, then a rename. A full disk or a read-only folder is one :class:`StoreError`."""
        from safetensors.torch import save_file

        path = self.states_path(study_id, name)
        tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        except Exception as exc:  # OSError, or safetensors' own error wrapping one
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _explain(self.path, exc) from None
        return path

    # --- studies --------------------------------------------------------------------------
    def upsert_study(self, study_id: str, name: str, kind: str, description: str | None = None,
                     spec: str = "") -> None:
        """Create or update a study; ``description=None`` keeps the stored one."""
        with self.transaction() as con:
            con.execute(
                "INSERT INTO studies(id, name, kind, description, spec, created_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET name=excluded.name, "
                "kind=excluded.kind, spec=excluded.spec"
                + (", description=excluded.description" if description is not None else ""),
                (study_id, name, kind, description or "", spec, time.time()),
            )

    def studies(self) -> pd.DataFrame:
        return self.query("SELECT id, name, kind, description FROM studies ORDER BY created_at")

    def has_study(self, study_id: str) -> bool:
        return not self.query("SELECT 1 FROM studies WHERE id=?", (study_id,)).empty

    def delete_study(self, study_id: str) -> None:
        """Remove a study with every row that belongs to it (results, jobs, metrics) and its
        hidden-state files."""
        with self.transaction() as con:
            con.execute("DELETE FROM jobs WHERE study_id=?", (study_id,))
            con.execute("DELETE FROM studies WHERE id=?", (study_id,))  # the rest cascades
        shutil.rmtree(self.states_dir(study_id), ignore_errors=True)

    # --- study structure ------------------------------------------------------------------
    def set_models(self, study_id: str, rows: list[dict]) -> None:
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO models(study_id, name, role, source, meta) VALUES (?,?,?,?,?)",
                [(study_id, r["name"], r["role"], r.get("source", ""),
                  json.dumps(r.get("meta", {}))) for r in rows],
            )

    def set_tasks(self, study_id: str, rows: list[dict]) -> None:
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO tasks(study_id, name, metric, meta) VALUES (?,?,?,?)",
                [(study_id, r["name"], r.get("metric", ""), json.dumps(r.get("meta", {})))
                 for r in rows],
            )

    def set_groups(self, study_id: str, groups: dict[str, list[str]], role: str = "group") -> None:
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO task_groups(study_id, name, tasks, role) VALUES (?,?,?,?)",
                [(study_id, name, json.dumps(list(tasks)), role) for name, tasks in groups.items()],
            )

    def groups(self, study_id: str, role: str | None = None) -> dict[str, list[str]]:
        """Task groups of a study; ``role="group"`` leaves out the pool of spare tasks."""
        df = self.query("SELECT name, tasks FROM task_groups WHERE study_id=? AND role=COALESCE(?, role) "
                        "ORDER BY rowid", (study_id, role))
        return {r.name: json.loads(r.tasks) for r in df.itertuples()}

    def models(self, study_id: str) -> pd.DataFrame:
        return self.query("SELECT name, role, source, meta FROM models WHERE study_id=?",
                          (study_id,))

    def tasks(self, study_id: str) -> pd.DataFrame:
        return self.query("SELECT name, metric, meta FROM tasks WHERE study_id=?", (study_id,))

    # --- results --------------------------------------------------------------------------
    def add_results(self, study_id: str, rows: pd.DataFrame | list[dict]) -> int:
        """Insert or replace result rows atomically. Missing optional columns get defaults."""
        df = pd.DataFrame(rows)
        defaults = {"params_hash": "", "seed": 0, "metric": "score", "expert_score": None,
                    "loss": None, "score": None, "source": "computed", "group_name": ""}
        for col, val in defaults.items():
            if col not in df.columns:
                df[col] = val
        for col in ("group_name", "params_hash"):  # key columns: '' rather than NULL (CSV round trip)
            df[col] = df[col].fillna("").astype(str)
        now = time.time()
        records = [
            (study_id, *[None if pd.isna(v) else v for v in rec], now)
            for rec in df[RESULT_COLUMNS].itertuples(index=False, name=None)
        ]
        with self.transaction() as con:
            con.executemany(
                f"INSERT OR REPLACE INTO results(study_id, {', '.join(RESULT_COLUMNS)}, created_at) "
                f"VALUES ({', '.join('?' * (len(RESULT_COLUMNS) + 2))})",
                records,
            )
        return len(records)

    def results(self, study_id: str) -> pd.DataFrame:
        return self.query(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE study_id=? ORDER BY rowid",
            (study_id,),
        )

    def add_task_metrics(self, study_id: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows)
        if "source" not in df.columns:
            df["source"] = "computed"
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO task_metrics(study_id, group_name, task, name, value, source) "
                "VALUES (?,?,?,?,?,?)",
                [(study_id, r.group_name, r.task, r.name, float(r.value), r.source)
                 for r in df.itertuples()],
            )

    def task_metrics(self, study_id: str) -> pd.DataFrame:
        return self.query(
            "SELECT group_name, task, name, value, source FROM task_metrics WHERE study_id=? "
            "ORDER BY rowid", (study_id,))

    def add_hidden_distances(self, study_id: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows)
        now = time.time()
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO hidden_distances(study_id, task_a, task_b, distance, layer, "
                "pooling, k, value, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                [(study_id, r.task_a, r.task_b, r.distance, int(r.layer), r.pooling, int(r.k),
                  float(r.value), now) for r in df.itertuples()],
            )

    def hidden_distances(self, study_id: str) -> pd.DataFrame:
        return self.query(
            "SELECT task_a, task_b, distance, layer, pooling, k, value FROM hidden_distances "
            "WHERE study_id=? ORDER BY rowid", (study_id,))

    def add_pair_metrics(self, study_id: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows)
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO pair_metrics(study_id, task_a, task_b, name, value) "
                "VALUES (?,?,?,?,?)",
                [(study_id, r.task_a, r.task_b, r.name, float(r.value)) for r in df.itertuples()],
            )

    def pair_metrics(self, study_id: str) -> pd.DataFrame:
        return self.query("SELECT task_a, task_b, name, value FROM pair_metrics WHERE study_id=?",
                          (study_id,))

    def add_published_stats(self, study_id: str, rows: list[dict]) -> None:
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO published_stats(study_id, ref, key, value) VALUES (?,?,?,?)",
                [(study_id, r["ref"], r["key"], float(r["value"])) for r in rows],
            )

    def published_stats(self, study_id: str) -> pd.DataFrame:
        return self.query("SELECT ref, key, value FROM published_stats WHERE study_id=?",
                          (study_id,))
