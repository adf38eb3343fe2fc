"""Hidden-state distances between experts on a shared probe set → HiddenSim (Eq. 2) → MDS (Eq. 3).

States are pooled per layer and stored once per expert, so every ablation the reviewers asked
for — probe count k, layer, pooling, distance (L2 / cosine / CKA), bootstrap CIs — is a cheap
recomputation from stored states.

Distance between experts i and j on probes X (what "average L2 distance" means here):
``l2``: mean over probes x of ‖h_i(x) − h_j(x)‖₂ (raw, not squared; Eq. 2's min–max scaling makes
the overall scale irrelevant); ``cosine``: mean of 1 − cos(h_i(x), h_j(x)); ``cka``: 1 − linear
CKA of the two probe × dim matrices (Kornblith et al. 2019).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..choices import DISTANCES
from . import equations


def select_probes(probe_tasks: list[str], k: int) -> np.ndarray:
    """Indices of the first ``k`` probes of each task (probes are stored k_max per task)."""
    seen: dict[str, int] = {}
    keep = []
    for i, t in enumerate(probe_tasks):
        if seen.get(t, 0) < k:
            keep.append(i)
            seen[t] = seen.get(t, 0) + 1
    return np.array(keep, dtype=int)


def _centred_gram(x: np.ndarray) -> np.ndarray:
    """The centred Gram matrix of the rows of ``x`` (probes × dim → probes × probes)."""
    x = x - x.mean(0)
    return x @ x.T


def distance_matrix(states: np.ndarray, distance: str = "l2") -> np.ndarray:
    """``states``: (experts, probes, dim) → symmetric (experts, experts) distances."""
    h = np.asarray(states, dtype=np.float64)
    n = h.shape[0]
    out = np.zeros((n, n))
    if distance == "l2":
        out = per_probe_l2(h).mean(-1)
    elif distance == "cosine":
        unit = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        for i in range(n):
            out[i] = 1.0 - (unit[i][None] * unit).sum(-1).mean(-1)
    elif distance == "cka":
        # Linear CKA (Kornblith et al. 2019) in its Gram form, ⟨K, L⟩_F / (‖K‖_F ‖L‖_F) with K, L the
        # centred probes × probes Gram matrices: the same value as the feature form
        # ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F), at a cost of probes², not dim², per pair.
        grams = [_centred_gram(h[i]) for i in range(n)]  # each expert's once, not once per pair
        norms = [np.linalg.norm(g) for g in grams]
        for i in range(n):
            for j in range(i + 1, n):
                den = norms[i] * norms[j]
                out[i, j] = out[j, i] = 1.0 - ((grams[i] * grams[j]).sum() / den if den > 0 else 1.0)
    else:
        raise ValueError(f"unknown distance {distance!r}; choose from {DISTANCES}")
    return _tidy(out)


def _tidy(dist: np.ndarray) -> np.ndarray:
    """Symmetrised, zero diagonal, no negative rounding."""
    out = (dist + dist.T) / 2
    np.fill_diagonal(out, 0.0)
    return np.maximum(out, 0.0)


def mds_of(states: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Eq. 3 of Eq. 2 of the experts' distances on these probes: one MDS per expert."""
    return equations.mds(equations.hiddensim(distance_matrix(states, distance)))


def per_probe_l2(states: np.ndarray) -> np.ndarray:
    """``states``: (experts, probes, dim) → (experts, experts, probes) L2 distances per probe; their
    mean over any probe subset is :func:`distance_matrix`'s L2 on that subset."""
    h = np.asarray(states, dtype=np.float64)
    return np.stack([np.linalg.norm(h[i][None] - h, axis=-1) for i in range(h.shape[0])])


def mds_of_distances(dist: np.ndarray) -> np.ndarray:
    """:func:`mds_of` from an already averaged distance matrix (symmetrised, zero diagonal)."""
    return equations.mds(equations.hiddensim(_tidy(dist)))


def similarity_frame(states: np.ndarray, tasks: list[str], distance: str = "l2") -> pd.DataFrame:
    sim = equations.hiddensim(distance_matrix(states, distance))
    return pd.DataFrame(sim, index=tasks, columns=tasks)


def mds_with_ci(
    states: np.ndarray, tasks: list[str], distance: str = "l2", n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """MDS per task with a percentile bootstrap CI over probes (resampled with replacement)."""
    mds = mds_of(states, distance)
    rng = np.random.default_rng(seed)
    n_probes = states.shape[1]
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n_probes, n_probes)
        try:
            boots.append(mds_of(states[:, idx], distance))
        except equations.AnalysisError:
            continue
    frame = pd.DataFrame({"task": tasks, "mds": mds})
    if boots:
        b = np.array(boots)
        lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
        frame["ci_low"] = np.percentile(b, lo, axis=0)
        frame["ci_high"] = np.percentile(b, hi, axis=0)
    return frame
