"""What goes wrong with a store, in one line a user can act on: the error type every storage module
raises, and the translation of SQLite and file-system errors into it."""

from __future__ import annotations

import os
from pathlib import Path


class StoreError(RuntimeError):
    """The store cannot be opened or written (the message says which file and why)."""


def explain(path: Path, exc: BaseException, what: str = "store") -> StoreError:
    """One line a user can act on, for an SQLite or file-system error on ``path``: the store's
    database file, or (``what="store's state files"``) the folder of its hidden-state files."""
    text = str(exc)
    low = text.lower()
    path = Path(path)
    if what == "store" and path.is_dir():
        return StoreError(f"the store {path} is a folder; give a file such as {path / 'mergelab.db'}")
    if "is full" in low or "no space left" in low or "os error 28" in low or getattr(exc, "errno", None) == 28:
        return StoreError(
            f"the disk holding the {what} {path} is full ({text}); nothing stored was lost "
            "— free some space and run again"
        )
    writable = os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if "readonly" in low or "read-only" in low or (not writable and ("unable to open" in low or "denied" in low)):
        return StoreError(
            f"the {what} {path} is read-only for this user ({text}); give a store you may "
            "write with --db or $MERGELAB_DB"
        )
    if "not a database" in low or "malformed" in low:
        return StoreError(f"{path} is not a MergeLab store (not a readable SQLite database: {text})")
    return StoreError(f"cannot use the MergeLab store at {path}: {text}")
