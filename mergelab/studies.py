"""Open the store with the bundled studies in it: the one entry point pages and the CLI use."""

from __future__ import annotations

from pathlib import Path

from . import paper
from .config import DATA_DIR, default_db_path
from .store import Store

DEMO_SPEC = DATA_DIR / "demo" / "study.yaml"
DEMO_RESULTS = DATA_DIR / "demo" / "results"
DEMO_ID = "demo"


def open_store(path: str | Path | None = None) -> Store:
    """Open (or create) the store and make sure the bundled studies are loaded into it.

    Loading is idempotent (INSERT OR REPLACE of the same published rows), so calling this on
    every start never duplicates or loses rows; user studies already in the file are untouched.
    """
    store = Store(path or default_db_path())
    if not store.has_study(paper.STUDY_ID):
        paper.load_into(store)
    if not store.has_study(DEMO_ID) and DEMO_SPEC.exists() and (DEMO_RESULTS / "results.csv").exists():
        from .demo.snapshot import load_into

        load_into(store, DEMO_SPEC, DEMO_RESULTS)
    return store
