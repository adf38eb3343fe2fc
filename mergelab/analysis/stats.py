"""Statistical tests behind every table: Pearson correlation with its direction (Tables 4, 5), the
Fisher-z combination of independent groups, the power a test has, resampling that respects rows
sharing a task, and one-way ANOVA (Table 3).

Direction: a predictor *predicts collapse* in one direction only — higher MDS, worse (lower) loss:
r < 0. Every correlation here is tested one-sided in the direction its predictor declares
(``expect``: −1 or +1), and counts as support only when it points that way; the two-sided p is
kept beside it. A result pointing the other way is "opposite to the expected direction", never
"significant".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8


class StatsError(ValueError):
    """Data a test cannot be run on (the message says why)."""


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    if a.shape != b.shape:
        raise StatsError(f"x and y must have the same length ({a.size} vs {b.size})")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3:
        raise StatsError(f"Pearson correlation needs at least 3 finite pairs, got {a.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise StatsError("Pearson correlation is undefined when one variable is constant")
    return a, b


def pearson(x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value, via ``scipy.stats.pearsonr``.

    Needs at least 3 paired, finite values and neither side constant.
    """
    a, b = _pairs(x, y)
    res = sps.pearsonr(a, b)
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class Correlation:
    """Pearson r of a predictor with an outcome, read against the direction the predictor declares.

    ``expect``: −1 if a higher predictor should mean a lower outcome (MDS vs merging loss), +1 if
    higher should mean higher. ``p_expected``: one-sided p in that direction; ``p_two_sided``:
    scipy's two-sided p. ``ci_low``/``ci_high``: Fisher-z 95 % interval of r."""

    r: float
    n: int
    expect: int
    p_expected: float
    p_two_sided: float
    ci_low: float
    ci_high: float

    @property
    def as_expected(self) -> bool:
        return bool(np.sign(self.r) == self.expect)

    @property
    def supports(self) -> bool:
        """Significant (one-sided, α = 0.05) in the expected direction."""
        return self.as_expected and self.p_expected < ALPHA

    @property
    def opposite_significant(self) -> bool:
        """Significant the other way: one-sided p of the opposite direction below α."""
        return not self.as_expected and (1.0 - self.p_expected) < ALPHA


def correlation(x, y, expect: int) -> Correlation:
    """Pearson r of ``x`` with ``y``, tested one-sided in the direction ``expect`` (−1 or +1)."""
    if expect not in (-1, 1):
        raise ValueError("expect must be -1 or +1")
    a, b = _pairs(x, y)
    two = sps.pearsonr(a, b)
    one = sps.pearsonr(a, b, alternative="less" if expect < 0 else "greater")
    lo, hi = fisher_interval(float(two.statistic), a.size)
    return Correlation(float(two.statistic), int(a.size), expect, float(one.pvalue), float(two.pvalue), lo, hi)


def fisher_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Fisher-z interval of a correlation r over n pairs (NaN for n ≤ 3)."""
    if n <= 3 or not np.isfinite(r):
        return np.nan, np.nan
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), sps.norm.ppf(0.5 + level / 2) / np.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


@dataclass(frozen=True)
class Combined:
    """Independent groups' correlations combined by Fisher's z (weights n − 3): the pooled r, its
    95 % interval, the one-sided p in the expected direction, and how many groups and rows."""

    r: float
    ci_low: float
    ci_high: float
    p_expected: float
    groups: int
    n: int
    expect: int

    @property
    def supports(self) -> bool:
        return bool(np.sign(self.r) == self.expect and self.p_expected < ALPHA)


def fisher_combine(rs, ns, expect: int) -> Combined:
    """Combine correlations of *disjoint* groups (no task in two of them): z̄ = Σ(nᵢ−3)zᵢ / Σ(nᵢ−3),
    SE = 1/√Σ(nᵢ−3). Groups that share tasks are not independent; do not combine them."""
    rs, ns = np.asarray(rs, float), np.asarray(ns, float)
    keep = np.isfinite(rs) & (ns > 3)
    rs, ns = rs[keep], ns[keep]
    if rs.size == 0:
        raise StatsError("no group with more than 3 tasks and a defined r to combine")
    w = ns - 3
    z = float((w * np.arctanh(np.clip(rs, -0.999999, 0.999999))).sum() / w.sum())
    se = 1 / np.sqrt(w.sum())
    stat = z / se
    p = float(sps.norm.cdf(stat) if expect < 0 else sps.norm.sf(stat))
    return Combined(
        float(np.tanh(z)),
        float(np.tanh(z - 1.96 * se)),
        float(np.tanh(z + 1.96 * se)),
        p,
        int(rs.size),
        int(ns.sum()),
        expect,
    )


# --- power ------------------------------------------------------------------------------------------
def power_r(r: float, n: int, alpha: float = ALPHA, one_sided: bool = True) -> float:
    """Power of Pearson's test to detect a true correlation |r| with n pairs — the approximation of
    R's ``pwr.r.test`` (Fisher z with the small-sample bias term r / (2(n − 1)))."""
    if n <= 3:
        return np.nan
    r = abs(r)
    df = n - 2
    t = sps.t.ppf(1 - (alpha if one_sided else alpha / 2), df)
    rc = np.sqrt(t**2 / (t**2 + df))
    zr = np.arctanh(min(r, 0.999999)) + r / (2 * (n - 1))
    zrc = np.arctanh(rc)
    power = sps.norm.cdf((zr - zrc) * np.sqrt(n - 3))
    if not one_sided:
        power += sps.norm.cdf((-zr - zrc) * np.sqrt(n - 3))
    return float(power)


def detectable_r(n: int, power: float = POWER, alpha: float = ALPHA, one_sided: bool = True) -> float:
    """The smallest |r| that n pairs detect with ``power`` (NaN when even |r| → 1 is not enough)."""
    if n <= 3:
        return np.nan
    f = lambda r: power_r(r, n, alpha, one_sided) - power
    if f(0.999) < 0:
        return np.nan
    return float(optimize.brentq(f, 1e-6, 0.999))


def combined_detectable_r(ns) -> float:
    """The smallest |r| a Fisher-z combination of groups of sizes ``ns`` detects with 80 % power
    (one-sided, α = 0.05): that of one group with the same Σ(n − 3)."""
    w = sum(max(int(n) - 3, 0) for n in ns)
    return detectable_r(w + 3) if w > 0 else np.nan


def groups_needed(r: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """Disjoint groups of n tasks whose Fisher-z combination detects a true |r| one-sided with
    ``power``: k = ((z₁₋α + z_power) / atanh|r|)² / (n − 3)."""
    if n <= 3 or not np.isfinite(r) or r == 0:
        return np.nan
    need = ((sps.norm.ppf(1 - alpha) + sps.norm.ppf(power)) / np.arctanh(min(abs(r), 0.999999))) ** 2
    return float(np.ceil(need / (n - 3)))


# --- resampling that respects tasks shared between rows -----------------------------------------------
def weighted_r(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of x with y under each row of weights ``w`` (resamples × pairs; a resample's counts
    of each pair), NaN where a resample leaves one side constant."""
    total = w.sum(-1, keepdims=True)
    mx, my = (w @ x)[:, None] / total, (w @ y)[:, None] / total
    dx, dy = x[None] - mx, y[None] - my
    sxy, sxx, syy = (w * dx * dy).sum(-1), (w * dx * dx).sum(-1), (w * dy * dy).sum(-1)
    den = np.sqrt(sxx * syy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * np.maximum(np.sqrt(sxx * syy), 1), sxy / np.where(den > 0, den, 1), np.nan)


def cluster_bootstrap_r(x, y, clusters, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of Pearson r when whole clusters (tasks) are resampled: rows of one
    task in several groups are not independent, so a task enters a resample with all its rows."""
    x, y, clusters = np.asarray(x, float), np.asarray(y, float), np.asarray(clusters)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, clusters = x[ok], y[ok], clusters[ok]
    names, which = np.unique(clusters, return_inverse=True)
    if len(names) < 3:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    counts = np.stack(
        [np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names)) for _ in range(n_boot)]
    )
    rs = weighted_r(x, y, counts[:, which].astype(float))
    rs = rs[np.isfinite(rs)]
    if len(rs) < n_boot / 2:
        return np.nan, np.nan
    return float(np.percentile(rs, 2.5)), float(np.percentile(rs, 97.5))


def permutation_null(xs: np.ndarray, y: np.ndarray, strata, n_perm: int = 1000, seed: int = 0) -> np.ndarray:
    """|r| of every predictor (rows of ``xs``) with ``y`` permuted within strata (groups), for
    ``n_perm`` permutations: (n_perm, predictors). The same permutation serves every predictor, so
    the null of the *largest* |r| (a family-wise threshold) comes from the same draws."""
    xs, y, strata = np.atleast_2d(np.asarray(xs, float)), np.asarray(y, float), np.asarray(strata)
    rng = np.random.default_rng(seed)
    perms = np.tile(np.arange(len(y)), (n_perm, 1))
    for s in pd.unique(strata):
        w = np.flatnonzero(strata == s)
        perms[:, w] = w[rng.permuted(np.tile(np.arange(len(w)), (n_perm, 1)), axis=1)]
    ys = y[perms]  # (n_perm, n)
    out = np.full((n_perm, xs.shape[0]), np.nan)
    for j, x in enumerate(xs):
        keep = np.isfinite(x)[None] & np.isfinite(ys)  # pairs where both the predictor and the permuted y are known
        if keep.sum(-1).min() < 3:
            continue
        xc = np.where(
            keep, x[None] - np.where(keep, x[None], 0).sum(-1, keepdims=True) / keep.sum(-1, keepdims=True), 0.0
        )
        yv = np.where(keep, ys, 0.0)
        yc = np.where(keep, yv - yv.sum(-1, keepdims=True) / keep.sum(-1, keepdims=True), 0.0)
        den = np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.abs(np.where(den > 0, (xc * yc).sum(-1) / den, np.nan))
    return out


def anova_oneway(frame: pd.DataFrame, factor: str, value: str) -> tuple[float, float]:
    """One-way ANOVA F-test of ``value`` across the levels of ``factor`` (Table 3).

    E.g. ``anova_oneway(losses, "method", "loss")`` tests whether the merge method explains the
    merging loss; ``factor="task"`` whether the task does. Uses ``scipy.stats.f_oneway``.
    """
    for col in (factor, value):
        if col not in frame.columns:
            raise StatsError(f"column {col!r} not in frame (columns: {list(frame.columns)})")
    data = frame[[factor, value]].dropna()
    groups = [g[value].to_numpy(dtype=float) for _, g in data.groupby(factor, sort=True)]
    if len(groups) < 2:
        raise StatsError(f"ANOVA needs at least 2 levels of {factor!r}, got {len(groups)}")
    if sum(len(g) for g in groups) <= len(groups):
        raise StatsError("ANOVA needs more observations than groups")
    res = sps.f_oneway(*groups)
    return float(res.statistic), float(res.pvalue)
