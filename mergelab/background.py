"""Start a worker process beside the dashboard (the embedded default), detached from it, so
long work never runs inside a Streamlit script run and survives page reloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import jobs
from .spec import NO_GRANTS, Grants
from .store import Store


def worker_command(db_path: str | Path, study_id: str | None = None, grants: Grants = NO_GRANTS) -> list[str]:
    """The `mergelab worker` command line; the grants the user ticked become its flags."""
    cmd = [sys.executable, "-m", "mergelab", "worker", "--db", str(db_path)]
    if study_id:
        cmd += ["--study", study_id]
    if grants.trust_remote_code:
        cmd.append("--trust-remote-code")
    if grants.allow_pickle:
        cmd.append("--allow-pickle")
    return cmd


def start_worker(db_path: str | Path, study_id: str | None = None, log_dir: Path | None = None,
                 grants: Grants = NO_GRANTS) -> int:
    log_dir = Path(log_dir or Path(db_path).parent)
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = worker_command(db_path, study_id, grants)
    with open(log_dir / "worker.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc.pid


def ensure_worker(store: Store, study_id: str, grants: Grants = NO_GRANTS) -> int | None:
    """Start a worker if jobs are queued and no worker has a fresh heartbeat; returns its pid.
    ``MERGELAB_NO_AUTOSTART=1`` turns this off (tests; or a team running its own workers)."""
    if os.environ.get("MERGELAB_NO_AUTOSTART") == "1":
        return None
    queued = store.query("SELECT COUNT(*) AS n FROM jobs WHERE study_id=? AND status='queued'",
                         (study_id,))["n"].item()
    if queued and jobs.live_workers(store) == 0:
        return start_worker(store.path, study_id, grants=grants)
    return None
