"""Job rows: enqueue, claim atomically, heartbeat, finish with the unit's output in one
transaction, recover the claims of dead or silent workers, give a unit up after it crashed its
worker ``MAX_ATTEMPTS`` times. A killed worker loses at most the unit it was running.

A unit's output (:class:`UnitOutput`) is plain data — result rows, pair-metric rows and hidden-state
arrays — handed over by whoever ran it (this process, a worker process, a Ray actor); only this
module and its store write it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import states as states_io
from .errors import StoreError
from .store import INSERT_RECORDS, INSERT_RESULTS, Store, record_tuples, result_tuples

STALE_AFTER_S = 60.0
#: A unit whose worker died this many times (killed, out of memory) is failed for good.
MAX_ATTEMPTS = 3


@dataclass
class UnitOutput:
    """What running one unit produced: rows for ``results``, ``row_records`` (one per eval row of
    each result) and ``pair_metrics``, and hidden states as ``{file name: (arrays by pooling,
    metadata)}``."""

    results: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    pair_metrics: list[dict] = field(default_factory=list)
    states: dict[str, tuple[dict[str, np.ndarray], dict[str, str]]] = field(default_factory=dict)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie — exited, not yet reaped — does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)


def worker_alive(worker: str) -> bool | None:
    """True/False for a worker of this machine (by its process id); None for one elsewhere."""
    try:
        host, pid, _ = worker.rsplit(":", 2)
        pid = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return _process_alive(pid)


def _requeue_crashed(con, where: str, args: tuple, why: str) -> int:
    """Claims matching ``where`` go back to the queue — or fail for good once they have crashed
    their worker MAX_ATTEMPTS times."""
    failed = con.execute(
        f"UPDATE jobs SET status='failed', worker=NULL, error=?, message=?, updated_at=? "
        f"WHERE status='running' AND attempts >= ? AND {where}",
        (
            f"the unit stopped its worker {MAX_ATTEMPTS} times ({why}); given up",
            f"failed: {why}",
            time.time(),
            MAX_ATTEMPTS,
            *args,
        ),
    ).rowcount
    queued = con.execute(
        f"UPDATE jobs SET status='queued', worker=NULL, message=? WHERE status='running' AND {where}",
        (f"requeued: {why}", *args),
    ).rowcount
    return failed + queued


def recover_dead(store: Store) -> int:
    """Take back, at once, the units claimed by workers of this machine whose process is gone
    (killed, crashed): no heartbeat timeout to wait for. Workers elsewhere are judged by their
    heartbeat (:func:`recover_stale`)."""
    running = store.query("SELECT id, worker FROM jobs WHERE status='running'")
    dead = [(int(r.id), r.worker) for r in running.itertuples() if r.worker and worker_alive(r.worker) is False]
    if not dead:
        return 0
    with store.transaction() as con:
        return sum(_requeue_crashed(con, "id=? AND worker=?", d, "its worker process died") for d in dead)


def recover_stale(store: Store, stale_after: float = STALE_AFTER_S) -> int:
    with store.transaction() as con:
        return _requeue_crashed(con, "heartbeat < ?", (time.time() - stale_after,), "its worker stopped answering")


def enqueue(store: Store, study_id: str, units: list[dict]) -> dict:
    """Insert units (dicts with kind, unit_key, payload); existing keys are left as they are."""
    now = time.time()
    with store.transaction() as con:
        before = con.execute("SELECT COUNT(*) FROM jobs WHERE study_id=?", (study_id,)).fetchone()[0]
        con.executemany(
            "INSERT OR IGNORE INTO jobs(study_id, kind, unit_key, payload, status, created_at, updated_at) "
            "VALUES (?,?,?,?, 'queued', ?, ?)",
            [(study_id, u["kind"], u["unit_key"], json.dumps(u["payload"]), now, now) for u in units],
        )
        after = con.execute("SELECT COUNT(*) FROM jobs WHERE study_id=?", (study_id,)).fetchone()[0]
    return {"new": after - before, "existing": len(units) - (after - before)}


def claim(store: Store, worker: str, study_id: str | None = None, exclude=()) -> dict | None:
    """Atomically take the oldest queued job (of one study, or of any but ``exclude``)."""
    now = time.time()
    where = "status='queued'" + (" AND study_id=?" if study_id else "")
    args = (study_id,) if study_id else ()
    if exclude:
        where += f" AND study_id NOT IN ({', '.join('?' * len(exclude))})"
        args += tuple(exclude)
    with store.transaction() as con:
        row = con.execute(
            f"UPDATE jobs SET status='running', worker=?, heartbeat=?, attempts=attempts+1, started_at=?, "
            f"progress=0, message='', updated_at=? WHERE id = (SELECT id FROM jobs WHERE {where} "
            f"ORDER BY id LIMIT 1) RETURNING id, study_id, kind, unit_key, payload, attempts",
            (worker, now, now, now, *args),
        ).fetchone()
    if row is None:
        return None
    return {
        "id": row[0],
        "study_id": row[1],
        "kind": row[2],
        "unit_key": row[3],
        "payload": json.loads(row[4]),
        "attempts": row[5],
    }


def report_progress(store: Store, job_id: int, worker: str, progress: float, message: str = "") -> None:
    with store.transaction() as con:
        con.execute(
            "UPDATE jobs SET progress=?, message=?, heartbeat=?, updated_at=? WHERE id=? AND worker=?",
            (float(progress), message, time.time(), time.time(), job_id, worker),
        )


def finish(store: Store, job: dict, worker: str, output: UnitOutput, message: str = "done") -> bool:
    """Land a unit's output: its hidden-state files first (each written atomically), then its rows
    and its 'done' mark in one transaction.

    Returns False — writing no row — if this worker no longer owns the job (it was requeued as
    stale or cancelled), so two workers never both land results for one unit.
    """
    for name, (arrays, meta) in output.states.items():
        states_io.write_states(store.states_root, job["study_id"], name, arrays, meta)
    study = job["study_id"]
    now = time.time()
    try:
        with store.transaction() as con:
            cur = con.execute(
                "UPDATE jobs SET status='done', progress=1, message=?, finished_at=?, "
                "updated_at=?, error=NULL, traceback=NULL WHERE id=? AND worker=? AND status='running'",
                (message, now, now, job["id"], worker),
            )
            if cur.rowcount != 1:
                raise _NotOwner
            if output.results:
                con.executemany(INSERT_RESULTS, result_tuples(study, output.results, now))
            if output.records:
                con.executemany(INSERT_RECORDS, record_tuples(study, output.records))
            con.executemany(
                "INSERT OR REPLACE INTO pair_metrics(study_id, task_a, task_b, name, value) VALUES (?,?,?,?,?)",
                [(study, r["task_a"], r["task_b"], r["name"], float(r["value"])) for r in output.pair_metrics],
            )
    except _NotOwner:
        return False
    return True


class _NotOwner(Exception):
    """Raised inside finish() to roll back when the job is no longer ours."""


def release(store: Store, job: dict, worker: str, message: str) -> None:
    """Give a claimed job back to the queue, unrun (the store, not the unit, failed): it does not
    count as an attempt. Best effort: if even this cannot be written, dead-worker recovery will."""
    try:
        with store.transaction() as con:
            con.execute(
                "UPDATE jobs SET status='queued', worker=NULL, attempts=MAX(attempts-1, 0), message=? "
                "WHERE id=? AND worker=? AND status='running'",
                (message[:200], job["id"], worker),
            )
    except StoreError:
        pass


def requeue_lost(store: Store, job: dict, worker: str, why: str) -> None:
    """A unit whose executor lost it (its actor died) goes back to the queue, its attempt counted —
    or fails for good once it has been lost MAX_ATTEMPTS times."""
    with store.transaction() as con:
        _requeue_crashed(con, "id=? AND worker=?", (job["id"], worker), why)


def fail(store: Store, job: dict, worker: str, error: str, traceback: str = "") -> None:
    """Mark a unit failed: ``error`` is one line (what the lists show), ``traceback`` the whole one."""
    with store.transaction() as con:
        con.execute(
            "UPDATE jobs SET status='failed', error=?, traceback=?, message=?, finished_at=?, updated_at=? "
            "WHERE id=? AND worker=?",
            (error, traceback or None, error[:200], time.time(), time.time(), job["id"], worker),
        )


def retry_failed(store: Store, study_id: str) -> int:
    with store.transaction() as con:
        return con.execute(
            "UPDATE jobs SET status='queued', error=NULL, traceback=NULL, attempts=0, "
            "message='retry' WHERE study_id=? AND status='failed'",
            (study_id,),
        ).rowcount


def cancel_queued(store: Store, study_id: str) -> int:
    with store.transaction() as con:
        return con.execute(
            "UPDATE jobs SET status='cancelled', message='cancelled' WHERE study_id=? AND status='queued'", (study_id,)
        ).rowcount


def requeue_cancelled(store: Store, study_id: str) -> int:
    with store.transaction() as con:
        return con.execute(
            "UPDATE jobs SET status='queued', message='' WHERE study_id=? AND status='cancelled'", (study_id,)
        ).rowcount


def requeue(store: Store, study_id: str, unit_keys: list[str]) -> int:
    """Queue these units again, finished ones included (a deliberate recompute). Their stored
    results stay until each unit's new result replaces them, in the same transaction that marks
    it done; running units are left alone."""
    with store.transaction() as con:
        return sum(
            con.execute(
                "UPDATE jobs SET status='queued', error=NULL, traceback=NULL, progress=0, attempts=0, "
                "message='recompute' WHERE study_id=? AND unit_key=? AND status != 'running'",
                (study_id, key),
            ).rowcount
            for key in unit_keys
        )


def jobs_frame(store: Store, study_id: str) -> pd.DataFrame:
    return store.query(
        "SELECT id, kind, unit_key, payload, status, progress, message, worker, "
        "attempts, error, traceback, heartbeat, started_at, finished_at, created_at, updated_at "
        "FROM jobs WHERE study_id=? ORDER BY id",
        (study_id,),
    )


def status_counts(store: Store, study_id: str) -> dict[str, int]:
    df = store.query("SELECT status, COUNT(*) AS n FROM jobs WHERE study_id=? GROUP BY status", (study_id,))
    return dict(zip(df["status"], df["n"].astype(int)))


def queued_studies(store: Store) -> list[str]:
    return list(store.query("SELECT DISTINCT study_id FROM jobs WHERE status='queued'")["study_id"])


def live_workers(store: Store, within_s: float = 15.0) -> int:
    df = store.query(
        "SELECT COUNT(DISTINCT worker) AS n FROM jobs WHERE status='running' AND heartbeat > ?",
        (time.time() - within_s,),
    )
    return int(df["n"].iloc[0])


def done_keys(store: Store, study_id: str) -> list[tuple[str, str, str]]:
    """(kind, unit key, payload) of every finished unit, oldest first (what a snapshot ships)."""
    df = store.query(
        "SELECT kind, unit_key, payload FROM jobs WHERE study_id=? AND status='done' ORDER BY id", (study_id,)
    )
    return list(df.itertuples(index=False, name=None))


def add_done(store: Store, study_id: str, units: list[tuple[str, str, str]], message: str) -> None:
    """Record units as done without running them (a shipped study's finished units)."""
    with store.transaction() as con:
        con.executemany(
            "INSERT OR IGNORE INTO jobs(study_id, kind, unit_key, payload, status, progress, message, "
            "attempts, created_at, updated_at) VALUES (?,?,?,?, 'done', 1, ?, 0, 0, 0)",
            [(study_id, kind, key, payload, message) for kind, key, payload in units],
        )


def dashboard_lock(store: Store):
    """An exclusive lock, held for its lifetime by the one worker the dashboard starts for this store
    on this machine (a lock, not a timer: a second start finds it held and stops at once). Returns
    the open file holding the lock, or None if another process holds it."""
    import fcntl

    path = store.path.parent / ".dashboard-worker.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class Heartbeat:
    """Keeps the heartbeat of every unit a worker holds fresh, from a background thread."""

    def __init__(self, store: Store, worker: str, every: float = 2.0):
        self.store, self.worker, self.every = store, worker, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self._stop.wait(self.every):
            try:
                with self.store.transaction() as con:
                    con.execute(
                        "UPDATE jobs SET heartbeat=? WHERE worker=? AND status='running'", (time.time(), self.worker)
                    )
            except StoreError:
                pass  # a store that cannot be written fails the unit's own writes, with a message

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
