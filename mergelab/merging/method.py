"""What a merge method is: a function on one module's task vectors plus the parameters it declares
(``Param``), checked and filled by :meth:`Method.resolve`; the registry of them by name; and the
dispatch of one module's merge (random methods seeded per module). The registrations themselves are
in :mod:`.registry`; mergekit's maths they call is in :mod:`.mergekit_maths`."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..choices import SEED_MAX

if TYPE_CHECKING:  # torch and mergekit load when a merge runs, not when the CLI starts (--help, methods)
    import torch


class MethodError(ValueError):
    """An unknown method or a parameter value it cannot take."""


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
    #: the mergekit ``merge_method`` names a mergekit YAML may use for this method (import)
    mergekit_names: tuple[str, ...] = ()
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
            raise MethodError(
                f"{self.label} has no parameter(s) {sorted(unknown)}; it takes {[p.name for p in self.params]}"
            )
        out = {}
        for p in self.params:
            value = given.get(p.name, p.default)
            if p.name == "lambda" and value is None:
                value = 1.0 / n
            if p.per_adapter:
                values = list(value) if isinstance(value, (list, tuple)) else [value] * n
                if len(values) != n:
                    raise MethodError(f"{self.label}: {p.name} needs one value per adapter ({n}), got {len(values)}")
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
PAPER_METHODS = {"LA": "linear", "TA": "task_arithmetic", "TIES": "ties", "DARE": "dare_linear", "SLERP": "slerp"}


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
        raise MethodError(
            f"unknown merge method {name!r}; choose from {sorted(REGISTRY)} (or the paper's {sorted(PAPER_METHODS)})"
        )
    return REGISTRY[key]


def merge_module(
    method: Method,
    deltas: list[torch.Tensor],
    values: dict,
    base_weight: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    key: str = "",
) -> torch.Tensor:
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
