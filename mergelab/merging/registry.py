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

from .mergekit_maths import (
    _export_linear,
    _export_slerp,
    _linear,
    _linear_coefficients,
    _slerp,
    export_task_arithmetic,
    generalized_task_arithmetic,
)
from .method import (  # the registry's API: what callers use through `registry.…`
    PAPER_METHODS,
    REGISTRY,
    Method,
    MethodError,
    Param,
    get,
    register,
    unregister,
)

__all__ = [
    "METHODS",
    "PAPER_METHODS",
    "REGISTRY",
    "TA_LAMBDA",
    "Method",
    "MethodError",
    "Param",
    "from_mergekit_name",
    "get",
    "register",
    "unregister",
]


WEIGHTS = Param("weight", float, 1.0, "relative weight of each adapter", per_adapter=True)
LAMBDA = Param("lambda", float, None, "scale of the merged task vector (default 1/n)", minimum=0.0)


def _density(default: float) -> Param:
    return Param(
        "density",
        float,
        default,
        "fraction of each task vector's entries kept",
        per_adapter=True,
        minimum=0.0,
        maximum=1.0,
    )


def _gta(
    name: str,
    label: str,
    description: str,
    params: tuple[Param, ...],
    *,
    consensus,
    sparsify,
    normalize,
    rescale,
    random=False,
    coefficients=None,
    revision=1,
    check=None,
) -> Method:
    """Register one generalised-task-arithmetic variant (its mergekit name is its own)."""
    return register(
        Method(
            name,
            label,
            description,
            params,
            merge=generalized_task_arithmetic(
                name, consensus=consensus, sparsify=sparsify, normalize=normalize, rescale=rescale
            ),
            mergekit=export_task_arithmetic(name, params),
            coefficients=coefficients,
            random=random,
            revision=revision,
            check=check,
            mergekit_names=(name,),
        )
    )


register(
    Method(
        "linear",
        "Linear averaging (LA)",
        "θ₀ + Σ wᵢ τᵢ / Σ wᵢ (Wortsman et al. 2022)",
        (WEIGHTS,),
        merge=_linear,
        mergekit=_export_linear,
        coefficients=_linear_coefficients,
        mergekit_names=("linear",),
    )
)
TA_LAMBDA = 0.3
_gta(
    "task_arithmetic",
    "Task arithmetic (TA)",
    "θ₀ + λ Σ wᵢ τᵢ (Ilharco et al. 2023)",
    (
        WEIGHTS,
        Param(
            "lambda",
            float,
            TA_LAMBDA,
            "scale of the summed task vectors (0.3: FusionBench's default for "
            "causal LMs; 1/n would be linear averaging)",
            minimum=0.0,
        ),
    ),
    consensus=None,
    sparsify=None,
    normalize=False,
    rescale=False,
    coefficients=lambda v: [v["lambda"] * x for x in v["weight"]],
    revision=2,
)
_gta(
    "ties",
    "TIES",
    "trim to top-density magnitudes, elect sign by sum, disjoint mean (Yadav et al. 2023)",
    (
        WEIGHTS,
        _density(0.2),
        Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0),
        Param("normalize", bool, True, "divide by the summed weights of agreeing entries"),
    ),
    consensus="sum",
    sparsify="magnitude",
    normalize=True,
    rescale=False,
)
_gta(
    "dare_linear",
    "DARE (linear)",
    "drop entries with probability 1 − density, rescale survivors, add (Yu et al. 2024)",
    (WEIGHTS, _density(0.1), LAMBDA, Param("rescale", bool, True, "rescale survivors (L1 norm)")),
    consensus=None,
    sparsify="random",
    normalize=False,
    rescale=True,
    random=True,
)
_gta(
    "dare_ties",
    "DARE-TIES",
    "DARE's random drop and rescale, then TIES' sign election",
    (WEIGHTS, _density(0.1), LAMBDA, Param("rescale", bool, True, "rescale survivors (L1 norm)")),
    consensus="sum",
    sparsify="random",
    normalize=False,
    rescale=True,
    random=True,
)


def _slerp_check(n: int, values: dict, given: dict) -> None:
    if n != 2 and "t" in given:
        raise MethodError(
            f"SLERP: t applies to 2 adapters (slerp between them); with {n} it merges by "
            "multislerp, which has no t — weight them with weight instead"
        )


register(
    Method(
        "slerp",
        "SLERP",
        "2 adapters: mergekit slerp of the two full weights at t; more: mergekit "
        "multislerp of the task vectors around the base",
        (Param("t", float, 0.5, "interpolation point (2 adapters only)", minimum=0.0, maximum=1.0), WEIGHTS),
        merge=_slerp,
        mergekit=_export_slerp,
        check=_slerp_check,
        mergekit_names=("slerp", "multislerp"),
    )
)
_gta(
    "breadcrumbs",
    "Model Breadcrumbs",
    "drop the largest gamma and smallest entries, keep density (Davari & Belilovsky 2023)",
    (
        WEIGHTS,
        _density(0.9),
        Param("gamma", float, 0.01, "fraction of largest entries dropped", per_adapter=True, minimum=0.0, maximum=1.0),
        LAMBDA,
    ),
    consensus=None,
    sparsify="magnitude_outliers",
    normalize=False,
    rescale=False,
)


def _della_check(n: int, values: dict, given: dict) -> None:
    for d, e in zip(values["density"], values["epsilon"]):
        if not (0 < d - e and d + e < 1):
            raise MethodError(f"DELLA: density ± epsilon must lie inside (0, 1), got density {d} and epsilon {e}")


_gta(
    "della",
    "DELLA",
    "magnitude-ranked stochastic drop (MagPrune), rescale, TIES election (Deep et al. 2024)",
    (
        WEIGHTS,
        _density(0.5),
        Param("epsilon", float, 0.15, "spread of keep probabilities", per_adapter=True, minimum=0.0, maximum=1.0),
        Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0),
    ),
    consensus="sum",
    sparsify="della_magprune",
    normalize=True,
    rescale=True,
    random=True,
    check=_della_check,
)


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
_native(
    "knots",
    "KnOTS",
    "SVD of the concatenated task vectors, TIES on each task's right factor in the "
    "shared basis, then reconstruct (Stoica et al. 2025)",
    (
        Param(
            "density",
            float,
            1.0,
            "fraction of each task's coefficients kept (KnOTS' topK / 100)",
            minimum=0.0,
            maximum=1.0,
        ),
        _SCALE,
        Param("ties", bool, True, "TIES sign election and disjoint mean (off: sum)"),
    ),
    "knots",
)
_native(
    "tsv",
    "TSV-M",
    "each task's top singular directions, orthogonalised across tasks, summed (Gargiulo et al. 2025)",
    (_SCALE,),
    "tsv",
)
_native(
    "iso_c",
    "Iso-C",
    "task-arithmetic sum with its singular values flattened to their mean (Marczak et al. 2025)",
    (_SCALE,),
    "iso_c",
)
_native(
    "iso_cts",
    "Iso-CTS",
    "Iso-C on a common subspace plus each task's own directions (Marczak et al. 2025)",
    (
        Param(
            "common_fraction", float, 0.8, "share of the directions given to the common space", minimum=0.0, maximum=1.0
        ),
        _SCALE,
    ),
    "iso_cts",
)
_native(
    "core_ties",
    "Core-space TIES",
    "TIES on the tasks' small core matrices in shared LoRA bases, reconstructed exactly (Panariello et al. 2025)",
    (
        Param(
            "density", float, 0.1, "fraction of each core kept (the reference's topK 10 %)", minimum=0.0, maximum=1.0
        ),
        _SCALE,
    ),
    "core_ties",
)
_native(
    "core_tsv",
    "Core-space TSV",
    "TSV-M on the tasks' core matrices in shared LoRA bases (Panariello et al. 2025)",
    (_SCALE,),
    "core_tsv",
)

#: Every registered method by name (the CLI, the Study page, the spec and the mergekit export iterate it).
METHODS = REGISTRY


def from_mergekit_name(merge_method: str) -> str | None:
    """The registered method a mergekit ``merge_method`` name stands for (None: MergeLab has none)."""
    return next((m.name for m in REGISTRY.values() if merge_method in m.mergekit_names), None)
