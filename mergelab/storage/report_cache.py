"""A finished report kept beside the store, so asking again for the same report of the same rows
is a file read instead of the whole analysis (issue 27: `mergelab report` took 2–7 s, most of it
scipy's import, the predictor comparison and the bootstrap draws, recomputed on every call).

A report is a pure function of the store's rows and files and of MergeLab's code, so its key is
exactly those: the store's content stamp (the database and WAL files' sizes and modification
times — what the dashboard's caches key on too), the study's hidden-state files (names, sizes,
modification times), a hash of every source file of the ``mergelab`` package, the study and what
was asked (format and options). Any write to the store, any new state file and any code change
give a new key, so a stale report is not served; a report during which rows were written is not
kept; a spurious miss (a WAL checkpoint) only costs one recomputation. Writing the cache is best
effort: a read-only store folder still gets its report.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

from .states import states_dir

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent.parent  # the mergelab package


@cache
def code_hash() -> str:
    """sha256 over every ``.py`` file of the ``mergelab`` package (path and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _states_stamp(store, study_id: str) -> list:
    folder = states_dir(store.states_root, study_id)
    if not folder.is_dir():
        return []
    stamp = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        st = entry.stat()
        stamp.append((entry.name, st.st_size, st.st_mtime_ns))
    return stamp


def report_key(store, study_id: str, asked: str) -> str:
    """The key of one report: store content, the study's state files, the code, what was asked."""
    parts = [
        str(store.path.resolve()),
        repr(store.content_stamp()),
        repr(_states_stamp(store, study_id)),
        code_hash(),
        study_id,
        asked,
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_folder(store) -> Path:
    """Where reports are kept: ``cache/`` beside the store file."""
    return store.path.parent / "cache"


def cached_report(store, study_id: str, asked: str, compute: Callable[[], str]) -> tuple[str, bool]:
    """(the report, whether it came from the cache): the kept text when the key matches, else
    ``compute()``'s, kept for next time (older reports of the same study and request removed)."""
    key = report_key(store, study_id, asked)
    stem = hashlib.sha256(f"{store.path.resolve()}\0{study_id}\0{asked}".encode()).hexdigest()[:16]
    folder = cache_folder(store)
    path = folder / f"report-{stem}-{key[:32]}.txt"
    try:
        return path.read_text(encoding="utf-8"), True
    except (OSError, UnicodeDecodeError):
        pass
    text = compute()
    if report_key(store, study_id, asked) != key:  # rows written while it ran: it may mix them, keep nothing
        return text, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)  # whole or absent: a concurrent reader never sees half a report
        for old in folder.glob(f"report-{stem}-*.txt"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:  # read-only or full: the report is still printed, just not kept
        log.info("report not cached in %s: %s", folder, exc)
    return text, False
