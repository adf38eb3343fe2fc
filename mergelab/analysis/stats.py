"""Statistical tests the paper reports: Pearson correlation (Tables 4, 5), one-way ANOVA (Table 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps


class StatsError(ValueError):
    """Data a test cannot be run on (the message says why)."""


def pearson(x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (Tables 4 and 5), via ``scipy.stats.pearsonr``.

    Needs at least 3 paired, finite values and neither side constant.
    """
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
    res = sps.pearsonr(a, b)
    return float(res.statistic), float(res.pvalue)


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
