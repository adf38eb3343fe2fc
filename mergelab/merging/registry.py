"""The merge-method registry: each method is a function on one module's task vectors plus the
parameters it declares. CLI flags, the Study page's widgets, spec validation and the mergekit
export all follow from a registration, so adding a method is one :func:`register` call.

Where mergekit has the maths, the function is mergekit 0.1.5's own, run on task vectors with a
zero tensor as the base: mergekit's ``input − base`` is then the task vector itself and its output
the merged task vector — what mergekit computes on full weights, without building a full model.
TA, TIES, DARE, DARE-TIES, breadcrumbs and DELLA are one generalised task arithmetic
(:func:`generalized_task_arithmetic`: sparsify, elect signs, weighted sum, normalise, scale), with
options, exactly as mergekit's own registry builds them.

Defaults we chose, and why (mergekit's own defaults differ where noted):

* TIES density 0.2 — Yadav et al. keep the top-20 % magnitudes. mergekit defaults to density
  1.0, which trims nothing and makes TIES a sign-election-only merge.
* DARE density 0.1 (drop rate p = 0.9) — the headline setting of Yu et al. Survivors are rescaled
  so each task vector keeps its L1 norm (mergekit's rescale; ≈ 1/(1 − p) in expectation, where
  PEFT uses exactly 1/(1 − p)); seeded per module for reproducibility.
* TA λ = 0.3 — FusionBench's default ``scaling_factor`` for task arithmetic on causal LMs
  (``task_arithmetic_for_causallm``); Ilharco et al. choose λ on held-out data, mostly 0.3–0.5.
  mergekit's λ = 1 adds n task vectors at full strength. Until MergeLab 0.2, TA defaulted to 1/n,
  which *is* linear averaging: every TA merge equalled LA's, so the paper's two methods were one
  (``revision`` 2 gives the new default's units new keys).
* DARE λ = 1/n when not given: the drop-and-rescale on the linear average's scale (set λ to study
  scaling).
* SLERP: mergekit's ``slerp`` takes exactly two models; for two adapters we use it on the two
  full module weights (W₀+ΔW₁, W₀+ΔW₂, t = 0.5), exactly as ``mergekit-yaml`` would. For more
  than two adapters we use mergekit's ``multislerp`` with the base as origin (barycentric
  interpolation of the task vectors on the hypersphere, weighted mean norm) — say so when
  reporting SLERP on groups.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and mergekit load when a merge runs, not when the CLI starts (--help, methods)
    import torch


class MethodError(ValueError):
    """An unknown method or a parameter value it cannot take."""


#: Seeds are 0 … 2³² − 1 everywhere (numpy's range; SQLite stores them as integers).
SEED_MAX = 2**32 - 1


def check_seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise MethodError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return value


@dataclass(frozen=True)
class Param:
    """One declared parameter: the UI widget and the CLI flag are generated from this."""

    name: str
    kind: type  # float, int or bool
    default: Any
    help: str
    per_adapter: bool = False  # one value per adapter (weights, density)
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class ModuleContext:
    """What a method may need beyond the task vectors of one module."""

    key: str  # the base tensor's name (random methods seed per module with it)
    base: Callable[[], torch.Tensor] | None = None  # W₀ of this module, read on demand


MergeFn = Callable[[list, dict, ModuleContext], "torch.Tensor"]
ExportFn = Callable[[str, list[str], dict], dict]


@dataclass(frozen=True)
class Method:
    """A registered merge method.

    ``merge(deltas, values, ctx)`` returns one module's merged task vector from the adapters' ΔW
    (``values`` from :meth:`resolve`). ``coefficients(values)``, where the merge is a fixed linear
    combination Σ cᵢ τᵢ, lets LoRA inputs take the one-GEMM path of concatenated factors.
    ``mergekit(base, refs, values)`` writes the equivalent mergekit YAML body; ``None`` means
    mergekit has no such method.
    """

    name: str
    label: str
    description: str
    params: tuple[Param, ...]
    merge: MergeFn
    mergekit: ExportFn | None = None
    coefficients: Callable[[dict], list[float]] | None = None
    random: bool = False
    #: the merge on LoRA factors [(B·scale, A)] (adapter space); used instead of ``merge`` for LoRA inputs
    lora: Callable[[list, dict, ModuleContext], torch.Tensor] | None = None
    #: bumped when a default changes what the method computes, so studies' unit keys change with it
    revision: int = 1
    #: ``check(n, values, given)`` raises MethodError for values that cannot go together, or that mean
    #: nothing with n adapters (``values`` resolved, ``given`` as the user gave them)
    check: Callable[[int, dict, dict], None] | None = None

    def resolve(self, n: int, given: dict | None = None) -> dict:
        """Fill defaults, check ranges and per-adapter lengths; return concrete values."""
        given = dict(given or {})
        unknown = set(given) - {p.name for p in self.params} - {"seed"}
        if unknown:
            raise MethodError(f"{self.label} has no parameter(s) {sorted(unknown)}; it takes "
                              f"{[p.name for p in self.params]}")
        out = {}
        for p in self.params:
            value = given.get(p.name, p.default)
            if p.name == "lambda" and value is None:
                value = 1.0 / n
            if p.per_adapter:
                values = list(value) if isinstance(value, (list, tuple)) else [value] * n
                if len(values) != n:
                    raise MethodError(f"{self.label}: {p.name} needs one value per adapter ({n}), "
                                      f"got {len(values)}")
                out[p.name] = [_checked(self, p, v) for v in values]
            else:
                out[p.name] = _checked(self, p, value)
        try:
            out["seed"] = check_seed(given.get("seed", 0))
        except MethodError as exc:
            raise MethodError(f"{self.label}: {exc}") from None
        if self.check is not None:
            self.check(n, out, given)
        return out


def _checked(method: Method, p: Param, value):
    """``value`` as the parameter's type, or MethodError naming the parameter and what is allowed:
    booleans must be true/false, numbers finite and inside the declared range."""
    if p.kind is bool:
        if not isinstance(value, bool):
            raise MethodError(f"{method.label}: {p.name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MethodError(f"{method.label}: {p.name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise MethodError(f"{method.label}: {p.name} must be a finite number, got {value!r}")
    if (p.minimum is not None and v < p.minimum) or (p.maximum is not None and v > p.maximum):
        raise MethodError(f"{method.label}: {p.name} = {v} is outside [{p.minimum}, {p.maximum}]")
    return p.kind(v)


REGISTRY: dict[str, Method] = {}
#: The paper's five methods, in its order, and our registry name for each.
PAPER_METHODS = {"LA": "linear", "TA": "task_arithmetic", "TIES": "ties", "DARE": "dare_linear",
                 "SLERP": "slerp"}


def register(method: Method) -> Method:
    """Make ``method`` available everywhere by its name; a name may be registered once."""
    if method.name in REGISTRY or method.name in PAPER_METHODS:
        raise MethodError(f"a merge method named {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def get(name: str) -> Method:
    key = PAPER_METHODS.get(name, name)
    if key not in REGISTRY:
        raise MethodError(f"unknown merge method {name!r}; choose from {sorted(REGISTRY)} "
                          f"(or the paper's {sorted(PAPER_METHODS)})")
    return REGISTRY[key]


def merge_module(method: Method, deltas: list[torch.Tensor], values: dict,
                 base_weight: torch.Tensor | Callable[[], torch.Tensor] | None = None,
                 key: str = "") -> torch.Tensor:
    """One module's merged task vector. Random methods are seeded per module (from ``values['seed']``
    and the tensor name), so a merge is reproducible module by module."""
    import torch

    n = len(deltas)
    if n < 2:
        raise MethodError(f"merging needs at least 2 adapters, got {n}")
    base = base_weight if callable(base_weight) or base_weight is None else (lambda: base_weight)
    ctx = ModuleContext(key, base)
    if not method.random:
        return method.merge(deltas, values, ctx)
    with torch.random.fork_rng(devices=[deltas[0].device] if deltas[0].is_cuda else []):
        torch.manual_seed(_module_seed(values["seed"], key))
        return method.merge(deltas, values, ctx)


def _module_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


# --- mergekit's maths ----------------------------------------------------------------------------
def _mergekit_params(values: dict) -> dict:
    return {k: v for k, v in values.items() if k != "seed"}


def generalized_task_arithmetic(name: str, *, consensus: str | None, sparsify: str | None,
                                normalize: bool, rescale: bool) -> MergeFn:
    """mergekit's ``GeneralizedTaskArithmeticMerge`` on task vectors: sparsify each (``magnitude``,
    ``random``, ``magnitude_outliers``, ``della_magprune`` or none), weight them, elect a sign per
    entry (``sum`` or ``count``) and keep agreeing entries, sum, divide by the agreeing weights
    (``normalize``), scale by λ. TIES' magnitude trim takes the exact selection path of
    :mod:`mergelab.merging.fastpaths` (bit-identical to mergekit's sort)."""

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
            default_normalize=normalize, default_rescale=rescale, method_name=name,
            method_pretty_name=None, method_reference_url=None)
        return gta, replace(gta, sparsification_method=None)

    def merge(deltas: list[torch.Tensor], values: dict, ctx: ModuleContext) -> torch.Tensor:
        import torch
        from mergekit.merge_methods.api import merge_tensors
        from mergekit.sparsify import RescaleNorm

        from .fastpaths import magnitude

        gta, untrimmed = methods()
        params = _mergekit_params(values)
        zero = torch.zeros_like(deltas[0])
        if sparsify == "magnitude":
            norm = RescaleNorm.l1 if params.get("rescale", rescale) else None
            trimmed = [magnitude(d, dens, norm) for d, dens in zip(deltas, params["density"])]
            return merge_tensors([zero, *trimmed], untrimmed, parameters={**params, "density": 1.0},
                                 base_index=0, name=ctx.key)
        return merge_tensors([zero, *deltas], gta, parameters=params, base_index=0, name=ctx.key)

    return merge


def _linear(deltas: list[torch.Tensor], values: dict, ctx: ModuleContext) -> torch.Tensor:
    from mergekit.merge_methods.api import merge_tensors

    return merge_tensors(list(deltas), "linear", parameters={**_mergekit_params(values), "normalize": True},
                         name=ctx.key)


def _slerp(deltas: list[torch.Tensor], values: dict, ctx: ModuleContext) -> torch.Tensor:
    import torch
    from mergekit.merge_methods.api import merge_tensors

    if len(deltas) == 2:
        if ctx.base is None:
            raise MethodError("two-adapter SLERP needs the base weight of each module")
        w0 = ctx.base().to(deltas[0].device, deltas[0].dtype)
        merged = merge_tensors([w0 + deltas[0], w0 + deltas[1]], "slerp", parameters={"t": values["t"]},
                               base_index=0, name=ctx.key)
        return merged - w0
    zero = torch.zeros_like(deltas[0])
    return merge_tensors([zero, *deltas], "multislerp", parameters={"weight": values["weight"]},
                         base_index=0, name=ctx.key)


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
        return {"merge_method": mergekit_name, "base_model": base, "models": _per_model(refs, values, per),
                "parameters": {k: values[k] for k in shared}}
    return body


def _export_linear(base: str, refs: list[str], values: dict) -> dict:
    return {"merge_method": "linear", "models": _per_model(refs, values, ["weight"]),
            "parameters": {"normalize": True}}


def _export_slerp(base: str, refs: list[str], values: dict) -> dict:
    if len(refs) == 2:
        return {"merge_method": "slerp", "base_model": refs[0], "models": [{"model": refs[0]}, {"model": refs[1]}],
                "parameters": {"t": values["t"]}}
    return {"merge_method": "multislerp", "base_model": base, "models": _per_model(refs, values, ["weight"]),
            "parameters": {}}


WEIGHTS = Param("weight", float, 1.0, "relative weight of each adapter", per_adapter=True)
LAMBDA = Param("lambda", float, None, "scale of the merged task vector (default 1/n)", minimum=0.0)


def _density(default: float) -> Param:
    return Param("density", float, default, "fraction of each task vector's entries kept",
                 per_adapter=True, minimum=0.0, maximum=1.0)


def _gta(name: str, label: str, description: str, params: tuple[Param, ...], *, consensus, sparsify,
         normalize, rescale, random=False, coefficients=None, revision=1, check=None) -> Method:
    """Register one generalised-task-arithmetic variant (its mergekit name is its own)."""
    return register(Method(name, label, description, params,
                           merge=generalized_task_arithmetic(name, consensus=consensus, sparsify=sparsify,
                                                             normalize=normalize, rescale=rescale),
                           mergekit=export_task_arithmetic(name, params), coefficients=coefficients, random=random,
                           revision=revision, check=check))


register(Method("linear", "Linear averaging (LA)", "θ₀ + Σ wᵢ τᵢ / Σ wᵢ (Wortsman et al. 2022)", (WEIGHTS,),
                merge=_linear, mergekit=_export_linear, coefficients=_linear_coefficients))
TA_LAMBDA = 0.3
_gta("task_arithmetic", "Task arithmetic (TA)", "θ₀ + λ Σ wᵢ τᵢ (Ilharco et al. 2023)",
     (WEIGHTS, Param("lambda", float, TA_LAMBDA, "scale of the summed task vectors (0.3: FusionBench's default for "
                     "causal LMs; 1/n would be linear averaging)", minimum=0.0)),
     consensus=None, sparsify=None, normalize=False, rescale=False,
     coefficients=lambda v: [v["lambda"] * x for x in v["weight"]], revision=2)
_gta("ties", "TIES", "trim to top-density magnitudes, elect sign by sum, disjoint mean (Yadav et al. 2023)",
     (WEIGHTS, _density(0.2), Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0),
      Param("normalize", bool, True, "divide by the summed weights of agreeing entries")),
     consensus="sum", sparsify="magnitude", normalize=True, rescale=False)
_gta("dare_linear", "DARE (linear)",
     "drop entries with probability 1 − density, rescale survivors, add (Yu et al. 2024)",
     (WEIGHTS, _density(0.1), LAMBDA, Param("rescale", bool, True, "rescale survivors (L1 norm)")),
     consensus=None, sparsify="random", normalize=False, rescale=True, random=True)
_gta("dare_ties", "DARE-TIES", "DARE's random drop and rescale, then TIES' sign election",
     (WEIGHTS, _density(0.1), LAMBDA, Param("rescale", bool, True, "rescale survivors (L1 norm)")),
     consensus="sum", sparsify="random", normalize=False, rescale=True, random=True)
def _slerp_check(n: int, values: dict, given: dict) -> None:
    if n != 2 and "t" in given:
        raise MethodError(f"SLERP: t applies to 2 adapters (slerp between them); with {n} it merges by "
                          "multislerp, which has no t — weight them with weight instead")


register(Method("slerp", "SLERP", "2 adapters: mergekit slerp of the two full weights at t; more: mergekit "
                "multislerp of the task vectors around the base",
                (Param("t", float, 0.5, "interpolation point (2 adapters only)", minimum=0.0, maximum=1.0), WEIGHTS),
                merge=_slerp, mergekit=_export_slerp, check=_slerp_check))
_gta("breadcrumbs", "Model Breadcrumbs", "drop the largest gamma and smallest entries, keep density "
     "(Davari & Belilovsky 2023)",
     (WEIGHTS, _density(0.9), Param("gamma", float, 0.01, "fraction of largest entries dropped", per_adapter=True,
                                    minimum=0.0, maximum=1.0), LAMBDA),
     consensus=None, sparsify="magnitude_outliers", normalize=False, rescale=False)
def _della_check(n: int, values: dict, given: dict) -> None:
    for d, e in zip(values["density"], values["epsilon"]):
        if not (0 < d - e and d + e < 1):
            raise MethodError(f"DELLA: density ± epsilon must lie inside (0, 1), got density {d} and epsilon {e}")


_gta("della", "DELLA", "magnitude-ranked stochastic drop (MagPrune), rescale, TIES election (Deep et al. 2024)",
     (WEIGHTS, _density(0.5), Param("epsilon", float, 0.15, "spread of keep probabilities", per_adapter=True,
                                    minimum=0.0, maximum=1.0),
      Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0)),
     consensus="sum", sparsify="della_magprune", normalize=True, rescale=True, random=True, check=_della_check)

# --- LoRA-native methods (adapter space; mergekit has none of them) ----------------------------------
def _native(name: str, label: str, description: str, params: tuple[Param, ...], fn: str, **fixed) -> Method:
    """Register a method of :mod:`.lora_native`: ``fn(factors, **params)`` on LoRA factors, and on
    dense task vectors (full fine-tunes) through their SVD."""
    keys = [p.name for p in params]

    def kwargs(values: dict) -> dict:
        return {("lam" if k == "lambda" else k): values[k] for k in keys} | fixed

    def on_factors(factors, values, ctx):
        from . import lora_native

        return getattr(lora_native, fn)(factors, **kwargs(values)).float()

    def on_dense(deltas, values, ctx):
        from . import lora_native

        return getattr(lora_native, fn)(lora_native.factors_of(deltas), **kwargs(values)).to(deltas[0].dtype)

    return register(Method(name, label, description, params, merge=on_dense, lora=on_factors))


_SCALE = Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0)
_native("knots", "KnOTS", "SVD of the concatenated task vectors, TIES on each task's right factor in the "
        "shared basis, then reconstruct (Stoica et al. 2025)",
        (Param("density", float, 1.0, "fraction of each task's coefficients kept (KnOTS' topK / 100)", minimum=0.0,
               maximum=1.0), _SCALE, Param("ties", bool, True, "TIES sign election and disjoint mean (off: sum)")),
        "knots")
_native("tsv", "TSV-M", "each task's top singular directions, orthogonalised across tasks, summed "
        "(Gargiulo et al. 2025)", (_SCALE,), "tsv")
_native("iso_c", "Iso-C", "task-arithmetic sum with its singular values flattened to their mean "
        "(Marczak et al. 2025)", (_SCALE,), "iso_c")
_native("iso_cts", "Iso-CTS", "Iso-C on a common subspace plus each task's own directions (Marczak et al. 2025)",
        (Param("common_fraction", float, 0.8, "share of the directions given to the common space", minimum=0.0,
               maximum=1.0), _SCALE), "iso_cts")
_native("core_ties", "Core-space TIES", "TIES on the tasks' small core matrices in shared LoRA bases, "
        "reconstructed exactly (Panariello et al. 2025)",
        (Param("density", float, 0.1, "fraction of each core kept (the reference's topK 10 %)", minimum=0.0,
               maximum=1.0), _SCALE), "core_ties")
_native("core_tsv", "Core-space TSV", "TSV-M on the tasks' core matrices in shared LoRA bases "
        "(Panariello et al. 2025)", (_SCALE,), "core_tsv")

#: The registry under its old name (tests and pages iterate over it).
METHODS = REGISTRY
