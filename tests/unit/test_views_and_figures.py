"""Pure views and figures: the words under a chart, fixed colour scales, the before/after chart,
Gram-form CKA, the Run page's batches — no store, no model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mergelab.analysis import progress, protocol, story


def test_chart_notes_warn_when_not_significant():
    import pandas as pd

    frame = pd.DataFrame({"task": list("abcd"), "mds": [1.1, 1.2, 1.0, 1.3], "best_loss": [-5, -1, -2, -3.0]})
    note = story.chart_note("mds_vs_loss", frame=frame)  # r = +0.08: the wrong sign is never "not significant"
    assert "opposite to the paper's direction" in note and "no support" in note
    same_way = frame.assign(best_loss=[-2, -1, -3, -4.0])  # r < 0, weak
    assert "not significant on 4 tasks" in story.chart_note("mds_vs_loss", frame=same_way)
    assert "too few" in story.chart_note("mds_vs_loss", frame=frame.head(2))


def test_pvalue_grid_has_a_fixed_scale_and_marks_significance():
    import pandas as pd

    from mergelab.viz import figures

    df = pd.DataFrame({"m": ["a", "a"], "k": ["x", "y"], "p_value": [0.5, 0.9]})
    fig = figures.pvalue_grid(df, "m", "k")
    heat = fig.data[0]
    assert heat.zmin == 0 and heat.zmax == 1  # all grey when nothing is significant, not all green
    assert "✱" not in "".join(np.ravel(heat.text))
    assert np.nansum(np.array(heat.z, float)) == 0 and heat.colorscale[0][1] != heat.colorscale[-1][1]
    fig = figures.pvalue_grid(df.assign(p_value=[0.01, 0.9]), "m", "k")
    assert "0.01 ✱" in np.ravel(fig.data[0].text)


def test_swap_chart_has_two_panels_not_two_axes():
    import pandas as pd

    from mergelab.viz import figures

    fig = figures.swap_comparison(
        pd.DataFrame({"group": ["a", "b"], "worst_loss": [-40, -20.0], "worst_mds": [5.0, 3.0]})
    )
    assert fig.layout.yaxis2.overlaying is None and fig.data[1].xaxis == "x2"


def test_gram_form_cka_equals_the_feature_form():
    from mergelab.analysis import hidden

    rng = np.random.default_rng(0)
    h = rng.normal(size=(4, 10, 64))
    d = hidden.distance_matrix(h, "cka")

    def feature_cka(x, y):
        x, y = x - x.mean(0), y - y.mean(0)
        return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))

    for i in range(4):
        for j in range(i + 1, 4):
            assert d[i, j] == pytest.approx(1 - feature_cka(h[i], h[j]), abs=1e-12)


def test_the_swap_chart_has_the_collapse_line():
    effect = pd.Series(
        {
            "parent": "g",
            "swap": "s",
            "removed": "a",
            "added": "b",
            "worst_before": -50.0,
            "worst_after": -20.0,
            "worst_mds_before": 4.0,
            "worst_mds_after": 3.0,
            "worst_before_ci_low": -60.0,
            "worst_before_ci_high": -40.0,
            "worst_after_ci_low": -25.0,
            "worst_after_ci_high": -15.0,
        }
    )
    from mergelab.viz import figures

    fig = figures.swap_comparison(protocol.swap_frame(effect))
    assert any(getattr(s, "y0", None) == -30 for s in fig.layout.shapes)
    assert list(fig.data[0].error_y.array) == pytest.approx([10.0, 5.0])


def test_run_batches_leave_model_loading_out_of_the_eta_and_speak_words():
    now = 1000.0
    frame = pd.DataFrame(
        {
            "id": range(6),
            "kind": ["expert", "expert", "mstates", "conflicts", "merge", "merge"],
            "status": ["done", "done", "done", "done", "queued", "queued"],
            "worker": ["w"] * 4 + [None, None],
            "started_at": [now, now + 80, now + 90, now + 100, np.nan, np.nan],
            "finished_at": [now + 80, now + 90, now + 100, now + 110, np.nan, np.nan],
            "created_at": [0.0] * 6,
        }
    )
    batch = progress.run_batches(frame).iloc[0]
    assert batch["seconds_per_unit"] == pytest.approx(10.0)  # the first unit's 80 s loaded the model
    assert batch["eta_s"] == pytest.approx(20.0)
    assert "merged-model hidden states" in batch["what"] and "mstates" not in batch["what"]
