"""PEFT LoRA adapters and fully fine-tuned checkpoints as task vectors, validated against a base.

Nothing here builds a full model: a LoRA task vector ΔW = B·A·scale is formed per module on demand,
and a full checkpoint's τ = θ_i − θ_0 is read tensor by tensor. Safetensors only unless the caller
opts in to pickle files (``allow_pickle=True``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import LoadError
from .hub import PACKAGED_BASES, resolve_dir
from .weights import BaseWeights, load_pickle, read_json

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."


@dataclass
class LoraAdapter:
    """One PEFT LoRA adapter: its config, its A/B factors per module, its saved heads."""

    name: str
    folder: Path
    config: dict
    lora_a: dict[str, torch.Tensor]
    lora_b: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def modules(self) -> list[str]:
        return sorted(self.lora_a)

    def rank(self, module: str) -> int:
        return int(self.lora_a[module].shape[0])

    def scale(self, module: str) -> float:
        """alpha / r, or alpha / sqrt(r) with rsLoRA; rank_pattern / alpha_pattern honoured."""
        r = self.rank(module)
        alpha = self.config.get("lora_alpha", r)
        for key, value in (self.config.get("alpha_pattern") or {}).items():
            if module == key or module.endswith("." + key):
                alpha = value
        if self.config.get("use_rslora"):
            return alpha / math.sqrt(r)
        return alpha / r

    def delta(
        self, module: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """ΔW = B·A·scale for ``module`` (transposed for fan_in_fan_out layers)."""
        a = self.lora_a[module].to(device=device, dtype=dtype)
        b = self.lora_b[module].to(device=device, dtype=dtype)
        dw = (b @ a) * self.scale(module)
        return dw.T if self.config.get("fan_in_fan_out") else dw


@dataclass
class FullCheckpoint:
    """A fully fine-tuned checkpoint of the same architecture: task vector τ = θ_i − θ_0, read
    lazily tensor by tensor from both safetensors files."""

    name: str
    folder: Path
    config: dict
    weights: BaseWeights
    base: BaseWeights | None = None
    heads: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def modules(self) -> list[str]:
        return self.weights.keys()

    def rank(self, module: str) -> None:
        return None

    def delta(
        self, module: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        if self.base is None:
            raise LoadError(f"checkpoint {self.name!r} has no base attached (use load_adapter_set)")
        return self.weights.get(module).to(device, dtype) - self.base.get(module).to(device, dtype)


UNSUPPORTED_FLAGS = {"use_dora": "DoRA", "use_qalora": "QA-LoRA"}


def load_adapter(
    id_or_path: str | os.PathLike, name: str | None = None, *, allow_pickle: bool = False
) -> LoraAdapter | FullCheckpoint:
    """Read a PEFT LoRA adapter folder (or hub id) — or, for a folder with a model config and no
    adapter config, a fully fine-tuned checkpoint. Refuses non-LoRA PEFT types and variants."""
    folder = resolve_dir(id_or_path, what="adapter", allow_pickle=allow_pickle)
    label = name or folder.name
    if not (folder / "adapter_config.json").exists() and (folder / "config.json").exists():
        weights = BaseWeights(folder, allow_pickle=allow_pickle)
        return FullCheckpoint(label, folder, weights.config, weights)
    config = read_json(folder / "adapter_config.json", f"adapter {label!r} config")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise LoadError(f"adapter {label!r} is a {peft_type or 'unknown'} adapter; MergeLab merges LoRA adapters")
    for flag, variant in UNSUPPORTED_FLAGS.items():
        if config.get(flag):
            raise LoadError(
                f"adapter {label!r} uses {variant} ({flag}=true), which MergeLab does not "
                "support yet: its weight is not B·A·scale alone"
            )
    weights = folder / ADAPTER_WEIGHTS
    if weights.exists():
        try:
            state = load_file(weights)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise LoadError(f"adapter {label!r}: {weights} is corrupted or not safetensors ({exc})") from None
    elif (folder / ADAPTER_PICKLE).exists():
        if not allow_pickle:
            raise LoadError(
                f"adapter {label!r} has only {ADAPTER_PICKLE} (pickle, can run code when "
                "loaded); convert it to safetensors or opt in with --allow-pickle"
            )
        state = load_pickle(folder / ADAPTER_PICKLE, f"adapter {label!r}:")
    else:
        raise LoadError(f"adapter {label!r}: no {ADAPTER_WEIGHTS} in {folder}")
    lora_a, lora_b, heads = {}, {}, {}
    for key, tensor in state.items():
        path = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        if ".lora_embedding_" in path or ".lora_magnitude_vector" in path:
            raise LoadError(f"adapter {label!r} has {path}: LoRA on embeddings / DoRA magnitudes are not supported yet")
        if ".lora_A." in path:
            lora_a[path.split(".lora_A.")[0]] = tensor
        elif ".lora_B." in path:
            lora_b[path.split(".lora_B.")[0]] = tensor
        else:
            heads[path] = tensor  # modules_to_save (e.g. a classification head): never merged
    if not lora_a:
        raise LoadError(f"adapter {label!r} contains no LoRA weights")
    if set(lora_a) != set(lora_b):
        raise LoadError(
            f"adapter {label!r} has LoRA A without B (or B without A) for: {sorted(set(lora_a) ^ set(lora_b))[:5]}"
        )
    for module in lora_a:
        a, b = lora_a[module], lora_b[module]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LoadError(
                f"adapter {label!r}, module {module}: A {tuple(a.shape)} and B {tuple(b.shape)} "
                "do not form a rank-r product"
            )
        if not (a.is_floating_point() and b.is_floating_point()):
            kinds = sorted({str(t.dtype).removeprefix("torch.") for t in (a, b)})
            raise LoadError(
                f"adapter {label!r}, module {module}: LoRA factors are {'/'.join(kinds)}, not floating point"
            )
        if a.shape[0] > min(b.shape[0], a.shape[1]):
            raise LoadError(
                f"adapter {label!r}, module {module}: rank {a.shape[0]} exceeds the module's "
                f"smaller dimension {min(b.shape[0], a.shape[1])} (ΔW is {b.shape[0]}×{a.shape[1]})"
            )
    return LoraAdapter(label, folder, config, lora_a, lora_b, heads)


# --- a validated set -----------------------------------------------------------------------------
@dataclass
class AdapterSet:
    """A base plus adapters validated against it; yields task vectors module by module."""

    base: BaseWeights
    base_ref: str
    adapters: list[LoraAdapter]
    module_keys: dict[str, str]  # adapter module path -> base tensor name

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.adapters]

    @property
    def is_lora(self) -> bool:
        """LoRA adapters (factors available), rather than full fine-tuned checkpoints."""
        return all(isinstance(a, LoraAdapter) for a in self.adapters)

    def task_vectors(self, device: str | torch.device = "cpu") -> Iterator[tuple[str, list[torch.Tensor]]]:
        """(base tensor name, [ΔW per adapter]) for every adapted module, one module at a time."""
        for module, key in self.module_keys.items():
            yield key, [a.delta(module, device=device) for a in self.adapters]


def load_adapter_set(
    base: str | os.PathLike,
    adapters: dict[str, str | os.PathLike] | list,
    *,
    allow_pickle: bool = False,
    check_base_name: bool = True,
    min_adapters: int = 2,
) -> AdapterSet:
    """Load a base and its adapters and check each adapter against the base and the others.

    Errors (``LoadError``) name the adapter and what differs: its recorded base model, its target
    modules, a module missing from the base, a shape that does not fit the base weight, NaN or
    infinite factors. Ranks may differ between adapters (task vectors do not care).
    """
    if isinstance(adapters, (list, tuple)):
        adapters = {Path(str(a)).name: a for a in adapters}
    if len(adapters) < min_adapters:
        raise LoadError(
            f"merging needs at least {min_adapters} adapters, got {len(adapters)}"
            + (": add adapters, one per task" if not adapters else "")
        )
    base_dir = resolve_dir(base, what="base model", allow_pickle=allow_pickle)
    weights = BaseWeights(base_dir, allow_pickle=allow_pickle)
    loaded = [load_adapter(path, name, allow_pickle=allow_pickle) for name, path in adapters.items()]
    names = {
        _name_variants(str(base)),
        _name_variants(str(base_dir)),
        _name_variants(str(weights.config.get("_name_or_path", ""))),
    }
    if str(base) in PACKAGED_BASES:
        names.add(_name_variants(PACKAGED_BASES[str(base)][1]))
    full = [a for a in loaded if isinstance(a, FullCheckpoint)]
    if full:
        if len(full) != len(loaded):
            raise LoadError(
                "mixing LoRA adapters and full fine-tuned checkpoints in one merge is not "
                f"supported (full: {[a.name for a in full]})"
            )
        return AdapterSet(weights, str(base), loaded, _full_checkpoint_keys(weights, full))
    reference = loaded[0]
    module_keys: dict[str, str] = {}
    for adapter in loaded:
        recorded = adapter.config.get("base_model_name_or_path")
        if check_base_name and recorded and _name_variants(recorded) not in names:
            raise LoadError(
                f"adapter {adapter.name!r} was trained on base {recorded!r}, not on {str(base)!r}. "
                "If they are the same weights under another name, pass check_base_name=False "
                "(CLI: --ignore-base-name)."
            )
        if set(adapter.modules) != set(reference.modules):
            only_here = sorted(set(adapter.modules) - set(reference.modules))
            only_there = sorted(set(reference.modules) - set(adapter.modules))
            raise LoadError(
                f"adapter {adapter.name!r} targets different modules than {reference.name!r}: "
                f"only in {adapter.name!r}: {_short(only_here)}; only in {reference.name!r}: "
                f"{_short(only_there)}"
            )
        for module in adapter.modules:
            key = module_keys.get(module) or weights.match(module)
            if key is None:
                raise LoadError(
                    f"adapter {adapter.name!r} targets {module}, which the base model {str(base)!r} does not have"
                )
            module_keys[module] = key
            expected = weights.shape(key)
            a, b = adapter.lora_a[module], adapter.lora_b[module]
            got = (b.shape[0], a.shape[1])
            if adapter.config.get("fan_in_fan_out"):
                got = got[::-1]
            if tuple(got) != tuple(expected):
                raise LoadError(
                    f"adapter {adapter.name!r}, module {module}: its ΔW would be {tuple(got)} "
                    f"but the base weight {key} is {tuple(expected)}"
                )
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise LoadError(
                    f"adapter {adapter.name!r}, module {module}: NaN or infinite values in its LoRA factors"
                )
    return AdapterSet(weights, str(base), loaded, module_keys)


def _full_checkpoint_keys(base: BaseWeights, checkpoints: list[FullCheckpoint]) -> dict[str, str]:
    """Every floating-point base tensor, checked present with the same shape in each checkpoint."""
    keys = {key: key for key in base.keys() if base.is_float(key)}
    for ckpt in checkpoints:
        if ckpt.config.get("model_type") != base.config.get("model_type"):
            raise LoadError(
                f"checkpoint {ckpt.name!r} is a {ckpt.config.get('model_type')!r} model, "
                f"the base is {base.config.get('model_type')!r}"
            )
        present = set(ckpt.weights.keys())
        missing = [k for k in keys if k not in present]
        if missing:
            raise LoadError(f"checkpoint {ckpt.name!r} lacks base tensors: {_short(missing)}")
        for k in keys:
            if ckpt.weights.shape(k) != base.shape(k):
                raise LoadError(
                    f"checkpoint {ckpt.name!r}: {k} is {ckpt.weights.shape(k)}, the base has {base.shape(k)}"
                )
        ckpt.base = base
    return keys


def _name_variants(name: str) -> str:
    """Compare base names by their last path component, case-insensitively."""
    return name.rstrip("/").split("/")[-1].lower()


def _short(items: list[str], n: int = 4) -> str:
    return (", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")) or "none"
