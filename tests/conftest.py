import os
import sys
from pathlib import Path

import pytest

# Never touch the network: hub look-ups fail fast instead of retrying for ~23 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the helpers (tinymodels, degenerate) from every test folder

#: The test tiers (README, Development): tests/unit runs in well under a minute and imports no model,
#: subprocess, AppTest or Ray; every other test gets one of these marks from what its file does.
UI_FILES = {"test_pages.py", "test_dashboard.py", "test_stakeholder.py", "test_total_analyses.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name == "unit":
            item.add_marker(pytest.mark.unit)
        elif item.get_closest_marker("browser") is None:
            item.add_marker(pytest.mark.ui if path.name in UI_FILES else pytest.mark.slow)


@pytest.fixture(scope="session")
def bundled_store_template(tmp_path_factory):
    """One store with the bundled studies loaded, made once per session (loading them copies ~50 MB of
    rows and hidden states); every test's store starts as a copy of it."""
    import sqlite3

    from mergelab.study.bundled import open_store

    path = tmp_path_factory.mktemp("bundled") / "mergelab.db"
    open_store(path)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file: a plain copy is whole
    con.close()
    return path


@pytest.fixture()
def db_path(tmp_path, monkeypatch, bundled_store_template):
    """A store file for one test with the bundled studies already in it (a copy of the session's
    template: state files hard-linked, as they are written once and never changed in place), also
    what the app opens (via MERGELAB_DB)."""
    import os
    import shutil

    path = tmp_path / "mergelab.db"
    shutil.copyfile(bundled_store_template, path)
    states = bundled_store_template.parent / "states"
    if states.exists():
        shutil.copytree(states, tmp_path / "states", copy_function=os.link)
    monkeypatch.setenv("MERGELAB_DB", str(path))
    return path
