"""The paper's four parameter-conflict metrics (Section 2), pairwise, streamed per module.

For task vectors τ_i, τ_j (all adapted modules concatenated; entries indexed by p):

* magnitude change ratio      = Σ_p |τ_i,p − τ_j,p| / Σ_p (|τ_i,p| + |τ_j,p|)
* sign change ratio           = #{p : τ_i,p · τ_j,p < 0} / #{p}
* conflicting magnitude ratio = Σ_{p: τ_i,p·τ_j,p < 0} |τ_i,p − τ_j,p| / Σ_p (|τ_i,p| + |τ_j,p|)
* task-vector cosine          = ⟨τ_i, τ_j⟩ / (‖τ_i‖ ‖τ_j‖)

"Not sharing a sign" is read as strictly opposite signs (a zero entry conflicts with nothing).
Sums are accumulated module by module in float64, so no full task vector is ever built.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # the metric names below are read by the analysis side, which never needs torch
    from ..io.adapters import AdapterSet

METRICS = ["magnitude_change_ratio", "sign_change_ratio", "conflicting_magnitude_change_ratio", "task_vector_cosine"]


def conflict_metrics(
    adapter_set: AdapterSet, device: str = "cpu", progress: Callable[[int, int, str], None] | None = None
) -> pd.DataFrame:
    """Long frame: task_a, task_b, name (one of METRICS), value — one row per pair and metric."""
    import torch

    names = adapter_set.names
    pairs = list(combinations(range(len(names)), 2))
    # per pair: Σ|a−b|, Σ(|a|+|b|), #opposite, Σ_opposite |a−b|, ⟨a, b⟩
    sums = torch.zeros(len(pairs), 5, dtype=torch.float64)
    sq_norms = torch.zeros(len(names), dtype=torch.float64)
    count = 0
    total = len(adapter_set.module_keys)
    with torch.no_grad():
        for m, (key, deltas) in enumerate(adapter_set.task_vectors(device=device)):
            flat = [d.reshape(-1).double() for d in deltas]
            count += flat[0].numel()
            sq_norms += torch.tensor([float(f @ f) for f in flat], dtype=torch.float64)
            for row, (i, j) in enumerate(pairs):
                a, b = flat[i], flat[j]
                diff = (a - b).abs()
                opposite = (a * b) < 0
                sums[row] += torch.stack(
                    [diff.sum(), (a.abs() + b.abs()).sum(), opposite.sum().double(), diff[opposite].sum(), a @ b]
                ).cpu()
            if progress:
                progress(m + 1, total, key)
    rows = []
    for row, (i, j) in enumerate(pairs):
        diff, mag, n_opp, diff_opp, dot = sums[row].tolist()
        norm = float((sq_norms[i] * sq_norms[j]).sqrt())
        values = {
            "magnitude_change_ratio": diff / mag if mag else 0.0,
            "sign_change_ratio": n_opp / count,
            "conflicting_magnitude_change_ratio": diff_opp / mag if mag else 0.0,
            "task_vector_cosine": dot / norm if norm else 0.0,
        }
        rows += [{"task_a": names[i], "task_b": names[j], "name": k, "value": v} for k, v in values.items()]
    return pd.DataFrame(rows, columns=["task_a", "task_b", "name", "value"])
