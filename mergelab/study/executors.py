"""Running a study's units: the driver, and the executors it hands units to.

The driver (:func:`drive`) owns the store: it recovers dead or silent workers' claims, claims
units, hands each to an executor with the study's spec, and writes what comes back — rows and
hidden-state arrays — with the unit's 'done' mark (or its failure and traceback). An executor
only runs units: :class:`InProcess` runs them here, one at a time, keeping one loaded base per
study; other executors (worker processes started beside the dashboard, Ray actors) plug into the
same seam, so no executor ever opens the store itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ..storage import jobs
from ..storage.errors import StoreError
from ..storage.store import Store
from .errors import GrantError, SpecError
from .executor_base import Executor, InProcess
from .grants import NO_GRANTS, Grants, check_grants
from .planner import load_study_spec

Event = Callable[[dict], None]
log = logging.getLogger(__name__)


def _refused_studies(store: Store, grants: Grants) -> dict[str, str]:
    """Studies with queued units that ask for what ``grants`` do not allow → the reason."""
    out = {}
    for sid in jobs.queued_studies(store):
        try:
            check_grants(load_study_spec(store, sid), grants)
        except GrantError as exc:
            out[sid] = str(exc)
        except (SpecError, ValueError):
            pass  # its units fail one by one with the reason
    return out


def drive(
    store: Store,
    study_id: str | None,
    executor: Executor,
    *,
    grants: Grants = NO_GRANTS,
    stop_when_empty: bool = True,
    on_event: Event | None = None,
    idle_sleep: float = 1.0,
    max_units: int | None = None,
    stale_after: float = jobs.STALE_AFTER_S,
) -> dict:
    """Claim units and have ``executor`` run them until none are queued (or forever with
    ``stop_when_empty=False``); returns how many were done and how many failed.

    Claims of workers of this machine that died are taken back at once (by process id), others'
    after ``stale_after`` seconds without a heartbeat; a unit that stopped its worker
    ``jobs.MAX_ATTEMPTS`` times is failed for good. With ``study_id``, the driver also waits for
    units of that study still running elsewhere (taking them over if their worker dies), so it
    returns only when none is left running. Studies asking for what ``grants`` do not allow are
    refused (with ``study_id``: a :class:`GrantError` before anything runs; otherwise their units
    stay queued and each is reported once as a ``refused`` event). A store that cannot be written
    (read-only, full disk) raises :class:`StoreError` after giving the units back to the queue.
    """
    emit = on_event or (lambda ev: None)
    me = jobs.worker_id()
    if study_id is not None:
        if not store.has_study(study_id):
            raise ValueError(f"study {study_id!r} is not in the store {store.path}")
        check_grants(load_study_spec(store, study_id), grants)
    done = failed = 0
    refused: dict[str, str] = {}
    in_flight: dict[int, dict] = {}
    with jobs.Heartbeat(store, me):
        try:
            while True:
                jobs.recover_dead(store)
                jobs.recover_stale(store, stale_after)
                if study_id is None:
                    now_refused = _refused_studies(store, grants)
                    for sid in now_refused.keys() - refused.keys():
                        emit({"event": "refused", "study_id": sid, "reason": now_refused[sid]})
                    refused = now_refused
                budget_left = max_units is None or done + failed + len(in_flight) < max_units
                while budget_left and executor.slots() > 0:
                    job = jobs.claim(store, me, study_id, exclude=tuple(refused))
                    if job is None:
                        break
                    try:
                        spec = load_study_spec(store, job["study_id"])  # re-read: the study may have grown
                    except (SpecError, ValueError) as exc:
                        jobs.fail(store, job, me, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                        failed += 1
                        emit({"event": "failed", "error": str(exc), **job})
                        continue
                    in_flight[job["id"]] = job
                    log.info("unit %s (%s) started: %s", job["id"], job["kind"], job["payload"])
                    emit({"event": "start", **job})
                    executor.submit(job, spec, lambda f, m, j=job["id"]: jobs.report_progress(store, j, me, f, m))
                    budget_left = max_units is None or done + failed + len(in_flight) < max_units
                if not in_flight:
                    if not budget_left:
                        break
                    running = jobs.status_counts(store, study_id).get("running", 0) if study_id else 0
                    if running and stop_when_empty:
                        emit({"event": "waiting", "running": running})
                    elif stop_when_empty:
                        break
                    time.sleep(idle_sleep)
                    continue
                for out in executor.collect(timeout=idle_sleep):
                    job = in_flight.pop(out.job["id"])
                    if out.lost is not None:  # its attempt counts; the next claim runs it again
                        log.warning("unit %s lost (%s): queued again", job["id"], out.lost)
                        jobs.requeue_lost(store, job, me, out.lost)
                        emit({"event": "lost", "reason": out.lost, **job})
                        continue
                    if out.load_seconds is not None:
                        emit({"event": "loaded", "seconds": out.load_seconds, "rss_mb": out.rss_mb})
                    if out.error is not None:
                        log.error("unit %s (%s) failed: %s", job["id"], job["kind"], out.error)
                        jobs.fail(store, job, me, out.error, out.traceback)
                        failed += 1
                        emit({"event": "failed", "error": out.error, "trace": out.traceback, **job})
                        continue
                    try:
                        finished = jobs.finish(
                            store, job, me, out.output, f"done on {out.actor}" if out.actor else "done"
                        )
                    except StoreError as exc:
                        jobs.release(store, job, me, f"the store could not be written: {exc}")
                        raise
                    if finished:
                        log.info("unit %s (%s) done in %.1f s", job["id"], job["kind"], out.seconds)
                        done += 1
                        emit({"event": "done", "seconds": out.seconds, "rss_mb": out.rss_mb, "actor": out.actor, **job})
        finally:
            for job in in_flight.values():  # interrupted: what we hold goes back, unrun
                jobs.release(store, job, me, "requeued: its worker stopped")
            executor.close()
    return {"done": done, "failed": failed}


def run_worker(
    store: Store,
    study_id: str | None = None,
    *,
    device: str | None = None,
    grants: Grants = NO_GRANTS,
    executor: str = "local",
    address: str | None = None,
    actors: int | None = None,
    **kw,
) -> dict:
    """:func:`drive` with the in-process executor (``local``, what `mergelab run` and `mergelab
    worker` do by default) or with Ray actors (``ray``, on the cluster at ``address``)."""
    if executor == "ray":
        from .ray_executor import RayExecutor

        runner = RayExecutor(address, actors=actors, device=device, grants=grants)
    elif executor == "local":
        runner = InProcess(device, grants)
    else:
        raise ValueError(f"unknown executor {executor!r}; use local or ray")
    return drive(store, study_id, runner, grants=grants, **kw)


# --- worker processes beside the dashboard -------------------------------------------------------
def worker_command(
    db_path: str | Path,
    study_id: str | None = None,
    grants: Grants = NO_GRANTS,
    dashboard: bool = False,
    executor: str = "local",
    address: str | None = None,
) -> list[str]:
    """The `mergelab worker` command line; the grants the user ticked become its flags."""
    cmd = [sys.executable, "-m", "mergelab", "--log-level", "info", "worker", "--db", str(db_path)]
    if dashboard:
        cmd.append("--dashboard")
    if study_id:
        cmd += ["--study", study_id]
    if executor != "local":
        cmd += ["--executor", executor] + (["--address", address] if address else [])
    if grants.trust_remote_code:
        cmd.append("--trust-remote-code")
    if grants.allow_pickle:
        cmd.append("--allow-pickle")
    return cmd


def start_worker(
    db_path: str | Path,
    study_id: str | None = None,
    log_dir: Path | None = None,
    grants: Grants = NO_GRANTS,
    dashboard: bool = False,
    executor: str = "local",
    address: str | None = None,
) -> int:
    """Start a worker process beside the dashboard, detached from it, so long work never runs inside
    a Streamlit script run and survives page reloads; returns its pid."""
    log_dir = Path(log_dir or Path(db_path).parent)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "worker.log", "ab") as log:
        command = worker_command(db_path, study_id, grants, dashboard, executor, address)
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    _started.append(proc)
    return proc.pid


_started: list[subprocess.Popen] = []


def ensure_worker(
    store: Store, study_id: str, grants: Grants = NO_GRANTS, executor: str = "local", address: str | None = None
) -> int | None:
    """Start the dashboard's worker for this store if units are queued and it is not running (its
    lock is free); returns its pid. At most one runs per store on this machine, however often the
    page asks. ``MERGELAB_NO_AUTOSTART=1`` turns this off (tests; or a team running its own workers)."""
    for proc in list(_started):  # reap the ones that finished: no zombies
        if proc.poll() is not None:
            _started.remove(proc)
    if os.environ.get("MERGELAB_NO_AUTOSTART") == "1":
        return None
    if not jobs.status_counts(store, study_id).get("queued", 0):
        return None
    probe = jobs.dashboard_lock(store)
    if probe is None:  # the dashboard's worker is running
        return None
    probe.close()  # free: the worker takes it for its whole life
    return start_worker(store.path, study_id, grants=grants, dashboard=True, executor=executor, address=address)
