"""A finished report or analysis table kept beside the store, so asking again for the same report
or table of the same rows is a file read instead of the whole analysis (issue 27: `mergelab report`
took 2–7 s, and each dashboard process's first render of a page 1–7 s, most of it the predictor
comparison and the bootstrap draws, recomputed in every process).

A report or table is a pure function of the store's rows and files and of MergeLab's code, so its
key is exactly those: the store's content stamp (its id and the revision every write transaction
advances — what the dashboard's caches key on too), the study's hidden-state files (names, sizes,
modification times), a hash of every source file of the ``mergelab`` package, the study and what
was asked (format and options, or the analysis and its arguments). Any write to the store, any new
state file and any code change give a new key, so a stale result is not served; a result during
which rows were written is not kept. Writing the cache is best effort: a read-only store folder
still gets its report. ``cache/`` may be deleted at any time: it only holds what can be recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

from .states import states_dir

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent.parent  # the mergelab package
T = TypeVar("T")


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
    """Where reports and tables are kept: ``cache/`` beside the store file."""
    return store.path.parent / "cache"


def _kept(store, study_id: str, asked: str, kind: str, suffix: str, read, write, compute):
    """(the result, whether it came from the cache) for one kind of kept result: ``read(path)`` when
    the key's file is there (any error reading it: computed again), else ``compute()``, kept with
    ``write(result, tmp_path)`` → bool (False: not kept) unless rows were written while it ran. Older
    files of the same request are removed; an unwritable folder only means nothing is kept."""
    key = report_key(store, study_id, asked)
    stem = hashlib.sha256(f"{store.path.resolve()}\0{study_id}\0{asked}".encode()).hexdigest()[:16]
    folder = cache_folder(store)
    path = folder / f"{kind}-{stem}-{key[:32]}{suffix}"
    if path.exists():
        try:
            return read(path), True
        except Exception as exc:  # a damaged or foreign file: compute it again
            log.info("kept %s unreadable (%s): computing it again", path.name, exc)
    result = compute()
    if report_key(store, study_id, asked) != key:  # rows written while it ran: it may mix them, keep nothing
        return result, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if not write(result, tmp):
            tmp.unlink(missing_ok=True)
            return result, False
        os.replace(tmp, path)  # whole or absent: a concurrent reader never sees half a file
        for old in folder.glob(f"{kind}-{stem}-*{suffix}"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:  # read-only or full: the result is still returned, just not kept
        log.info("%s not cached in %s: %s", kind, folder, exc)
    return result, False


def cached_report(store, study_id: str, asked: str, compute: Callable[[], str]) -> tuple[str, bool]:
    """(the report, whether it came from the cache): the kept text when the key matches, else
    ``compute()``'s, kept for next time (older reports of the same study and request removed)."""

    def write(text: str, tmp: Path) -> bool:
        tmp.write_text(text, encoding="utf-8")
        return True

    return _kept(store, study_id, asked, "report", ".txt", lambda p: p.read_text(encoding="utf-8"), write, compute)


def _write_frame(result, tmp: Path) -> bool:
    """Keep ``result`` as parquet only if it is a DataFrame that reads back equal (values, dtypes,
    index, ``attrs``); anything else is not kept."""
    import pandas as pd

    if not isinstance(result, pd.DataFrame):
        return False
    try:
        result.to_parquet(tmp)
        back = pd.read_parquet(tmp)
        pd.testing.assert_frame_equal(back, result, check_exact=True)
        if back.attrs != result.attrs:
            return False
    except Exception as exc:  # pyarrow cannot hold it, or it reads back different: not kept
        log.debug("analysis table not kept: %s", exc)
        return False
    return True


def cached_frame(store, study_id: str, asked: str, compute: Callable[[], object]) -> tuple[object, bool]:
    """(the result, whether it came from the cache) of one analysis of the study: a DataFrame kept
    as parquet beside the store when the key matches (store content, state files, code, ``asked``),
    else ``compute()``'s — kept for the next process when it is a DataFrame that round-trips exactly
    through parquet; any other result is returned, never kept."""
    import pandas as pd

    return _kept(store, study_id, asked, "frame", ".parquet", pd.read_parquet, _write_frame, compute)


def cached_arrays(
    store,
    study_id: str,
    asked: str,
    compute: Callable[[], T],
    encode: Callable[[T], dict],
    decode: Callable[[dict], T],
) -> tuple[T, bool]:
    """(the result, whether it came from the cache) of an analysis made of arrays (the bootstrap
    draws): kept as ``.npz`` (no pickles: text goes in as a unicode array) via ``encode(result)`` →
    {name: array}, read back via ``decode({name: array})``, keyed like :func:`cached_frame`."""
    import numpy as np

    def read(path: Path):
        with np.load(path, allow_pickle=False) as arrays:
            return decode({k: arrays[k] for k in arrays.files})

    def write(result, tmp: Path) -> bool:
        with open(tmp, "wb") as handle:
            np.savez(handle, **encode(result))
        return True

    return _kept(store, study_id, asked, "arrays", ".npz", read, write, compute)
