import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from mergelab.analysis import paper
from mergelab.viz import figures


def test_loss_bars_one_trace_per_method_and_collapse_line():
    t2 = paper.load_tables()["table2"].rename(columns={"published_loss": "loss"})
    sub = t2[t2["model"] == "Qwen2.5-3B"]
    fig = figures.loss_bars(sub, collapse=-30)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == paper.METHODS
    assert list(fig.data[0].x) == paper.GLUE_TASKS
    assert fig.data[0].y[-1] == pytest.approx(-48.1)
    assert any(s.y0 == -30 for s in fig.layout.shapes)


def test_mds_vs_loss_has_fit_direction_and_one_sided_p_in_title():
    from scipy import stats as sps

    frame = paper.mds_vs_best_loss(paper.load_tables()).query("group == 'a'")
    fig = figures.mds_vs_loss(frame)
    assert len(fig.data) == 2
    want = sps.pearsonr(frame["mds"], frame["best_loss"], alternative="less")  # the paper's direction: r < 0
    title = fig.layout.title.text
    assert f"one-sided p = {want.pvalue:.3g}" in title and "(paper's direction)" in title
    # the same rows with the relation reversed: said to be opposite, its one-sided p near 1
    flipped = figures.mds_vs_loss(frame.assign(best_loss=-frame["best_loss"])).layout.title.text
    assert "opposite to the paper" in flipped and f"p = {1 - want.pvalue:.3g}" in flipped


def test_heatmap_and_pvalue_grid():
    sim = pd.DataFrame(np.eye(3), index=list("abc"), columns=list("abc"))
    fig = figures.hiddensim_heatmap(sim, order=["c", "a", "b"])
    assert list(fig.data[0].x) == ["c", "a", "b"]
    with pytest.raises(ValueError):
        figures.hiddensim_heatmap(sim.iloc[:2])
    grid = figures.pvalue_grid(paper.load_tables()["table4"], "metric", "method")
    z = np.array(grid.data[0].z)
    assert z.shape == (5, 5) and z[-1].sum() == 4  # HiddenSim row: all but DARE significant


def test_swap_and_expert_figures():
    t = paper.load_tables()
    fig = figures.swap_comparison(t["table6"])
    assert list(fig.data[0].y) == [-70.8, -17.8, -19.1]
    t2 = t["table2"].rename(columns={"merged_score": "score", "ft_score": "expert_score"})
    fig = figures.expert_vs_merged(t2[t2.model == "Qwen2.5-7B"])
    assert fig.data[0].name == "expert" and len(fig.data) == 6
    with pytest.raises(ValueError, match="needs columns"):
        figures.loss_bars(pd.DataFrame({"task": []}))
