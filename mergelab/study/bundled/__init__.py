"""The studies that ship with MergeLab — the paper's published tables, the MiniLM demo, the
SmolLM2 LLM study — loaded into every store on open, and the builders of their data and adapters."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ...config import DATA_DIR, default_db_path
from ...storage import paper_rows, snapshot
from ...storage.store import Store

#: Studies shipped with results in data/<name>/ (spec, README, results/): loaded into every store.
BUNDLED = {"llm": DATA_DIR / "llm", "llm13": DATA_DIR / "llm13", "demo": DATA_DIR / "demo"}


def load_shipped(store: Store, spec_path: Path, results: Path) -> str:
    """Load a shipped study into ``store``. Its hidden-state files are copied first (each to a
    temporary name, then renamed) and its rows written last, in one transaction: a load that fails
    half-way (a full disk) leaves no study row, so the next open loads it again, whole."""
    from ..planner import register  # here, not at the top: opening a store that has them all is
    from ..spec import parse_spec  # every command's first step, and these imports cost ~0.15 s

    spec = parse_spec(spec_path)
    snapshot.copy_states(store, spec.name, results)
    readme = spec_path.parent / "README.md"
    with store.batch():  # the study is stored whole or not at all
        register(store, spec, description=readme.read_text() if readme.exists() else "")
        snapshot.load_rows(store, spec.name, results)
        delay = float(os.environ.get("MERGELAB_BUNDLED_LOAD_DELAY_S", "0") or 0)
        if delay:  # a test knob: a load as slow as on a loaded machine (tests/test_concurrency.py)
            time.sleep(delay)
    return spec.name


def open_store(path: str | Path | None = None) -> Store:
    """Open (or create) the store and make sure the bundled studies are loaded into it.

    Each bundled study loads in one transaction, only when absent, so calling this on every start
    never duplicates or loses rows; user studies already in the file are untouched.
    """
    store = Store(path or default_db_path())
    if _absent(store):
        # one process loads, the others wait for it (a load can outlast SQLite's busy timeout on a
        # loaded machine), then find everything there: asked again under the lock
        with store.exclusive("bundled-load"):
            for study_id in _absent(store):
                if study_id == paper_rows.STUDY_ID:
                    paper_rows.load_into(store)
                else:
                    load_shipped(store, BUNDLED[study_id] / "study.yaml", BUNDLED[study_id] / "results")
    return store


def _absent(store: Store) -> list[str]:
    """The paper's rows and the bundled studies that are shipped but not in the store yet."""
    paper = [] if store.has_study(paper_rows.STUDY_ID) else [paper_rows.STUDY_ID]
    return paper + [
        s for s, folder in BUNDLED.items() if not store.has_study(s) and (folder / "results" / "results.csv").exists()
    ]
