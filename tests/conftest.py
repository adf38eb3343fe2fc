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


@pytest.fixture()
def db_path(tmp_path, monkeypatch):
    """A fresh store file for one test, also what the app opens (via MERGELAB_DB)."""
    path = tmp_path / "mergelab.db"
    monkeypatch.setenv("MERGELAB_DB", str(path))
    return path
