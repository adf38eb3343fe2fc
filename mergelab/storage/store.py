"""The SQLite store (WAL mode): every result is a row keyed by what determines it.

Studies of every kind — the paper's published tables and live studies alike — are served through
this one interface, so pages never need to know where numbers came from. Only the ``storage``
package writes SQL: everything else calls the named methods here (and in :mod:`.jobs`,
:mod:`.states`, :mod:`.snapshot`). A killed writer loses at most its open transaction.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

import pandas as pd

from . import schema
from . import states as states_files
from .errors import explain
from .roles import Swap

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "group_name",
    "model",
    "task",
    "method",
    "params_hash",
    "seed",
    "metric",
    "score",
    "expert_score",
    "loss",
    "source",
    "higher_is_better",
    "aggregation",
]
#: what identifies the result a per-row record belongs to (a result's key, less its metric)
RECORD_KEY = ["group_name", "model", "task", "method", "params_hash", "seed"]
RECORD_COLUMNS = [*RECORD_KEY, "row", "row_id", "score", "reference", "prediction", "label_logprobs", "weight"]


INSERT_RESULTS = (
    f"INSERT OR REPLACE INTO results(study_id, {', '.join(RESULT_COLUMNS)}, created_at) "
    f"VALUES ({', '.join('?' * (len(RESULT_COLUMNS) + 2))})"
)


def result_tuples(study_id: str, rows, now: float | None = None) -> list[tuple]:
    """Result rows as tuples for ``results``, missing optional columns at their defaults."""
    df = pd.DataFrame(rows)
    defaults = {
        "params_hash": "",
        "seed": 0,
        "metric": "score",
        "expert_score": None,
        "loss": None,
        "score": None,
        "source": "computed",
        "group_name": "",
        "higher_is_better": 1,
        "aggregation": "mean",
    }
    for col, val in defaults.items():
        if col not in df.columns:
            df[col] = val
    for col in ("group_name", "params_hash"):  # key columns: '' rather than NULL (CSV round trip)
        df[col] = df[col].fillna("").astype(str)
    df["higher_is_better"] = df["higher_is_better"].fillna(1).astype(bool).astype(int)
    df["aggregation"] = df["aggregation"].fillna("mean").astype(str)
    now = time.time() if now is None else now
    return [
        (study_id, *[None if pd.isna(v) else v for v in rec], now)
        for rec in df[RESULT_COLUMNS].itertuples(index=False, name=None)
    ]


def record_tuples(study_id: str, rows) -> list[tuple]:
    """Per-row records as tuples for ``row_records`` (``label_logprobs`` lists as JSON text)."""
    frame = pd.DataFrame(rows)
    for col, default in (
        ("params_hash", ""),
        ("seed", 0),
        ("group_name", ""),
        ("reference", None),
        ("label_logprobs", None),
        ("prediction", None),
        ("weight", None),
    ):
        if col not in frame.columns:
            frame[col] = default
    frame["label_logprobs"] = [_logprobs_text(v) for v in frame["label_logprobs"]]
    return [
        (study_id, *[None if (not isinstance(v, (list, str)) and pd.isna(v)) else v for v in rec])
        for rec in frame[RECORD_COLUMNS].itertuples(index=False, name=None)
    ]


def _logprobs_text(value) -> str | None:
    """Label log-likelihoods as JSON text; None (or NaN, as a parquet round trip gives) stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return None  # NaN: a generation row
    return json.dumps([round(float(x), 5) for x in value])


INSERT_RECORDS = (
    f"INSERT OR REPLACE INTO row_records(study_id, {', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(RECORD_COLUMNS) + 1))})"
)


def busy_timeout_s() -> float:
    """How long a write waits for another process's transaction: 30 s, or ``$MERGELAB_BUSY_TIMEOUT_S``
    (a test knob; long work that may exceed it runs under :meth:`Store.exclusive` instead)."""
    try:
        return max(0.1, float(os.environ.get("MERGELAB_BUSY_TIMEOUT_S", "") or 30.0))
    except ValueError:
        return 30.0


class Store:
    """One SQLite database file in WAL mode. Cheap to open; safe across processes. Opening a
    store made by an older release migrates it (:mod:`.schema`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()  # the open transaction of this thread, if any
        self.migrated_from: int | None = None  # the schema version this open upgraded, if any
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as con:
                con.execute("PRAGMA journal_mode=WAL")
                current = schema.version(con)
            if current != schema.SCHEMA_VERSION:
                with self.transaction() as con:
                    self.migrated_from = schema.upgrade(con)
                if self.migrated_from:
                    log.warning(
                        "store %s migrated from schema %s to %s", self.path, self.migrated_from, schema.SCHEMA_VERSION
                    )
        except (sqlite3.Error, OSError) as exc:
            raise explain(self.path, exc) from None

    @property
    def states_root(self) -> Path:
        """The folder beside the store file that holds hidden-state files (see :mod:`.states`)."""
        return self.path.parent / "states"

    def _connect(self) -> sqlite3.Connection:
        busy = busy_timeout_s()
        con = sqlite3.connect(self.path, timeout=busy, isolation_level=None)
        con.execute("PRAGMA foreign_keys=ON")
        con.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
        return con

    @contextmanager
    def exclusive(self, name: str):
        """Hold an exclusive lock named ``name`` for this store, across processes on this machine
        (a file lock beside the store file), waiting as long as another process holds it: for work
        that may outlast SQLite's busy timeout, such as loading the bundled studies."""
        import fcntl

        with open(self.path.parent / f".{self.path.name}.{name}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self):
        """A write transaction: everything inside lands together or not at all. A transaction
        opened inside another (same store, same thread) joins it, so several store calls can be
        made one (see :meth:`batch`). SQLite errors become one-line :class:`StoreError` s; a failure
        SQLite already rolled back itself (a full disk) is reported as what it is, never as
        'cannot rollback'."""
        outer = getattr(self._local, "con", None)
        if outer is not None:
            yield outer
            return
        try:
            con = self._connect()
        except sqlite3.Error as exc:
            raise explain(self.path, exc) from None
        self._local.con = con
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            if con.total_changes:  # it wrote: the content the caches know it by has changed
                con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
            con.execute("COMMIT")
        except BaseException as exc:
            if con.in_transaction:
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth reporting
            if isinstance(exc, sqlite3.Error):
                raise explain(self.path, exc) from None
            raise
        finally:
            self._local.con = None
            con.close()

    @contextmanager
    def batch(self):
        """Make every store call inside one transaction: all land, or none."""
        with self.transaction():
            yield self

    def query(self, sql: str, params=()) -> pd.DataFrame:
        """A read as a DataFrame (inside an open :meth:`transaction`, it sees that transaction's writes).
        SQL belongs to the storage package: modules outside it call the named methods instead."""
        return self._read(sql, params)

    def _read(self, sql: str, params=()) -> pd.DataFrame:
        try:
            outer = getattr(self._local, "con", None)
            if outer is not None:  # inside a transaction: see its own writes
                return pd.read_sql_query(sql, outer, params=params)
            with closing(self._connect()) as con:
                return pd.read_sql_query(sql, con, params=params)
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            raise explain(self.path, exc) from None

    def schema_version(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='schema_version'")["value"].iloc[0])

    def content_stamp(self) -> tuple:
        """Changes whenever the store's rows change (for caches keyed by the store's content, in this
        process or another): the store's own id and the revision every write transaction advances
        (:meth:`transaction`). Files' sizes and times would not do: SQLite checkpoints the WAL into
        the database when a process's last connection closes, so the same rows would look new to the
        next process. A store whose meta lacks them (written by hand) falls back to the files'."""
        try:
            with closing(self._connect()) as con:
                rows = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('store_id', 'revision')").fetchall())
        except sqlite3.Error as exc:
            raise explain(self.path, exc) from None
        if len(rows) == 2:
            return (rows["store_id"], int(rows["revision"]))
        return tuple(
            (f.stat().st_size, f.stat().st_mtime_ns) if f.exists() else None
            for f in (self.path, Path(str(self.path) + "-wal"))
        )

    # --- studies --------------------------------------------------------------------------
    def upsert_study(self, study_id: str, name: str, kind: str, description: str | None = None, spec: str = "") -> None:
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

    def study(self, study_id: str) -> dict | None:
        """id, name, kind, description and spec (YAML text, '' for published studies)."""
        df = self.query("SELECT id, name, kind, description, spec FROM studies WHERE id=?", (study_id,))
        return df.iloc[0].to_dict() if len(df) else None

    def spec_text(self, study_id: str) -> str:
        row = self.study(study_id)
        return row["spec"] if row and row["spec"] else ""

    def delete_study(self, study_id: str) -> None:
        """Remove a study with every row that belongs to it (results, jobs, metrics) and its
        hidden-state files."""
        with self.transaction() as con:
            con.execute("DELETE FROM jobs WHERE study_id=?", (study_id,))
            con.execute("DELETE FROM studies WHERE id=?", (study_id,))  # the rest cascades
        shutil.rmtree(states_files.states_dir(self.states_root, study_id), ignore_errors=True)

    # --- groups, pairs and the pool -----------------------------------------------------------
    def set_groups(
        self, study_id: str, groups: dict[str, list[str]], role: str = "group", meta: dict[str, dict] | None = None
    ) -> None:
        """Store task groups with ``role`` (see :mod:`.roles`); ``meta``: per group name, what its
        role needs (a swap's parent, removed and added task)."""
        meta = meta or {}
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO task_groups(study_id, name, tasks, role, meta) VALUES (?,?,?,?,?)",
                [
                    (study_id, name, json.dumps(list(tasks)), role, json.dumps(meta[name]) if name in meta else "")
                    for name, tasks in groups.items()
                ],
            )

    def set_pool(self, study_id: str, tasks: list[str]) -> None:
        """The spare tasks a group may swap in (a role, not a group: no merge, no analysis)."""
        with self.transaction() as con:
            con.execute("DELETE FROM task_groups WHERE study_id=? AND role='pool'", (study_id,))
            if tasks:
                con.execute(
                    "INSERT INTO task_groups(study_id, name, tasks, role) VALUES (?, 'pool', ?, 'pool')",
                    (study_id, json.dumps(list(tasks))),
                )

    def groups(self, study_id: str, role: str | tuple[str, ...] = "group") -> dict[str, list[str]]:
        """Task groups of a study with ``role`` (one, or a tuple of them): 'group' — drawn or
        declared, the evidence — by default; 'swap', 'pair' (see :mod:`.roles`)."""
        roles = (role,) if isinstance(role, str) else tuple(role)
        df = self.query(
            f"SELECT name, tasks FROM task_groups WHERE study_id=? AND role IN "
            f"({', '.join('?' * len(roles))}) ORDER BY rowid",
            (study_id, *roles),
        )
        return {r.name: json.loads(r.tasks) for r in df.itertuples()}

    def swaps(self, study_id: str) -> dict[str, Swap]:
        """The study's swap groups: name → its parent group, removed and added task."""
        df = self.query(
            "SELECT name, meta FROM task_groups WHERE study_id=? AND role='swap' ORDER BY rowid", (study_id,)
        )
        out = {}
        for r in df.itertuples():
            meta = json.loads(r.meta) if r.meta else {}
            out[r.name] = Swap(r.name, meta.get("parent", ""), meta.get("removed", ""), meta.get("added", ""))
        return out

    def pool(self, study_id: str) -> list[str]:
        df = self.query("SELECT tasks FROM task_groups WHERE study_id=? AND role='pool'", (study_id,))
        return json.loads(df["tasks"].iloc[0]) if len(df) else []

    # --- results --------------------------------------------------------------------------
    def add_results(self, study_id: str, rows: pd.DataFrame | list[dict]) -> int:
        """Insert or replace result rows atomically. Missing optional columns get defaults."""
        records = result_tuples(study_id, rows)
        with self.transaction() as con:
            con.executemany(INSERT_RESULTS, records)
        return len(records)

    def results(self, study_id: str) -> pd.DataFrame:
        return self.query(
            f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE study_id=? ORDER BY rowid",
            (study_id,),
        )

    def add_row_records(self, study_id: str, rows: pd.DataFrame | list[dict]) -> int:
        """Insert or replace per-row records (see :data:`RECORD_COLUMNS`) atomically."""
        records = record_tuples(study_id, rows)
        with self.transaction() as con:
            con.executemany(INSERT_RECORDS, records)
        return len(records)

    def row_records(self, study_id: str, tasks: list[str] | None = None) -> pd.DataFrame:
        """Per-row records of a study (of ``tasks`` only, if given), ``label_logprobs`` as JSON text."""
        where, args = "study_id=?", [study_id]
        if tasks is not None:
            where += f" AND task IN ({', '.join('?' * len(tasks))})"
            args += list(tasks)
        return self.query(
            f"SELECT {', '.join(RECORD_COLUMNS)} FROM row_records WHERE {where} ORDER BY rowid", tuple(args)
        )

    def add_task_metrics(self, study_id: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows)
        if "source" not in df.columns:
            df["source"] = "computed"
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO task_metrics(study_id, group_name, task, name, value, source) "
                "VALUES (?,?,?,?,?,?)",
                [(study_id, r.group_name, r.task, r.name, float(r.value), r.source) for r in df.itertuples()],
            )

    def task_metrics(self, study_id: str) -> pd.DataFrame:
        return self.query(
            "SELECT group_name, task, name, value, source FROM task_metrics WHERE study_id=? ORDER BY rowid",
            (study_id,),
        )

    def add_pair_metrics(self, study_id: str, rows: list[dict] | pd.DataFrame) -> None:
        df = pd.DataFrame(rows)
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO pair_metrics(study_id, task_a, task_b, name, value) VALUES (?,?,?,?,?)",
                [(study_id, r.task_a, r.task_b, r.name, float(r.value)) for r in df.itertuples()],
            )

    def pair_metrics(self, study_id: str) -> pd.DataFrame:
        return self.query("SELECT task_a, task_b, name, value FROM pair_metrics WHERE study_id=?", (study_id,))

    def add_published_stats(self, study_id: str, rows: list[dict]) -> None:
        with self.transaction() as con:
            con.executemany(
                "INSERT OR REPLACE INTO published_stats(study_id, ref, key, value) VALUES (?,?,?,?)",
                [(study_id, r["ref"], r["key"], float(r["value"])) for r in rows],
            )

    def published_stats(self, study_id: str) -> pd.DataFrame:
        return self.query("SELECT ref, key, value FROM published_stats WHERE study_id=?", (study_id,))
