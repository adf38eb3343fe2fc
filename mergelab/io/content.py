"""References to files, folders and hub ids: which is which, and digests of their content.

Unit keys and caches identify local files and folders by what is in them, not by where they are,
so the same study in another checkout, and a GGUF file copied elsewhere, are recognised.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CONTENT_CACHE: dict[tuple, str] = {}


def content_id(value: str, every_file: bool = False) -> str:
    """A local file or folder → digest of its contents (folders: their *.json, *.jsonl and
    *.safetensors files, and data files — parquet, csv, arrow, json(l) — in subfolders too;
    large weight files by name, size and their first and last MiB); anything else (a hub id,
    pypi:…) → itself. ``every_file``: a folder's files of every kind (a folder of lm-eval task YAMLs
    and the data files they read)."""
    path = Path(value)
    if not is_local(value):
        return value
    if path.is_file():
        files = [path]
    elif every_file:  # a folder of task definitions (lm-eval YAMLs) with their data: every file counts
        files = sorted(
            f for f in path.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)
        )
    else:  # a model/adapter folder's weights, its json files and a dataset folder's data files at any depth
        files = sorted(
            set(path.glob("*.safetensors"))
            | {
                f
                for pattern in ("*.json", "*.jsonl", "*.parquet", "*.csv", "*.arrow")
                for f in path.rglob(pattern)
                if not any(part.startswith(".") for part in f.relative_to(path).parts)
            }
        )
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if stamp not in _CONTENT_CACHE:
        digest = hashlib.sha256()
        for f in files:
            digest.update((f.name if f == path else f.relative_to(path).as_posix()).encode())
            size = f.stat().st_size
            digest.update(str(size).encode())
            with f.open("rb") as handle:
                if size <= 64 << 20:
                    digest.update(handle.read())
                else:  # big checkpoints: name, size, head and tail
                    digest.update(handle.read(1 << 20))
                    handle.seek(-(1 << 20), 2)
                    digest.update(handle.read())
        _CONTENT_CACHE[stamp] = "sha256:" + digest.hexdigest()[:24]
    return _CONTENT_CACHE[stamp]


def resolve_reference(value: str, root: Path) -> str:
    """A reference as written in a spec, resolved against the spec's folder: local paths become
    absolute; ``pypi:`` references and hub ids (``org/name``) stay as they are."""
    if value.startswith("pypi:"):
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = root / p
    if (
        candidate.exists()
        or value.startswith((".", "~"))
        or value.count("/") != 1
        or value.endswith(FILE_SUFFIXES)
        or (root / p.parts[0]).is_dir()
    ):
        return str(candidate.resolve())
    return value  # a hub id such as "org/name"


def is_local(value: str) -> bool:
    try:
        return Path(value).exists()
    except OSError:  # e.g. a YAML text passed where a path may be
        return False


FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".safetensors", ".yaml", ".yml")


def looks_like_hub_id(value: str) -> bool:
    """``org/name`` and not a path: a file suffix or an absolute/relative prefix rules it out."""
    return (
        not Path(value).is_absolute()
        and value.count("/") == 1
        and not value.startswith((".", "~"))
        and not value.endswith(FILE_SUFFIXES)
    )
