"""The preregistered verdicts (mergelab.analysis.hypotheses): direction first, then significance."""

import math

import pytest

from mergelab.analysis import hypotheses, stats


@pytest.mark.parametrize(
    "r, p, expect, verdict",
    [
        (-0.6, 0.01, -1, "supported"),
        (-0.2, 0.20, -1, "cannot tell"),
        (+0.6, 0.99, -1, "contradicted"),  # significant the other way: one-sided p of the opposite < α
        (+0.1, 0.60, -1, "cannot tell"),
        (+0.6, 0.01, +1, "supported"),
        (math.nan, 0.5, -1, "not measured"),
    ],
)
def test_correlation_verdict(r, p, expect, verdict):
    assert hypotheses.correlation_verdict(r, p, expect) == verdict


@pytest.mark.parametrize(
    "low, high, verdict",
    [
        (1.0, 5.0, "supported"),
        (-5.0, -1.0, "contradicted"),
        (-7.9, 18.2, "within noise"),
        (math.nan, 1, "not measured"),
    ],
)
def test_interval_verdict(low, high, verdict):
    assert hypotheses.interval_verdict(low, high) == verdict


def test_combined_power_is_that_of_the_summed_weights():
    # four groups of 8: Σ(n − 3) = 20, the power of one group of 23 (the plan rounded it to 0.51)
    assert stats.combined_detectable_r([8, 8, 8, 8]) == pytest.approx(stats.detectable_r(23))
    assert round(stats.combined_detectable_r([8, 8, 8, 8]), 2) == 0.50
    assert math.isnan(stats.combined_detectable_r([3, 2]))


def test_sentences_carry_the_interval_the_power_and_the_verdict():
    import pandas as pd

    nan = math.nan
    rows = [
        ("H1", "MDS predicts the best merging loss (r < 0)", "r", 0.12, -0.3, 0.5, 0.7, 4, 0.5, "cannot tell", ""),
        ("H3", "the swap raises the worst loss", "r2: a → b", 6.9, -7.9, 18.2, nan, 1, nan, "within noise", ""),
        ("H2", "x does not predict", "m", nan, nan, nan, nan, nan, nan, "not measured", "fewer than two groups"),
    ]
    h1, h3, h2 = hypotheses.sentences(pd.DataFrame(rows, columns=hypotheses.COLUMNS))
    assert "+0.12 (95 % -0.30 to +0.50, one-sided p = 0.7)" in h1
    assert "with 4 disjoint groups it detects |r| ≥ 0.50" in h1 and h1.endswith("**cannot tell**.")
    assert "+6.9 points (95 % -7.9 to +18.2)" in h3 and "within noise" in h3
    assert h2.endswith("not measured (fewer than two groups).")
