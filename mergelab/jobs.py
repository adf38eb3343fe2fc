"""Job rows in the store: enqueue, claim atomically, heartbeat, finish with results in one
transaction, recover stale claims. A killed worker loses at most the unit it was running."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import pandas as pd

from .store import Store, StoreError

STALE_AFTER_S = 60.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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


def recover_dead(store: Store) -> int:
    """Queue again, at once, the units claimed by workers of this machine whose process is gone
    (killed, crashed): no heartbeat timeout to wait for. Workers elsewhere are judged by their
    heartbeat (:func:`recover_stale`)."""
    running = store.query("SELECT id, worker FROM jobs WHERE status='running'")
    dead = [(int(r.id), r.worker) for r in running.itertuples() if r.worker and worker_alive(r.worker) is False]
    if not dead:
        return 0
    with store.transaction() as con:
        return sum(con.execute("UPDATE jobs SET status='queued', worker=NULL, "
                               "message='requeued: its worker process died' "
                               "WHERE id=? AND worker=? AND status='running'", d).rowcount for d in dead)


def enqueue(store: Store, study_id: str, units: list[dict]) -> dict:
    """Insert units (dicts with kind, unit_key, payload); existing keys are left as they are."""
    now = time.time()
    with store.transaction() as con:
        before = con.execute("SELECT COUNT(*) FROM jobs WHERE study_id=?", (study_id,)).fetchone()[0]
        con.executemany(
            "INSERT OR IGNORE INTO jobs(study_id, kind, unit_key, payload, status, created_at, updated_at) "
            "VALUES (?,?,?,?, 'queued', ?, ?)",
            [(study_id, u["kind"], u["unit_key"], json.dumps(u["payload"]), now, now) for u in units])
        after = con.execute("SELECT COUNT(*) FROM jobs WHERE study_id=?", (study_id,)).fetchone()[0]
    return {"new": after - before, "existing": len(units) - (after - before)}


def recover_stale(store: Store, stale_after: float = STALE_AFTER_S) -> int:
    with store.transaction() as con:
        cur = con.execute(
            "UPDATE jobs SET status='queued', worker=NULL, message='requeued: worker stopped answering' "
            "WHERE status='running' AND heartbeat < ?", (time.time() - stale_after,))
        return cur.rowcount


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
            f"UPDATE jobs SET status='running', worker=?, heartbeat=?, attempts=attempts+1, "
            f"progress=0, message='', updated_at=? WHERE id = (SELECT id FROM jobs WHERE {where} "
            f"ORDER BY id LIMIT 1) RETURNING id, study_id, kind, unit_key, payload",
            (worker, now, now, *args)).fetchone()
    if row is None:
        return None
    return {"id": row[0], "study_id": row[1], "kind": row[2], "unit_key": row[3],
            "payload": json.loads(row[4])}


def report_progress(store: Store, job_id: int, worker: str, progress: float, message: str = "") -> None:
    with store.transaction() as con:
        con.execute("UPDATE jobs SET progress=?, message=?, heartbeat=?, updated_at=? "
                    "WHERE id=? AND worker=?",
                    (float(progress), message, time.time(), time.time(), job_id, worker))


def finish(store: Store, job: dict, worker: str, write) -> bool:
    """Mark ``job`` done and run ``write(con)`` (its result rows) in the same transaction.

    Returns False — writing nothing — if this worker no longer owns the job (it was requeued
    as stale or cancelled), so two workers never both land results for one unit.
    """
    try:
        with store.transaction() as con:
            cur = con.execute("UPDATE jobs SET status='done', progress=1, message='done', "
                              "updated_at=?, error=NULL WHERE id=? AND worker=? AND status='running'",
                              (time.time(), job["id"], worker))
            if cur.rowcount != 1:
                raise _NotOwner
            write(con)
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
            con.execute("UPDATE jobs SET status='queued', worker=NULL, attempts=MAX(attempts-1, 0), message=? "
                        "WHERE id=? AND worker=? AND status='running'", (message[:200], job["id"], worker))
    except StoreError:
        pass


def status_counts(store: Store, study_id: str) -> dict[str, int]:
    df = store.query("SELECT status, COUNT(*) AS n FROM jobs WHERE study_id=? GROUP BY status", (study_id,))
    return dict(zip(df["status"], df["n"].astype(int)))


def fail(store: Store, job: dict, worker: str, error: str) -> None:
    with store.transaction() as con:
        con.execute("UPDATE jobs SET status='failed', error=?, message=?, updated_at=? "
                    "WHERE id=? AND worker=?", (error, error[:200], time.time(), job["id"], worker))


def retry_failed(store: Store, study_id: str) -> int:
    with store.transaction() as con:
        return con.execute("UPDATE jobs SET status='queued', error=NULL, message='retry' "
                           "WHERE study_id=? AND status='failed'", (study_id,)).rowcount


def cancel_queued(store: Store, study_id: str) -> int:
    with store.transaction() as con:
        return con.execute("UPDATE jobs SET status='cancelled', message='cancelled' "
                           "WHERE study_id=? AND status='queued'", (study_id,)).rowcount


def requeue_cancelled(store: Store, study_id: str) -> int:
    with store.transaction() as con:
        return con.execute("UPDATE jobs SET status='queued', message='' "
                           "WHERE study_id=? AND status='cancelled'", (study_id,)).rowcount


def requeue(store: Store, study_id: str, unit_keys: list[str]) -> int:
    """Queue these units again, finished ones included (a deliberate recompute). Their stored
    results stay until each unit's new result replaces them, in the same transaction that marks
    it done; running units are left alone."""
    with store.transaction() as con:
        return sum(con.execute("UPDATE jobs SET status='queued', error=NULL, progress=0, message='recompute' "
                               "WHERE study_id=? AND unit_key=? AND status != 'running'",
                               (study_id, key)).rowcount for key in unit_keys)


def jobs_frame(store: Store, study_id: str) -> pd.DataFrame:
    return store.query("SELECT id, kind, unit_key, payload, status, progress, message, worker, "
                       "attempts, error, heartbeat, updated_at FROM jobs WHERE study_id=? ORDER BY id",
                       (study_id,))


def live_workers(store: Store, within_s: float = 15.0) -> int:
    df = store.query("SELECT COUNT(DISTINCT worker) AS n FROM jobs WHERE status='running' "
                     "AND heartbeat > ?", (time.time() - within_s,))
    return int(df["n"].iloc[0])


class Heartbeat:
    """Keeps a claimed job's heartbeat fresh from a background thread while it runs."""

    def __init__(self, store: Store, job_id: int, worker: str, every: float = 2.0):
        self.store, self.job_id, self.worker, self.every = store, job_id, worker, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self._stop.wait(self.every):
            try:
                with self.store.transaction() as con:
                    con.execute("UPDATE jobs SET heartbeat=? WHERE id=? AND worker=?",
                                (time.time(), self.job_id, self.worker))
            except StoreError:
                pass  # a store that cannot be written fails the unit's own writes, with a message

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
