"""Merge an adapter set in adapter space, and save the result as a model or a LoRA adapter."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..io.adapters import AdapterSet
from ..io.errors import LoadError
from . import registry
from .device import pick_device
from .fastpaths import linear_combination
from .method import ModuleContext, merge_module

Progress = Callable[[int, int, str], None]
COPY_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.*",
    "merges.txt",
    "*.model",
    "sentence_bert_config.json",
    "modules.json",
)


@dataclass
class MergeResult:
    method: str
    params: dict
    deltas: dict[str, torch.Tensor]  # base tensor name -> merged ΔW (CPU, float32)
    adapter_set: AdapterSet


def merge(
    adapter_set: AdapterSet,
    method: str,
    params: dict | None = None,
    *,
    device: str | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Merge every adapted module with ``method``; returns merged task vectors on the CPU."""
    spec = registry.get(method)
    values = spec.resolve(len(adapter_set.adapters), params)
    dev = pick_device(device)
    coeffs = spec.coefficients(values) if spec.coefficients and adapter_set.is_lora else None
    fan_in_fan_out = bool(adapter_set.adapters[0].config.get("fan_in_fan_out"))
    total = len(adapter_set.module_keys)
    out = {}
    with torch.no_grad():
        for i, (module, key) in enumerate(adapter_set.module_keys.items()):
            if spec.lora is not None and adapter_set.is_lora:  # adapter space, on the factors
                factors = [
                    (a.lora_b[module].to(dev, torch.float32) * a.scale(module), a.lora_a[module].to(dev, torch.float32))
                    for a in adapter_set.adapters
                ]
                if fan_in_fan_out:  # ΔW = (B·A)ᵀ = Aᵀ·Bᵀ
                    factors = [(a.T, b.T) for b, a in factors]
                merged = spec.lora(factors, values, ModuleContext(key))
            elif coeffs is not None:  # LA / TA: one GEMM of concatenated factors (fastpaths)
                factors = [
                    (a.lora_a[module].to(dev, torch.float32), a.lora_b[module].to(dev, torch.float32), a.scale(module))
                    for a in adapter_set.adapters
                ]
                merged = linear_combination(factors, coeffs, fan_in_fan_out)
            else:
                deltas = [a.delta(module, device=dev) for a in adapter_set.adapters]
                merged = merge_module(
                    spec,
                    deltas,
                    values,
                    key=key,
                    base_weight=lambda k=key: adapter_set.base.get(k).to(dev, torch.float32),
                )
            if not torch.isfinite(merged).all():
                raise registry.MethodError(f"{spec.label} produced NaN/inf in {key}")
            out[key] = merged.to("cpu", torch.float32)
            if progress:
                progress(i + 1, total, key)
    return MergeResult(spec.name, values, out, adapter_set)


def save_model(result: MergeResult, out_dir: str | Path, progress: Progress | None = None) -> Path:
    """Write base + merged ΔW as a Hugging Face model folder (safetensors), tensor by tensor.

    The base checkpoint is read and never modified; config and tokenizer files are copied.
    Classification heads saved by the adapters (``modules_to_save``) are task-specific and are
    not merged: the folder carries the base's own tensors for them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = result.adapter_set.base
    state = {}
    keys = base.keys()
    for i, key in enumerate(keys):
        tensor = base.get(key)
        if key in result.deltas:
            tensor = (tensor.float() + result.deltas[key]).to(tensor.dtype)
        state[key] = tensor.contiguous()
        if progress:
            progress(i + 1, len(keys), key)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    for pattern in COPY_PATTERNS:
        for f in base.folder.glob(pattern):
            if f.is_file() and not (out / f.name).exists():
                shutil.copy2(f, out / f.name)
    _write_card(result, out)
    return out


def save_adapter(result: MergeResult, out_dir: str | Path, rank: int) -> dict:
    """Write the merged ΔW as a PEFT LoRA adapter by truncated SVD at ``rank``.

    ΔW ≈ B·A with B = U_r·sqrt(S_r), A = sqrt(S_r)·V_rᵀ and lora_alpha = r (scale 1). A module whose
    smaller dimension is below ``rank`` keeps the rank its shape allows, recorded in the config's
    ``rank_pattern`` / ``alpha_pattern`` so PEFT (and MergeLab) reload it at scale 1. Returns the
    relative Frobenius reconstruction error ||ΔW − ΔŴ|| / ||ΔW|| per module, where ΔŴ is what the
    saved adapter reloads as, plus max and mean.
    """
    if rank < 1:
        raise LoadError(f"adapter rank must be ≥ 1, got {rank}")
    if not result.adapter_set.is_lora:
        raise LoadError(
            "--format adapter needs LoRA inputs; full fine-tuned checkpoints merge to a model folder (--format model)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = result.adapter_set.adapters[0]
    key_of = {v: k for k, v in result.adapter_set.module_keys.items()}
    state, errors, capped = {}, {}, {}
    for key, dw in result.deltas.items():
        u, s, vh = torch.linalg.svd(dw.double(), full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        b = (u[:, :r] * root).float()
        a = (root[:, None] * vh[:r]).float()
        norm = dw.norm().item()
        errors[key] = float((dw - b @ a).norm().item() / norm) if norm > 0 else 0.0  # scale alpha/r = 1
        if ref.config.get("fan_in_fan_out"):
            a, b = b.T.contiguous(), a.T.contiguous()
        module = key_of[key]
        if r < rank:
            capped[module] = r
        state[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        state[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    save_file(state, out / "adapter_model.safetensors", metadata={"format": "pt"})
    targets = sorted({m.split(".")[-1] for m in result.adapter_set.module_keys})
    config = {
        k: v
        for k, v in ref.config.items()
        if k not in ("rank_pattern", "alpha_pattern", "use_rslora", "modules_to_save")
    }
    config.update(
        {
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": rank,
            "target_modules": targets,
            "use_rslora": False,
            "rank_pattern": capped,
            "alpha_pattern": dict(capped),
            "modules_to_save": None,
        }
    )
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    values = list(errors.values())
    _write_card(result, out)
    return {"per_module": errors, "max": max(values), "mean": sum(values) / len(values), "capped": capped}


def _write_card(result: MergeResult, out: Path) -> None:
    (out / "mergelab_merge.json").write_text(
        json.dumps(
            {
                "method": result.method,
                "params": result.params,
                "base": result.adapter_set.base_ref,
                "adapters": {a.name: str(a.folder) for a in result.adapter_set.adapters},
                "note": "Merged in adapter space by MergeLab with mergekit 0.1.5's tensor maths; "
                "task-specific heads (modules_to_save) are not merged.",
            },
            indent=2,
        )
    )


def read_folder(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model folder (all *.safetensors files), for comparisons."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out
