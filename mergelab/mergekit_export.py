"""Write the mergekit YAML that reproduces a MergeLab merge with ``mergekit-yaml`` itself.

Models are ``base+adapter`` references, which mergekit turns into full models by merging each
LoRA into the base (it needs ``--lora-merge-cache DIR``). Run:
``mergekit-yaml merge.yaml OUT --lora-merge-cache CACHE``.
"""

from __future__ import annotations

import yaml

from . import methods


def mergekit_config(base: str, adapters: list[str], method: str, params: dict | None = None,
                    dtype: str = "float32") -> dict:
    spec = methods.get(method)
    if len(adapters) < 2:
        raise methods.MethodError(f"merging needs at least 2 adapters, got {len(adapters)}")
    values = spec.resolve(len(adapters), params)
    from pathlib import Path

    # LoRA adapters enter as base+adapter; full fine-tuned checkpoints (a model folder without
    # adapter_config.json) enter as themselves.
    refs = [a if (Path(a) / "config.json").exists() and not (Path(a) / "adapter_config.json").exists()
            else f"{base}+{a}" for a in adapters]
    per = [p.name for p in spec.params if p.per_adapter]
    shared = {p.name: values[p.name] for p in spec.params if not p.per_adapter}
    shared.update(spec.options)

    def model_entries(names=refs, keys=per):
        return [{"model": ref, "parameters": {k: values[k][i] for k in keys}}
                for i, ref in enumerate(names)]

    cfg: dict = {"dtype": dtype}
    if spec.name == "slerp" and len(adapters) == 2:
        cfg.update(merge_method="slerp", base_model=refs[0],
                   models=[{"model": refs[0]}, {"model": refs[1]}], parameters={"t": values["t"]})
    elif spec.name == "slerp":
        cfg.update(merge_method="multislerp", base_model=base,
                   models=model_entries(keys=["weight"]), parameters={})
    elif spec.mergekit == "linear":
        cfg.update(merge_method="linear", models=model_entries(), parameters=shared)
    else:
        cfg.update(merge_method=spec.mergekit, base_model=base, models=model_entries(),
                   parameters=shared)
    return cfg


def mergekit_yaml(*args, **kwargs) -> str:
    return yaml.safe_dump(mergekit_config(*args, **kwargs), sort_keys=False)
