"""Write the mergekit YAML that reproduces a MergeLab merge with ``mergekit-yaml`` itself.

Models are ``base+adapter`` references, which mergekit turns into full models by merging each
LoRA into the base (it needs ``--lora-merge-cache DIR``). Run:
``mergekit-yaml merge.yaml OUT --lora-merge-cache CACHE``. Each method writes its own YAML body
(its registration's ``mergekit``); a method mergekit does not have says so.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..io.yaml_files import YamlFileError, load_yaml
from . import registry


def mergekit_config(
    base: str, adapters: list[str], method: str, params: dict | None = None, dtype: str = "float32"
) -> dict:
    spec = registry.get(method)
    if len(adapters) < 2:
        raise registry.MethodError(f"merging needs at least 2 adapters, got {len(adapters)}")
    values = spec.resolve(len(adapters), params)
    if spec.mergekit is None:
        raise registry.MethodError(
            f"mergekit has no {spec.label} method ({spec.name}): there is no mergekit "
            "YAML for this merge; MergeLab computes it itself (mergelab merge)"
        )
    # LoRA adapters enter as base+adapter; full fine-tuned checkpoints (a model folder without
    # adapter_config.json) enter as themselves.
    refs = [
        a if (Path(a) / "config.json").exists() and not (Path(a) / "adapter_config.json").exists() else f"{base}+{a}"
        for a in adapters
    ]
    return {"dtype": dtype, **spec.mergekit(base, refs, values)}


def mergekit_yaml(*args, **kwargs) -> str:
    return yaml.safe_dump(mergekit_config(*args, **kwargs), sort_keys=False)


# --- the other direction: a mergekit YAML users already have -------------------------------------------
#: mergekit parameters MergeLab computes the same way but does not take (their mergekit default is kept)
IGNORED = {"int8_mask", "normalize_weights"}
#: the most models a mergekit YAML may list (a merge of more adapters is not a task group)
MAX_MODELS = 256


class MergekitImportError(ValueError):
    """A mergekit YAML MergeLab cannot express (the message says what)."""


def study_draft(merge: dict, name: str = "from-mergekit") -> dict:
    """A Study-page draft from :func:`from_mergekit`'s result: base, one adapter per (to-be-named)
    task, the method; tasks and their data are the user's to add."""
    from pathlib import Path

    tasks = {}
    for path in merge["adapters"]:
        task = Path(path.rstrip("/")).name or "task"
        while task in tasks:
            task += "_"
        tasks[task] = path
    return {
        "name": name,
        "base": merge["base"],
        "adapters": tasks,
        "groups": {"merged": list(tasks)},
        "methods": {merge["method"]: merge["params"]},
    }


def from_mergekit(config: dict | str) -> dict:
    """A mergekit YAML (text or parsed) → ``{"base", "adapters", "method", "params"}`` for
    ``mergelab merge`` or a study draft. Models must be ``base+adapter`` references (LoRA adapters)
    on one base, or full checkpoints of it; one clear MergekitImportError for anything else."""
    if isinstance(config, str):
        try:
            config = load_yaml(config, what="mergekit config")
        except YamlFileError as exc:
            raise MergekitImportError("; ".join(exc.problems)) from None
    if not isinstance(config, dict) or "merge_method" not in config:
        raise MergekitImportError("not a mergekit merge config: it has no merge_method")
    models = config.get("models") or []
    if not isinstance(models, list):
        raise MergekitImportError(f"models must be a list of models, got {type(models).__name__}")
    if len(models) > MAX_MODELS:
        raise MergekitImportError(f"models lists {len(models):,} models; MergeLab merges at most {MAX_MODELS}")
    for i, entry in enumerate(models):
        if isinstance(entry, dict):
            if not isinstance(entry.get("model"), str):
                raise MergekitImportError(f"models[{i}] has no model (a base+adapter reference or a model folder)")
            if not isinstance(entry.get("parameters") or {}, dict):
                raise MergekitImportError(f"models[{i}].parameters must be a mapping of name: value")
        elif not isinstance(entry, str):
            raise MergekitImportError(f"models[{i}] must be a model reference or a mapping with model:")
    if not isinstance(config.get("parameters") or {}, dict):
        raise MergekitImportError("parameters must be a mapping of name: value")
    if "slices" in config:
        raise MergekitImportError(
            "mergekit 'slices' (layer ranges per model) have no MergeLab equivalent; use 'models' with whole models"
        )
    method = config["merge_method"]
    name = registry.from_mergekit_name(str(method))
    if name is None:
        known = sorted(n for m in registry.METHODS.values() for n in m.mergekit_names)
        raise MergekitImportError(
            f"mergekit method {method!r} has no MergeLab equivalent (MergeLab computes {', '.join(known)})"
        )
    base = config.get("base_model")
    if base is not None and "+" in str(base):  # two-model slerp: the base is one of the models
        base = str(base).partition("+")[0]
    adapters, bases, per_model = [], set(), []
    for entry in models:
        ref = str(entry["model"] if isinstance(entry, dict) else entry)
        if "+" in ref:
            b, _, adapter = ref.partition("+")
            bases.add(b)
        elif ref != base:
            adapter = ref  # a full fine-tuned checkpoint of the base
        else:
            continue  # the base itself, listed as a model (mergekit's TIES configs do)
        adapters.append(adapter)
        per_model.append((entry.get("parameters") or {}) if isinstance(entry, dict) else {})
    if len(bases) > 1:
        raise MergekitImportError(
            f"the models sit on different bases ({', '.join(sorted(bases))}); MergeLab merges adapters of one base"
        )
    base = next(iter(bases)) if bases else base
    if base is None:
        raise MergekitImportError("no base model: give base_model, or models as base+adapter")
    spec = registry.get(name)
    declared = {p.name: p for p in spec.params}
    params: dict = {}
    shared = dict(config.get("parameters") or {})
    for key, value in shared.items():
        if key in IGNORED:
            continue
        if key == "normalize" and name == "linear":
            if value is not True:
                raise MergekitImportError(
                    "linear with normalize: false (a plain weighted sum) is task_arithmetic with "
                    "lambda 1 in MergeLab; write that"
                )
            continue
        if key not in declared or isinstance(value, dict | list):
            raise MergekitImportError(
                f"parameter {key!r} = {value!r} of {method} has no MergeLab equivalent "
                f"({spec.label} takes {', '.join(declared) or 'no parameters'})"
            )
        params[key] = value
    for key in {k for p in per_model for k in p}:
        if key not in declared or not declared[key].per_adapter:
            raise MergekitImportError(f"per-model parameter {key!r} has no MergeLab equivalent for {spec.label}")
        values = [p.get(key, declared[key].default) for p in per_model]
        if any(isinstance(v, dict | list) for v in values):
            raise MergekitImportError(
                f"per-model parameter {key!r} varies by tensor (a gradient or filter); MergeLab "
                "takes one value per adapter"
            )
        params[key] = values
    if len(adapters) < 2:
        raise MergekitImportError(f"merging needs at least 2 adapters, the config has {len(adapters)}")
    spec.resolve(len(adapters), params)  # the same checks as any merge
    return {"base": base, "adapters": adapters, "method": name, "params": params}
