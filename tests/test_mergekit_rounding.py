"""Why `mergekit-yaml` (base+adapter) and MergeLab differ for TIES at real shapes, shown at one.

mergekit-yaml first builds each expert as W₀ + ΔWᵢ in float32, then takes the task vector back as
(W₀ + ΔWᵢ) − W₀. That rounding (up to half an ulp of |W₀|, ~1e-9 for |W₀| ~ 0.02) moves a few
entries across the magnitude threshold that TIES trims at, and a moved entry changes the merge by
up to its own size. MergeLab takes ΔWᵢ = Bᵢ·Aᵢ·scale exactly; given the same exact task vectors
mergekit's own ties equals ours bit for bit. Shape: Qwen2-0.5B's q_proj (896 × 896), W₀ ~ N(0, 0.02),
8 rank-16 adapters — the shape where the difference was first reported (13 entries, up to 1.4e-2,
over the whole model)."""

from __future__ import annotations

import torch

from mergelab.merging import registry
from mergelab.merging.method import merge_module

N, DIM, RANK, DENSITY = 8, 896, 16, 0.2


def _mergekit_ties(base: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """mergekit's TIES on dense weights, as mergekit-yaml runs it: task vectors = expert − base."""
    from mergekit.merge_methods.api import merge_tensors

    merged = merge_tensors([base, *experts], "ties", parameters={"density": DENSITY, "weight": 1.0}, base_index=0)
    return merged - base


def test_ties_differs_from_mergekit_yaml_only_through_the_float32_rebuild_of_task_vectors():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(DIM, DIM, generator=g) * 0.02
    deltas = [
        (torch.randn(DIM, RANK, generator=g) * 0.01) @ (torch.randn(RANK, DIM, generator=g) / DIM**0.5) * 2
        for _ in range(N)
    ]
    ties = registry.get("ties")
    ours = merge_module(ties, deltas, ties.resolve(N, {"density": DENSITY}), base_weight=w0, key="q_proj")

    # mergekit's maths on the exact task vectors (a zero base): bit-identical to ours
    assert torch.equal(_mergekit_ties(torch.zeros_like(w0), deltas), ours)

    # mergekit-yaml's path: experts rebuilt as W₀ + ΔWᵢ in float32, task vectors taken back
    rebuilt = [(w0 + d) - w0 for d in deltas]
    rounding = max((r - d).abs().max().item() for r, d in zip(rebuilt, deltas))
    assert 0 < rounding <= torch.finfo(torch.float32).eps * w0.abs().max().item()  # half an ulp of |W₀| at most
    theirs = _mergekit_ties(w0, [w0 + d for d in deltas])
    diff = (theirs - ours).abs()
    moved = int((diff > 1e-6).sum())
    assert 0 < moved < 1e-3 * diff.numel()  # a handful of the 802,816 entries, not a different merge
    assert diff.max().item() > 1e-5  # each moved entry is off by about its own size: "≤ 1e-5" is not true here
    # and the cause is only the rebuild: mergekit's ties on the rebuilt task vectors gives theirs
    assert torch.allclose(_mergekit_ties(torch.zeros_like(w0), rebuilt), theirs, atol=1e-6)
