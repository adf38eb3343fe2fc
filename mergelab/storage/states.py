"""Hidden-state files: one safetensors file per unit in the store's states folder (``Store.states_root``,
``states/`` beside the database), ``states/<study>/<name>``. Functions take that folder, never a store.

Written and read here only (the worker hands over arrays, pages read arrays), with numpy: the read
side never imports torch. File names are made here and parsed here: ``expert__<task>`` for an
expert's pooled states on the study's probes, ``merged__<group>__<method>`` for a merge's on its
group's probes. Each holds ``mean`` / ``first`` / ``last`` pooled states, (stored layers, probes,
dim), and metadata: the probe owners, the unit key, the stored layer numbers and the model's layer
count. Every path is checked to lie inside the store's folder.
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import StoreError, explain


def states_path(root: Path, study_id: str, name: str) -> Path:
    """The file of one unit's states, checked (not assumed) to lie inside the states folder ``root``."""
    root = Path(root).resolve()
    path = (root / study_id / f"{name}.safetensors").resolve()
    if not path.is_relative_to(root) or path.parent.parent != root:
        raise StoreError(
            f"refusing to write outside the store's folder: study {study_id!r}, file {name!r} would land at {path}"
        )
    return path


def states_dir(root: Path, study_id: str) -> Path:
    return states_path(root, study_id, "x").parent


def expert_name(task: str) -> str:
    return f"expert__{task}"


def merged_name(group: str, method: str) -> str:
    return f"merged__{group}__{method}"


def merged_methods(root: Path, study_id: str, group: str) -> list[str]:
    """The methods whose merge of ``group`` has stored states."""
    prefix = merged_name(group, "")
    return sorted(
        p.stem[len(prefix) :]
        for p in states_dir(root, study_id).glob(f"{prefix}*.safetensors")
        if "__" not in p.stem[len(prefix) :]
    )


def has_expert_states(root: Path, study_id: str, tasks: list[str]) -> bool:
    folder = states_dir(root, study_id)
    return bool(tasks) and all((folder / f"{expert_name(t)}.safetensors").exists() for t in tasks)


def write_states(root: Path, study_id: str, name: str, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    """Write one unit's states atomically (a temporary file, then a rename). A full disk or a
    read-only folder is one :class:`StoreError`."""
    from safetensors.numpy import save_file

    path = states_path(root, study_id, name)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except Exception as exc:  # OSError, or safetensors' own error wrapping one
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise explain(Path(root), exc, "store's state files") from None
    return path


def read_states(root: Path, study_id: str, name: str):
    """(arrays by pooling, probe owners, (stored layer numbers, the model's layer count)). Cached per
    file version (path, size, mtime); callers must not modify the arrays."""
    path = states_path(root, study_id, name)
    stat = path.stat()
    return _read(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=128)
def _read(path: str, size: int, mtime_ns: int):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(path, "np") as h:
        meta = h.metadata()
    arrays = load_file(path)
    n = next(iter(arrays.values())).shape[0]
    layers = json.loads(meta["layers"]) if "layers" in meta else list(range(n))
    return arrays, json.loads(meta["probe_tasks"]), (layers, int(meta.get("n_layers", n)))


def copy_states(root: Path, study_id: str, source: Path) -> None:
    """Copy every states file of a shipped snapshot folder in (each atomically; existing ones kept)."""
    import shutil

    target = states_dir(root, study_id)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(source.glob("*.safetensors")):
            if not (target / f.name).exists():
                # a name of this process's own: several processes may open a fresh store at once, and
                # a shared temporary name lets one rename the other's half-written copy away
                tmp = target / f".{f.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
                shutil.copy2(f, tmp)
                os.replace(tmp, target / f.name)
    except OSError as exc:
        raise explain(Path(root), exc, "store's state files") from None


def export_states(root: Path, study_id: str, out: Path) -> None:
    """Every states file of a study, as float16 (half the size; ample for distances), into ``out``."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(states_dir(root, study_id).glob("*.safetensors")):
        with safe_open(str(f), "np") as h:
            meta = h.metadata()
        save_file({k: v.astype(np.float16) for k, v in load_file(str(f)).items()}, str(out / f.name), metadata=meta)
