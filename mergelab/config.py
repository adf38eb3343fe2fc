"""Where things live. One place, so the CLI, the worker and the pages agree.

From a source checkout, everything is in the checkout (``data/``, ``app.py``, ``pages/``) and the
store in its ``.mergelab/``. From an installed package (``pip install .``), the dashboard, its pages
and the bundled studies are inside the package (``mergelab/_bundle/``, put there by the build), and
the store is in the user's data folder (``$XDG_DATA_HOME/mergelab``, else ``~/.local/share/mergelab``).
``$MERGELAB_DB`` overrides the store either way.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
#: the folder holding app.py, pages/, .streamlit/ and data/
APP_ROOT = (
    SOURCE_ROOT if (SOURCE_ROOT / "app.py").is_file() and (SOURCE_ROOT / "data").is_dir() else PACKAGE_DIR / "_bundle"
)
DATA_DIR = APP_ROOT / "data"
FROM_SOURCE = APP_ROOT == SOURCE_ROOT


def default_db_path() -> Path:
    """The store file: ``$MERGELAB_DB`` if set, else ``.mergelab/mergelab.db`` in a source checkout,
    else ``mergelab.db`` in the user's data folder."""
    env = os.environ.get("MERGELAB_DB")
    if env:
        return Path(env)
    if FROM_SOURCE:
        return SOURCE_ROOT / ".mergelab" / "mergelab.db"
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "mergelab" / "mergelab.db"
