"""Write the mergekit YAML that reproduces a MergeLab merge with ``mergekit-yaml`` itself.

Models are ``base+adapter`` references, which mergekit turns into full models by merging each
LoRA into the base (it needs ``--lora-merge-cache DIR``). Run:
``mergekit-yaml merge.yaml OUT --lora-merge-cache CACHE``. Each method writes its own YAML body
(its registration's ``mergekit``); a method mergekit does not have says so.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from . import registry


def mergekit_config(base: str, adapters: list[str], method: str, params: dict | None = None,
                    dtype: str = "float32") -> dict:
    spec = registry.get(method)
    if len(adapters) < 2:
        raise registry.MethodError(f"merging needs at least 2 adapters, got {len(adapters)}")
    values = spec.resolve(len(adapters), params)
    if spec.mergekit is None:
        raise registry.MethodError(f"mergekit has no {spec.label} method ({spec.name}): there is no mergekit "
                                   "YAML for this merge; MergeLab computes it itself (mergelab merge)")
    # LoRA adapters enter as base+adapter; full fine-tuned checkpoints (a model folder without
    # adapter_config.json) enter as themselves.
    refs = [a if (Path(a) / "config.json").exists() and not (Path(a) / "adapter_config.json").exists()
            else f"{base}+{a}" for a in adapters]
    return {"dtype": dtype, **spec.mergekit(base, refs, values)}


def mergekit_yaml(*args, **kwargs) -> str:
    return yaml.safe_dump(mergekit_config(*args, **kwargs), sort_keys=False)
