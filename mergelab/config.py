"""Where things live. One place, so the CLI, the worker and the pages agree."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def default_db_path() -> Path:
    """The store file: ``$MERGELAB_DB`` if set, else ``.mergelab/mergelab.db`` in the repo."""
    env = os.environ.get("MERGELAB_DB")
    return Path(env) if env else REPO_ROOT / ".mergelab" / "mergelab.db"
