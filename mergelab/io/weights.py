"""A base checkpoint's tensors, read lazily one at a time (safetensors; pickles only on request,
and then with ``torch.load(weights_only=True)``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import LoadError


def load_pickle(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A pickle weights file with ``torch.load(weights_only=True)`` (tensors only, no code). Anything
    that needs more than tensors to unpickle is refused with one line, never run."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before it refuses
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError, ...: all the same to a user
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unsupported" in line), lines[0] if lines else type(exc).__name__)
        raise LoadError(
            f"{what} {path} cannot be loaded safely: torch.load(weights_only=True) refused it "
            f"({reason[:160]}); convert it to safetensors"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{what} {path} does not hold a mapping of tensors")
    return state


class BaseWeights:
    """Lazy read access to a checkpoint's tensors (safetensors, sharded or not)."""

    def __init__(self, folder: Path, *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self.config = read_json(self.folder / "config.json", "base model config")
        files = sorted(self.folder.glob("*.safetensors"))
        self._pickle: dict[str, torch.Tensor] | None = None
        self._where: dict[str, Path] = {}
        if files:
            for f in files:
                try:
                    with safe_open(f, "pt") as handle:
                        for key in handle.keys():
                            self._where[key] = f
                except (SafetensorError, OSError) as exc:
                    raise LoadError(f"base model file {f} is not a readable safetensors file: {exc}") from None
        else:
            bins = sorted(self.folder.glob("*.bin"))
            if not bins:
                raise LoadError(f"base model folder {self.folder} has no *.safetensors weights")
            if not allow_pickle:
                raise LoadError(
                    f"base model folder {self.folder} only has pickle weights ({bins[0].name}); "
                    "pickle files can run code when loaded. Convert them to safetensors, or opt "
                    "in with allow_pickle / --allow-pickle if you trust the source."
                )
            self._pickle = {}
            for b in bins:
                self._pickle.update(load_pickle(b, "base model file"))
            self._where = {k: b for k in self._pickle}

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> torch.Tensor:
        if self._pickle is not None:
            return self._pickle[key]
        with safe_open(self._where[key], "pt") as handle:
            return handle.get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._pickle is not None:
            return tuple(self._pickle[key].shape)
        with safe_open(self._where[key], "pt") as handle:
            return tuple(handle.get_slice(key).get_shape())

    def is_float(self, key: str) -> bool:
        if self._pickle is not None:
            return self._pickle[key].is_floating_point()
        with safe_open(self._where[key], "pt") as handle:
            return handle.get_slice(key).get_dtype() in ("F16", "BF16", "F32", "F64")

    def match(self, module_path: str) -> str | None:
        """The base tensor name of ``<module_path>.weight``, tolerating a model-class prefix
        (``bert.``, ``model.``) present on one side only."""
        want = module_path + ".weight"
        if want in self._where:
            return want
        hits = [k for k in self._where if k.endswith("." + want) or want.endswith("." + k)]
        return hits[0] if len(hits) == 1 else None


def read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise LoadError(f"{what} missing: {path}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start})"
        ) from None
    except json.JSONDecodeError as exc:
        raise LoadError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LoadError(f"{what} {path} is not a JSON object")
    return data
