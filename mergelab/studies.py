"""Open the store with the bundled studies in it: the one entry point pages and the CLI use."""

from __future__ import annotations

from pathlib import Path

from . import paper
from .config import DATA_DIR, default_db_path
from .store import Store

#: Studies shipped with results in data/<name>/ (spec, README, results/): loaded into every store.
BUNDLED = {"llm": DATA_DIR / "llm", "demo": DATA_DIR / "demo"}


def open_store(path: str | Path | None = None) -> Store:
    """Open (or create) the store and make sure the bundled studies are loaded into it.

    Each bundled study loads in one transaction, only when absent, so calling this on every start
    never duplicates or loses rows; user studies already in the file are untouched.
    """
    store = Store(path or default_db_path())
    if not store.has_study(paper.STUDY_ID):
        paper.load_into(store)
    for study_id, folder in BUNDLED.items():
        if not store.has_study(study_id) and (folder / "results" / "results.csv").exists():
            from .demo.snapshot import load_into

            load_into(store, folder / "study.yaml", folder / "results")
    return store
