import numpy as np
import pandas as pd
import pytest

from mergelab.analysis import stats
from mergelab.analysis.stats import StatsError


def test_pearson_matches_definition():
    x = np.array([1.0, 2, 3, 4, 5])
    y = np.array([2.0, 1, 4, 3, 7])
    r, p = stats.pearson(x, y)
    xc, yc = x - x.mean(), y - y.mean()
    assert r == pytest.approx((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)))
    assert 0 < p < 1


@pytest.mark.parametrize(
    "x, y, msg",
    [
        ([1, 2], [1, 2], "at least 3"),
        ([1, 1, 1], [1, 2, 3], "constant"),
        ([1, 2, 3], [1, 2], "same length"),
    ],
)
def test_pearson_rejects(x, y, msg):
    with pytest.raises(StatsError, match=msg):
        stats.pearson(x, y)


def test_anova_matches_hand_computation():
    df = pd.DataFrame({"g": list("aaabbbccc"), "v": [1, 2, 3, 2, 3, 4, 5, 6, 7.0]})
    f, p = stats.anova_oneway(df, "g", "v")
    grand = df.v.mean()
    ssb = sum(len(s) * (s.mean() - grand) ** 2 for _, s in df.groupby("g").v)
    ssw = sum(((s - s.mean()) ** 2).sum() for _, s in df.groupby("g").v)
    assert f == pytest.approx((ssb / 2) / (ssw / 6))
    assert 0 < p < 0.01


def test_anova_rejects_unknown_column_and_single_level():
    df = pd.DataFrame({"g": ["a"] * 3, "v": [1.0, 2, 3]})
    with pytest.raises(StatsError, match="not in frame"):
        stats.anova_oneway(df, "method", "v")
    with pytest.raises(StatsError, match="at least 2 levels"):
        stats.anova_oneway(df, "g", "v")
