"""Merge methods: declarations (for the UI form and CLI flags) and one merge function.

Every method runs mergekit 0.1.5's own tensor maths (``mergekit.merge_methods.api.merge_tensors``)
on task vectors. Task-vector methods get a zero tensor as the base, so mergekit's
``input − base`` is the task vector itself and its output is the merged task vector: the result
is what mergekit computes on full weights, without building a full model.

Defaults we chose, and why (mergekit's own defaults differ where noted):

* TIES density 0.2 — Yadav et al. keep the top-20 % magnitudes. mergekit defaults to density
  1.0, which trims nothing and makes TIES a sign-election-only merge.
* DARE density 0.1 (drop rate p = 0.9) — the headline setting of Yu et al. Survivors are rescaled
  so each task vector keeps its L1 norm (mergekit's rescale; ≈ 1/(1 − p) in expectation, where
  PEFT uses exactly 1/(1 − p)); seeded per module for reproducibility.
* TA and DARE λ = 1/n when not given: mergekit's λ = 1 adds n task vectors at full strength;
  1/n puts TA on the same scale as linear averaging (set λ to study scaling).
* SLERP: mergekit's ``slerp`` takes exactly two models; for two adapters we use it on the two
  full module weights (W₀+ΔW₁, W₀+ΔW₂, t = 0.5), exactly as ``mergekit-yaml`` would. For more
  than two adapters we use mergekit's ``multislerp`` with the base as origin (barycentric
  interpolation of the task vectors on the hypersphere, weighted mean norm) — say so when
  reporting SLERP on groups.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from mergekit.merge_methods.api import merge_tensors


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


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    mergekit: str  # mergekit method name used for the maths
    description: str
    params: tuple[Param, ...]
    options: dict = field(default_factory=dict)  # fixed mergekit parameters
    random: bool = False

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


WEIGHTS = Param("weight", float, 1.0, "relative weight of each adapter", per_adapter=True)
LAMBDA = Param("lambda", float, None, "scale of the merged task vector (default 1/n)", minimum=0.0)


def _density(default: float) -> Param:
    return Param("density", float, default, "fraction of each task vector's entries kept",
                 per_adapter=True, minimum=0.0, maximum=1.0)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("linear", "Linear averaging (LA)", "linear",
           "θ₀ + Σ wᵢ τᵢ / Σ wᵢ (Wortsman et al. 2022)", (WEIGHTS,), {"normalize": True}),
    Method("task_arithmetic", "Task arithmetic (TA)", "task_arithmetic",
           "θ₀ + λ Σ wᵢ τᵢ (Ilharco et al. 2023)", (WEIGHTS, LAMBDA)),
    Method("ties", "TIES", "ties",
           "trim to top-density magnitudes, elect sign by sum, disjoint mean (Yadav et al. 2023)",
           (WEIGHTS, _density(0.2),
            Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0),
            Param("normalize", bool, True, "divide by the summed weights of agreeing entries"))),
    Method("dare_linear", "DARE (linear)", "dare_linear",
           "drop entries with probability 1 − density, rescale survivors, add (Yu et al. 2024)",
           (WEIGHTS, _density(0.1), LAMBDA, Param("rescale", bool, True, "rescale survivors (L1 norm)")),
           random=True),
    Method("dare_ties", "DARE-TIES", "dare_ties",
           "DARE's random drop and rescale, then TIES' sign election",
           (WEIGHTS, _density(0.1), LAMBDA, Param("rescale", bool, True, "rescale survivors (L1 norm)")),
           random=True),
    Method("slerp", "SLERP", "slerp",
           "2 adapters: mergekit slerp of the two full weights at t; more: mergekit multislerp of "
           "the task vectors around the base",
           (Param("t", float, 0.5, "interpolation point (2 adapters only)", minimum=0.0, maximum=1.0),
            WEIGHTS)),
    Method("breadcrumbs", "Model Breadcrumbs", "breadcrumbs",
           "drop the largest gamma and smallest entries, keep density (Davari & Belilovsky 2023)",
           (WEIGHTS, _density(0.9), Param("gamma", float, 0.01, "fraction of largest entries dropped",
                                          per_adapter=True, minimum=0.0, maximum=1.0), LAMBDA)),
    Method("della", "DELLA", "della",
           "magnitude-ranked stochastic drop (MagPrune), rescale, TIES election (Deep et al. 2024)",
           (WEIGHTS, _density(0.5), Param("epsilon", float, 0.15, "spread of keep probabilities",
                                          per_adapter=True, minimum=0.0, maximum=1.0),
            Param("lambda", float, 1.0, "scale of the merged task vector", minimum=0.0)),
           random=True),
]}

#: The paper's five methods, in its order, and our registry name for each.
PAPER_METHODS = {"LA": "linear", "TA": "task_arithmetic", "TIES": "ties", "DARE": "dare_linear",
                 "SLERP": "slerp"}


def get(name: str) -> Method:
    key = PAPER_METHODS.get(name, name)
    if key not in METHODS:
        raise MethodError(f"unknown merge method {name!r}; choose from {sorted(METHODS)} "
                          f"(or the paper's {sorted(PAPER_METHODS)})")
    return METHODS[key]


def _module_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def linear_coefficients(method: Method, values: dict) -> list[float] | None:
    """cᵢ such that the merged task vector is Σ cᵢ τᵢ, for the methods where that holds."""
    w = values["weight"]
    if method.name == "linear":
        total = sum(w)
        return [x / total for x in w] if abs(total) >= 1e-8 else list(w)  # mergekit's divisor rule
    if method.name == "task_arithmetic":
        return [values["lambda"] * x for x in w]
    return None


def merge_module(method: Method, deltas: list[torch.Tensor], values: dict,
                 base_weight: torch.Tensor | None = None, key: str = "") -> torch.Tensor:
    """Merged task vector of one module, computed by mergekit from the adapters' ΔW.

    ``values`` come from :meth:`Method.resolve`. ``base_weight`` (W₀) is needed only for
    two-adapter SLERP, which interpolates full weights.
    """
    n = len(deltas)
    if n < 2:
        raise MethodError(f"merging needs at least 2 adapters, got {n}")
    params = {k: v for k, v in values.items() if k != "seed"}
    params.update(method.options)
    if method.name == "slerp":
        if n == 2:
            if base_weight is None:
                raise MethodError("two-adapter SLERP needs the base weight of each module")
            w0 = base_weight.to(deltas[0].device, deltas[0].dtype)
            merged = merge_tensors([w0 + deltas[0], w0 + deltas[1]], "slerp",
                                   parameters={"t": params["t"]}, base_index=0, name=key)
            return merged - w0
        zero = torch.zeros_like(deltas[0])
        return merge_tensors([zero, *deltas], "multislerp",
                             parameters={"weight": params["weight"]}, base_index=0, name=key)
    if method.mergekit == "linear":
        return merge_tensors(list(deltas), "linear", parameters=params, name=key)
    zero = torch.zeros_like(deltas[0])
    if method.mergekit == "ties" and not method.random:
        # Exact fast trim (see fastpaths); sign election and disjoint mean stay mergekit's.
        from mergekit.sparsify import RescaleNorm

        from .fastpaths import magnitude

        norm = RescaleNorm.l1 if params.get("rescale") else None
        trimmed = [magnitude(d, dens, norm) for d, dens in zip(deltas, params["density"])]
        return merge_tensors([zero, *trimmed], "ties", parameters={**params, "density": 1.0},
                             base_index=0, name=key)
    if method.random:
        with torch.random.fork_rng(devices=[deltas[0].device] if deltas[0].is_cuda else []):
            torch.manual_seed(_module_seed(values["seed"], key))
            return merge_tensors([zero, *deltas], method.mergekit, parameters=params,
                                 base_index=0, name=key)
    return merge_tensors([zero, *deltas], method.mergekit, parameters=params, base_index=0, name=key)
