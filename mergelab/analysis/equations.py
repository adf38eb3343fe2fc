"""The paper's representation-space analysis: Eq. 1, Eq. 2, Eq. 3 and Theorem 1.

Pure numpy/scipy. Every function takes plain arrays and returns plain arrays or floats, so the
same code serves the paper's published tables, live studies and the tests.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize


class AnalysisError(ValueError):
    """Input that the paper's formulas are not defined for (the message says why)."""


#: why a merging loss (Eq. 1) has no value, as tables and pages say it
UNDEFINED_LOSS = "undefined: the expert scores 0, so Eq. 1 divides by zero"
UNDEFINED_LOWER_LOSS = "undefined: a lower-is-better metric at 0 for the merge, so Eq. 1 divides by zero"


def _square_matrix(matrix, name: str) -> np.ndarray:
    arr = np.asarray(matrix, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise AnalysisError(f"{name} must be a square matrix, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise AnalysisError(f"{name} needs at least 2 tasks, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise AnalysisError(f"{name} contains NaN or infinite values")
    if not np.allclose(arr, arr.T, rtol=1e-6, atol=1e-9):
        raise AnalysisError(f"{name} must be symmetric")
    return arr


def merging_loss(merged, expert, higher_is_better: bool = True):
    """Merging loss L(T_i) = (P(θ_merged, T_i) / P(θ_i, T_i) − 1) · 100, in percent (Eq. 1).

    Works on scalars or arrays. Negative values mean the merge lost performance; the paper
    states −100 ≤ L ≤ 0, but merges can beat the expert (Table 8 has +17.0), so the value is
    not clipped. An expert score of 0 makes the ratio undefined and raises.

    For a lower-is-better metric (perplexity, bits per byte) performance is 1 / metric, so the
    ratio is expert ÷ merged: a merge at twice the expert's perplexity loses 50 %, and L stays in
    [−100, ∞) with the same sign as for accuracy (for perplexity, 1 / perplexity is the geometric
    mean probability of a token). A merged score of 0 then makes the ratio undefined and raises.
    """
    merged_arr = np.asarray(merged, dtype=float)
    expert_arr = np.asarray(expert, dtype=float)
    if higher_is_better:
        if np.any(expert_arr == 0):
            raise AnalysisError("merging loss is undefined when the expert's score is 0")
        ratio = merged_arr / expert_arr
    else:
        if np.any(merged_arr == 0):
            raise AnalysisError("merging loss of a lower-is-better metric is undefined when the merge scores 0")
        ratio = expert_arr / merged_arr
    loss = (ratio - 1.0) * 100.0
    return float(loss) if loss.ndim == 0 else loss


def improvement(score, reference, higher_is_better=True):
    """How much better ``score`` is than ``reference``, in the metric's units: score − reference,
    or reference − score where lower is better, so that > 0 always means better. Scalars or arrays
    (``higher_is_better`` may be an array of per-row directions)."""
    diff = np.asarray(score, dtype=float) - np.asarray(reference, dtype=float)
    out = np.where(higher_is_better, diff, -diff)
    return float(out) if out.ndim == 0 else out


def aggregate(aggregation: str, weighted_mean):
    """A task's score from the weighted mean Σw·v / Σw of its rows' scores and weights, the way
    lm-evaluation-harness aggregates them (:data:`mergelab.choices.AGGREGATIONS`): ``mean`` as is,
    ``perplexity`` and ``weighted_perplexity`` exp(−x), ``bits_per_byte`` −x / ln 2.

    Args:
        aggregation: one of the four names.
        weighted_mean: Σw·v / Σw — a float or an array (one per resample).
    Returns:
        the score, shaped like ``weighted_mean``.
    """
    x = np.asarray(weighted_mean, dtype=float)
    if aggregation == "mean":
        out = x
    elif aggregation in ("perplexity", "weighted_perplexity"):
        out = np.exp(-x)
    elif aggregation == "bits_per_byte":
        out = -x / np.log(2)
    else:
        raise AnalysisError(f"unknown aggregation {aggregation!r}")
    return float(out) if out.ndim == 0 else out


def hiddensim(distances) -> np.ndarray:
    """Hidden-state distance similarity (Eq. 2).

    ``distances[i, j]`` is the average hidden-state distance d_ij between expert i and j on the
    shared probe set. With D the set of off-diagonal distances,
    HiddenSim(i, j) = 1 if i = j else (max(D) − d_ij) / (max(D) − min(D)).
    The result is symmetric, in [0, 1], with 1 on the diagonal; the closest pair gets 1 and the
    farthest 0. If every off-diagonal distance is equal the formula divides by zero: that is an
    error here, never a NaN.
    """
    dist = _square_matrix(distances, "distance matrix")
    n = dist.shape[0]
    off = dist[~np.eye(n, dtype=bool)]
    if np.any(off < 0):
        raise AnalysisError("distances must be non-negative")
    d_max, d_min = off.max(), off.min()
    if np.isclose(d_max, d_min, rtol=1e-12, atol=0.0):
        raise AnalysisError(
            "HiddenSim is undefined when all pairwise distances are equal "
            f"(every off-diagonal distance is {d_max:.6g}); Eq. 2 divides by max(D) − min(D) = 0"
        )
    sim = (d_max - dist) / (d_max - d_min)
    np.fill_diagonal(sim, 1.0)
    return np.clip(sim, 0.0, 1.0)


def mds(similarity) -> np.ndarray:
    """Merging Difficulty Score per task (Eq. 3): MDS_i = 1 / mean_{j≠i} HiddenSim(i, j).

    Higher means harder to merge. With similarities in [0, 1], MDS ≥ 1. A task whose
    similarity to every other task is 0 (it is the farthest from all of them) gets +inf.
    """
    sim = _square_matrix(similarity, "similarity matrix")
    n = sim.shape[0]
    if np.any(sim < -1e-12) or np.any(sim > 1 + 1e-12):
        raise AnalysisError("similarities must lie in [0, 1] (use hiddensim() on distances)")
    off = sim[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    mean = off.mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(mean > 0, 1.0 / np.maximum(mean, 1e-300), np.inf)


def theorem1_bounds(delta: float, d: int) -> tuple[float, float]:
    """Theorem 1's interval for the minimum worst-case hidden-state distortion D*.

    Returns (lower, upper) = (Δ²/4, d/(2(d+1)) · Δ²): (ii) every merge has δ_max ≥ Δ²/4 and
    (i) under linear mode connectivity some convex merge reaches δ_max ≤ d/(2(d+1)) · Δ².
    Δ is the largest root-mean-square hidden-state distance between two experts, d the
    hidden size. For d ≥ 1 the upper factor lies in [1/4, 1/2), so lower ≤ upper.
    """
    if not np.isfinite(delta) or delta < 0:
        raise AnalysisError(f"Δ must be a finite non-negative number, got {delta}")
    if int(d) != d or d < 1:
        raise AnalysisError(f"hidden size d must be a positive integer, got {d}")
    sq = float(delta) ** 2
    return sq / 4.0, d / (2.0 * (d + 1)) * sq


def expert_distance_matrix(states) -> np.ndarray:
    """Root-mean-square hidden-state distances d(i, j) = sqrt(E_X ||h(X; θ_i) − h(X; θ_j)||²).

    ``states`` has shape (n_experts, n_inputs, d): the same inputs run through every expert.
    This is Theorem 1's d(i, j); its maximum is Δ.
    """
    h = np.asarray(states, dtype=float)
    if h.ndim != 3:
        raise AnalysisError(f"states must have shape (experts, inputs, dim), got {h.shape}")
    diff = h[:, None, :, :] - h[None, :, :, :]
    return np.sqrt((diff**2).sum(axis=-1).mean(axis=-1))


def diameter(states) -> float:
    """Δ = max_{i,j} d(i, j) from :func:`expert_distance_matrix` (Theorem 1)."""
    return float(expert_distance_matrix(states).max())


def minimum_enclosing_ball(points) -> tuple[np.ndarray, float, np.ndarray]:
    """Smallest ball containing ``points`` (shape (n, d)): returns (centre, radius, weights).

    Solved exactly as the dual quadratic programme over the simplex,
    max_α Σ α_i ||p_i||² − ||Σ α_i p_i||², whose optimum is the squared radius and whose
    weights give the centre c = Σ α_i p_i as a convex combination (as Lemma 1 requires).
    Jung's theorem (Lemma 1) guarantees radius ≤ sqrt(d/(2(d+1))) · diameter.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2 or p.shape[0] < 1:
        raise AnalysisError(f"points must have shape (n, d) with n ≥ 1, got {p.shape}")
    n = p.shape[0]
    if n == 1:
        return p[0].copy(), 0.0, np.ones(1)
    shift = p.mean(axis=0)
    q = p - shift
    gram = q @ q.T
    sq = np.diag(gram)
    scale = max(float(sq.max()), 1e-300)

    def neg_obj(a):
        return -(a @ sq - a @ gram @ a) / scale

    def neg_grad(a):
        return -(sq - 2.0 * gram @ a) / scale

    res = optimize.minimize(
        neg_obj,
        np.full(n, 1.0 / n),
        jac=neg_grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0, "jac": lambda a: np.ones(n)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    weights = np.clip(res.x, 0.0, None)
    weights /= weights.sum()
    centre = weights @ q
    radius = float(np.sqrt(((q - centre) ** 2).sum(axis=1).max()))
    return centre + shift, radius, weights


def jung_radius(states) -> float:
    """Mean over inputs of the squared minimum-enclosing-ball radius of the experts' states.

    ``states`` has shape (n_experts, n_inputs, d). For each input x the experts' hidden states
    {H_i(x)} get their minimum enclosing ball (the construction in the proof of Theorem 1 (i));
    the value returned is E_X r(x)², the distortion a per-input centre attains.

    It always satisfies the converse, E_X r(x)² ≥ Δ²/4, and Jung's lemma gives
    E_X r(x)² ≤ d/(2(d+1)) · E_X Δ_x² with Δ_x the per-input diameter. The proof's further step
    Δ_x ≤ Δ does not hold in general (Δ is a root-mean-square over inputs, and a max of
    expectations can be below the expectation of the max), so E_X r(x)² can exceed
    d/(2(d+1)) · Δ²: :func:`theorem1_report` shows both numbers.
    """
    h = np.asarray(states, dtype=float)
    if h.ndim != 3:
        raise AnalysisError(f"states must have shape (experts, inputs, dim), got {h.shape}")
    radii = [minimum_enclosing_ball(h[:, x, :])[1] for x in range(h.shape[1])]
    return float(np.mean(np.square(radii)))


def per_input_diameter_sq(states) -> float:
    """E_X Δ_x², with Δ_x = max_{i,j} ||H_i(x) − H_j(x)|| the experts' diameter on input x."""
    h = np.asarray(states, dtype=float)
    diff = h[:, None, :, :] - h[None, :, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max(axis=(0, 1)).__pow__(2).mean())


def theorem1_report(states, merged_states=None) -> dict:
    """Theorem 1 on measured hidden states (experts × inputs × d), optionally with a real merge.

    Returns Δ, d, the interval (lower, upper) = theorem1_bounds(Δ, d), the per-input Jung
    construction's distortion E r(x)², the corrected upper bound d/(2(d+1)) · E Δ_x², and — when
    ``merged_states`` (inputs × d) is given — the merge's measured δ_max and whether it falls
    inside [lower, upper] (a check of linear mode connectivity: a merge whose states stay in
    the experts' convex hull should).
    """
    h = np.asarray(states, dtype=float)
    delta = diameter(h)
    d = h.shape[-1]
    lower, upper = theorem1_bounds(delta, d)
    factor = d / (2.0 * (d + 1))
    report = {
        "delta": delta,
        "d": d,
        "lower": lower,
        "upper": upper,
        "jung_distortion": jung_radius(h),
        "upper_per_input": factor * per_input_diameter_sq(h),
    }
    if merged_states is not None:
        per_expert, worst = distortion(merged_states, h)
        report.update({"delta_max": worst, "per_expert": per_expert, "inside_interval": bool(lower <= worst <= upper)})
    return report


def distortion(merged_states, expert_states) -> tuple[np.ndarray, float]:
    """Measured hidden-state distortion of a real merge (Theorem 1's δ).

    ``merged_states`` (n_inputs, d) are the merged model's hidden states, ``expert_states``
    (n_experts, n_inputs, d) the experts' on the same inputs. Returns
    (δ_i = E_X ||h(X; θ̂) − h(X; θ_i)||² per expert, δ_max = max_i δ_i).
    """
    m = np.asarray(merged_states, dtype=float)
    e = np.asarray(expert_states, dtype=float)
    if e.ndim != 3 or m.shape != e.shape[1:]:
        raise AnalysisError(f"merged states {m.shape} must match expert states (experts, inputs, dim) {e.shape}")
    per_expert = ((e - m[None]) ** 2).sum(axis=-1).mean(axis=-1)
    return per_expert, float(per_expert.max())
