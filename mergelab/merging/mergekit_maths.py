"""mergekit 0.1.5's own maths, run on task vectors with a zero tensor as the base (mergekit's
``input − base`` is then the task vector itself and its output the merged task vector), and the
mergekit YAML body each method exports."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from .method import ExportFn, MergeFn, MethodError, ModuleContext, Param

if TYPE_CHECKING:
    import torch


def _mergekit_params(values: dict) -> dict:
    return {k: v for k, v in values.items() if k != "seed"}


def generalized_task_arithmetic(
    name: str, *, consensus: str | None, sparsify: str | None, normalize: bool, rescale: bool
) -> MergeFn:
    """mergekit's ``GeneralizedTaskArithmeticMerge`` on task vectors: sparsify each (``magnitude``,
    ``random``, ``magnitude_outliers``, ``della_magprune`` or none), weight them, elect a sign per
    entry (``sum`` or ``count``) and keep agreeing entries, sum, divide by the agreeing weights
    (``normalize``), scale by λ. With a consensus (TIES and its kin) the sign election and
    disjoint mean run chunk by chunk in :func:`mergelab.merging.fastpaths.consensus_merge`, with
    TIES' magnitude trim found by selection instead of a sort; both bit-identical to mergekit's."""

    @cache
    def methods():
        from mergekit.merge_methods.generalized_task_arithmetic import (
            ConsensusMethod,
            GeneralizedTaskArithmeticMerge,
        )
        from mergekit.sparsify import SparsificationMethod

        gta = GeneralizedTaskArithmeticMerge(
            consensus_method=ConsensusMethod(consensus) if consensus else None,
            sparsification_method=SparsificationMethod(sparsify) if sparsify else None,
            default_normalize=normalize,
            default_rescale=rescale,
            method_name=name,
            method_pretty_name=None,
            method_reference_url=None,
        )
        return gta

    def merge(deltas: list[torch.Tensor], values: dict, ctx: ModuleContext) -> torch.Tensor:
        import torch
        from mergekit.merge_methods.api import merge_tensors

        params = _mergekit_params(values)
        if consensus:  # TIES and its kin (the only ones that trim by magnitude): the chunked path
            return _consensus(deltas, params)
        zero = torch.zeros_like(deltas[0])
        return merge_tensors([zero, *deltas], methods(), parameters=params, base_index=0, name=ctx.key)

    def _consensus(deltas: list[torch.Tensor], params: dict) -> torch.Tensor:
        """mergekit's merge_group for a consensus method, its parameter defaults included."""
        assert consensus is not None  # merge() calls this only for a consensus method
        from mergekit.sparsify import RescaleNorm, SparsificationMethod
        from mergekit.sparsify import magnitude as mergekit_magnitude
        from mergekit.sparsify import sparsify as mergekit_sparsify

        from .fastpaths import consensus_merge, magnitude, magnitude_threshold

        n = len(deltas)
        density = params.get("density", [1.0] * n)
        norm = RescaleNorm.l1 if params.get("rescale", rescale) else None
        thresholds = None
        if sparsify == "magnitude" and norm is None:  # TIES: the trim is folded into the chunks
            thresholds = [magnitude_threshold(d, dens) for d, dens in zip(deltas, density)]
            deltas = [
                d if t is not None or dens >= 1 else mergekit_magnitude(d, dens)  # ties at the k-th value
                for d, t, dens in zip(deltas, thresholds, density)
            ]
        elif sparsify == "magnitude":
            deltas = [magnitude(d, dens, norm) for d, dens in zip(deltas, density)]
        elif sparsify:  # in order, as mergekit does: random methods draw from the same seeded stream
            defaults = {"magnitude_outliers": {"gamma": 0.01}, "della_magprune": {"epsilon": 0.15}}
            extra = defaults.get(sparsify, {})
            deltas = [
                mergekit_sparsify(
                    d,
                    density=dens,
                    method=SparsificationMethod(sparsify),
                    rescale_norm=norm,
                    **{key: params.get(key, [value] * n)[i] for key, value in extra.items()},
                )
                for i, (d, dens) in enumerate(zip(deltas, density))
            ]
        return consensus_merge(
            deltas,
            list(params["weight"]),
            consensus=consensus,
            normalize=params.get("normalize", normalize),
            lam=params.get("lambda", 1.0),
            thresholds=thresholds,
        )

    return merge


def _linear(deltas: list[torch.Tensor], values: dict, ctx: ModuleContext) -> torch.Tensor:
    from mergekit.merge_methods.api import merge_tensors

    return merge_tensors(
        list(deltas), "linear", parameters={**_mergekit_params(values), "normalize": True}, name=ctx.key
    )


def _slerp(deltas: list[torch.Tensor], values: dict, ctx: ModuleContext) -> torch.Tensor:
    import torch
    from mergekit.merge_methods.api import merge_tensors

    if len(deltas) == 2:
        if ctx.base is None:
            raise MethodError("two-adapter SLERP needs the base weight of each module")
        w0 = ctx.base().to(deltas[0].device, deltas[0].dtype)
        merged = merge_tensors(
            [w0 + deltas[0], w0 + deltas[1]], "slerp", parameters={"t": values["t"]}, base_index=0, name=ctx.key
        )
        return merged - w0
    zero = torch.zeros_like(deltas[0])
    return merge_tensors(
        [zero, *deltas], "multislerp", parameters={"weight": values["weight"]}, base_index=0, name=ctx.key
    )


def _linear_coefficients(values: dict) -> list[float]:
    w = values["weight"]
    total = sum(w)
    return [x / total for x in w] if abs(total) >= 1e-8 else list(w)  # mergekit's divisor rule


# --- the mergekit YAML of each method ------------------------------------------------------------
def _per_model(refs: list[str], values: dict, keys: list[str]) -> list[dict]:
    return [{"model": ref, "parameters": {k: values[k][i] for k in keys}} for i, ref in enumerate(refs)]


def export_task_arithmetic(mergekit_name: str, params: tuple[Param, ...]) -> ExportFn:
    """A mergekit YAML body for ``mergekit_name``: the base as ``base_model``, per-adapter
    parameters on each model, the others shared."""
    per = [p.name for p in params if p.per_adapter]
    shared = [p.name for p in params if not p.per_adapter]

    def body(base: str, refs: list[str], values: dict) -> dict:
        return {
            "merge_method": mergekit_name,
            "base_model": base,
            "models": _per_model(refs, values, per),
            "parameters": {k: values[k] for k in shared},
        }

    return body


def _export_linear(base: str, refs: list[str], values: dict) -> dict:
    return {"merge_method": "linear", "models": _per_model(refs, values, ["weight"]), "parameters": {"normalize": True}}


def _export_slerp(base: str, refs: list[str], values: dict) -> dict:
    if len(refs) == 2:
        return {
            "merge_method": "slerp",
            "base_model": refs[0],
            "models": [{"model": refs[0]}, {"model": refs[1]}],
            "parameters": {"t": values["t"]},
        }
    return {
        "merge_method": "multislerp",
        "base_model": base,
        "models": _per_model(refs, values, ["weight"]),
        "parameters": {},
    }
