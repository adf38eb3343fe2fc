"""Every figure MergeLab draws: pure functions of DataFrames returning plotly Figures.

No I/O, no Streamlit. The pages, the HTML report and the tests call the same functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis import stats

METHOD_COLOURS = {
    "LA": "#4C78A8",
    "TA": "#F58518",
    "TIES": "#54A24B",
    "DARE": "#E45756",
    "SLERP": "#72B7B2",
    "expert": "#9D755D",
}
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60), font=dict(size=13))


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; got {list(df.columns)}")


def loss_bars(
    df: pd.DataFrame,
    collapse: float | None = -30.0,
    title: str = "Merging loss",
    task_order: list[str] | None = None,
    highlight: str | None = None,
) -> go.Figure:
    """Grouped bars of merging loss (Eq. 1, %), task on x, one bar per method, with each loss's 95 %
    interval as an error bar where ``df`` has ci_low / ci_high.

    ``df`` has columns task, method, loss. A dashed line marks the collapse threshold; the
    ``highlight`` task (pass it only for a task that collapsed) is shaded and named.
    """
    _require(df, ["task", "method", "loss"], "loss_bars")
    tasks = task_order or list(dict.fromkeys(df["task"]))
    fig = go.Figure()
    has_ci = {"ci_low", "ci_high"} <= set(df.columns)
    for method, sub in df.groupby("method", sort=False):
        sub = sub.set_index("task").reindex(tasks)
        error = (
            dict(
                type="data",
                symmetric=False,
                array=(sub["ci_high"] - sub["loss"]).to_numpy(float),
                arrayminus=(sub["loss"] - sub["ci_low"]).to_numpy(float),
                thickness=1,
            )
            if has_ci
            else None
        )
        fig.add_bar(
            x=tasks,
            y=sub["loss"],
            name=str(method),
            error_y=error,
            marker_color=METHOD_COLOURS.get(str(method)),
            hovertemplate="%{x}<br>" + str(method) + ": %{y:.1f}%<extra></extra>",
        )
    if collapse is not None:
        fig.add_hline(
            y=collapse,
            line_dash="dash",
            line_color="crimson",
            annotation_text=f"collapse ({collapse:g}%)",
            annotation_position="bottom right",
        )
    if highlight in tasks:
        i = tasks.index(highlight)
        fig.add_vrect(
            x0=i - 0.5,
            x1=i + 0.5,
            fillcolor="crimson",
            opacity=0.08,
            line_width=0,
            annotation_text=f"{highlight}: collapses",
            annotation_position="top left",
        )
    fig.update_layout(
        barmode="group",
        title=title,
        yaxis_title="merging loss L(T) (%)" + (" with 95 % intervals" if has_ci else ""),
        xaxis_title="task",
        legend_title="method",
        **LAYOUT,
    )
    return fig


def mds_vs_loss(df: pd.DataFrame, title: str = "MDS vs best merging loss") -> go.Figure:
    """Scatter of MDS (Eq. 3) against each task's best merging loss (error bars: its 95 % interval
    where ``df`` has ci_low / ci_high), with a least-squares fit. The title carries Pearson's r,
    its direction against the paper's (r < 0) and the one-sided p in that direction (Table 5)."""
    _require(df, ["task", "mds", "best_loss"], "mds_vs_loss")
    x, y = df["mds"].to_numpy(float), df["best_loss"].to_numpy(float)
    fig = go.Figure()
    error = None
    if {"ci_low", "ci_high"} <= set(df.columns):
        error = dict(
            type="data",
            symmetric=False,
            array=(df["ci_high"] - df["best_loss"]).to_numpy(float),
            arrayminus=(df["best_loss"] - df["ci_low"]).to_numpy(float),
            color="#9ecae1",
            thickness=1,
        )
    fig.add_scatter(
        x=x,
        y=y,
        mode="markers+text",
        text=df["task"],
        textposition="top center",
        error_y=error,
        marker=dict(size=11, color="#4C78A8"),
        name="task",
        hovertemplate="%{text}<br>MDS %{x:.2f}<br>best loss %{y:.1f}%<extra></extra>",
    )
    subtitle = ""
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() >= 3 and np.ptp(x[finite]) > 0 and np.ptp(y[finite]) > 0:
        slope, intercept = np.polyfit(x[finite], y[finite], 1)
        xs = np.linspace(x[finite].min(), x[finite].max(), 50)
        fig.add_scatter(
            x=xs,
            y=slope * xs + intercept,
            mode="lines",
            name="least-squares fit",
            line=dict(color="crimson", dash="dot"),
        )
        c = stats.correlation(x, y, -1)
        way = "paper's direction" if c.as_expected else "opposite to the paper"
        subtitle = f"<br><sup>Pearson r = {c.r:+.2f} ({way}), one-sided p = {c.p_expected:.3g}, n = {c.n}</sup>"
    fig.update_layout(
        title=title + subtitle,
        xaxis_title="MDS (Eq. 3; higher = harder to merge)",
        yaxis_title="best merging loss over methods (%)",
        showlegend=False,
        **LAYOUT,
    )
    return fig


def hiddensim_heatmap(sim: pd.DataFrame, title: str = "HiddenSim (Eq. 2)", order: list[str] | None = None) -> go.Figure:
    """Heatmap of a square similarity DataFrame (index and columns are task names)."""
    if list(sim.index) != list(sim.columns):
        raise ValueError("hiddensim_heatmap needs a square frame with the same task order on both axes")
    if order is not None:
        sim = sim.loc[order, order]
    fig = go.Figure(
        go.Heatmap(
            z=sim.to_numpy(float),
            x=list(sim.columns),
            y=list(sim.index),
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar=dict(title="HiddenSim"),
            text=np.round(sim.to_numpy(float), 2),
            texttemplate="%{text}",
            hovertemplate="%{y} × %{x}<br>HiddenSim %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(title=title, yaxis_autorange="reversed", **LAYOUT)
    return fig


def pvalue_grid(
    df: pd.DataFrame, row: str, col: str, value: str = "p_value", alpha: float = 0.05, title: str = "One-sided p-values"
) -> go.Figure:
    """A Table-4-style grid of p-values — one-sided in the direction each metric would predict collapse
    when ``df`` has a ``direction`` column (:mod:`~mergelab.analysis.protocol`'s tables, with
    ``value="p_expected"``); a published two-sided p is taken as it is: green, marked ✱,
    where p < ``alpha`` in that direction; orange, marked ↯, where the correlation is significant the
    *other* way; grey otherwise — a fixed scale, so colours mean the same on every study. The
    one-sided p is written in each cell; blank where a test could not run."""
    _require(df, [row, col, value], "pvalue_grid")
    index, columns = list(dict.fromkeys(df[row])), list(dict.fromkeys(df[col]))
    grid = df.pivot(index=row, columns=col, values=value).reindex(index=index, columns=columns)
    p = grid.to_numpy(float)
    if "direction" in df:
        way = df.pivot(index=row, columns=col, values="direction").reindex(index=index, columns=columns)
        expected = way.apply(lambda c: c.astype(str).str.startswith("in ")).to_numpy()
    else:
        expected = np.ones_like(p, dtype=bool)
    support = (p < alpha) & expected
    against = ((1 - p) < alpha) & ~expected
    z = np.where(np.isnan(p), np.nan, np.where(support, 1.0, np.where(against, 0.5, 0.0)))
    scale = [
        [0.0, "#e0e0e0"],
        [0.33, "#e0e0e0"],
        [0.33, "#fdae6b"],
        [0.66, "#fdae6b"],
        [0.66, "#31a354"],
        [1.0, "#31a354"],
    ]
    text = np.where(np.isnan(p), "", np.vectorize(lambda v: f"{v:.3g}")(np.nan_to_num(p)))
    text = np.where(
        support, np.char.add(text.astype(str), " ✱"), np.where(against, np.char.add(text.astype(str), " ↯"), text)
    )
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=index,
            zmin=0.0,
            zmax=1.0,
            colorscale=scale,
            customdata=p,
            colorbar=dict(
                title="",
                tickvals=[0.15, 0.5, 0.85],
                ticktext=["not significant", "significant the other way", f"p < {alpha:g}, expected way"],
            ),
            text=text,
            texttemplate="%{text}",
            hovertemplate="%{y} · %{x}<br>one-sided p = %{customdata:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{title} (✱ p < {alpha:g} in the expected direction; ↯ the other way)",
        yaxis_autorange="reversed",
        **LAYOUT,
    )
    return fig


def swap_comparison(
    df: pd.DataFrame, collapse: float | None = -30.0, title: str = "Task swap: before / after"
) -> go.Figure:
    """Table-6-style before/after in two panels (no dual axis): each group's worst best-loss — with
    its 95 % interval as an error bar where ``df`` has ci_low / ci_high — beside the collapse line,
    and its worst MDS. ``df``: one row per group (the parent first), columns group, worst_loss,
    worst_mds."""
    from plotly.subplots import make_subplots

    _require(df, ["group", "worst_loss", "worst_mds"], "swap_comparison")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("worst best-loss (%)", "worst MDS"))
    error = None
    if {"ci_low", "ci_high"} <= set(df.columns):
        error = dict(
            type="data",
            symmetric=False,
            thickness=1,
            array=(df["ci_high"] - df["worst_loss"]).to_numpy(float),
            arrayminus=(df["worst_loss"] - df["ci_low"]).to_numpy(float),
        )
    fig.add_bar(
        x=df["group"],
        y=df["worst_loss"],
        marker_color="#E45756",
        name="worst loss",
        error_y=error,
        row=1,
        col=1,
        hovertemplate="%{x}<br>worst loss %{y:.1f}%<extra></extra>",
    )
    if collapse is not None:
        fig.add_hline(
            y=collapse,
            line_dash="dash",
            line_color="crimson",
            row=1,
            col=1,
            annotation_text=f"collapse ({collapse:g}%)",
            annotation_position="bottom right",
        )
    fig.add_bar(
        x=df["group"],
        y=df["worst_mds"],
        marker_color="#4C78A8",
        name="worst MDS",
        row=1,
        col=2,
        hovertemplate="%{x}<br>worst MDS %{y:.2f}<extra></extra>",
    )
    fig.update_layout(title=title, showlegend=False, **LAYOUT)
    return fig


def theory_chart(df: pd.DataFrame, title: str = "Theorem 1: each merge's distortion") -> go.Figure:
    """Each merge method's measured worst-case distortion δ_max against Theorem 1's interval
    [Δ²/4, d/(2(d+1))·Δ²] (a shaded band); inside = as linear mode connectivity predicts."""
    _require(df, ["method", "delta_max", "lower", "upper", "inside_interval"], "theory_chart")
    fig = go.Figure()
    lower, upper = float(df["lower"].iloc[0]), float(df["upper"].iloc[0])
    fig.add_hrect(
        y0=lower,
        y1=upper,
        fillcolor="#54A24B",
        opacity=0.15,
        line_width=0,
        annotation_text="Theorem 1 interval",
        annotation_position="top left",
    )
    colours = ["#54A24B" if v else "#E45756" for v in df["inside_interval"]]
    fig.add_scatter(
        x=df["method"],
        y=df["delta_max"],
        mode="markers",
        marker=dict(size=14, color=colours),
        hovertemplate="%{x}<br>δ_max %{y:.4g}<extra></extra>",
        name="measured δ_max",
    )
    fig.add_hline(y=lower, line_dash="dot", line_color="#54A24B")
    fig.add_hline(y=upper, line_dash="dot", line_color="#54A24B")
    fig.update_layout(
        title=title,
        yaxis_title="worst-case hidden-state distortion δ_max",
        xaxis_title="merge method",
        showlegend=False,
        **LAYOUT,
    )
    return fig


def expert_vs_merged(df: pd.DataFrame, title: str = "Expert vs merged score") -> go.Figure:
    """Bars of expert score and each method's merged score per task (columns task, method,
    score, expert_score)."""
    _require(df, ["task", "method", "score", "expert_score"], "expert_vs_merged")
    tasks = list(dict.fromkeys(df["task"]))
    expert = df.drop_duplicates("task").set_index("task")["expert_score"].reindex(tasks)
    fig = go.Figure()
    fig.add_bar(x=tasks, y=expert, name="expert", marker_color=METHOD_COLOURS["expert"])
    for method, sub in df.groupby("method", sort=False):
        fig.add_bar(
            x=tasks,
            y=sub.set_index("task")["score"].reindex(tasks),
            name=str(method),
            marker_color=METHOD_COLOURS.get(str(method)),
        )
    fig.update_layout(barmode="group", title=title, yaxis_title="score", xaxis_title="task", **LAYOUT)
    return fig


def predictor_forest(df: pd.DataFrame, title: str = "Which signal predicts merging loss?") -> go.Figure:
    """Pearson r of each predictor with the best merging loss and its 95 % interval (whole tasks
    resampled), one row per predictor, grouped by level (``df`` from
    ``predictors.predictor_comparison``). Filled markers: |r| above the family-wise permutation bar;
    blue: r points the way the predictor claims, orange: the other way."""
    _require(df, ["level", "predictor", "r", "ci_low", "ci_high", "direction", "beats_familywise"], "predictor_forest")
    fig = go.Figure()
    df = df.reset_index(drop=True)
    labels = [f"{lvl}: {p}" for lvl, p in zip(df["level"], df["predictor"])]
    expected = df["direction"].astype(str).str.startswith("in ")
    for beats in (True, False):
        for as_expected, colour, way in ((True, "#4C78A8", "expected direction"), (False, "#F58518", "other way")):
            sub = df[(df["beats_familywise"] == beats) & (expected == as_expected)]
            if sub.empty:
                continue
            name = f"{way}, {'beats' if beats else 'within'} the permutation null"
            fig.add_scatter(
                x=sub["r"],
                y=[labels[i] for i in sub.index],
                mode="markers",
                name=name,
                marker=dict(symbol="circle" if beats else "circle-open", size=11, color=colour),
                error_x=dict(
                    type="data",
                    symmetric=False,
                    array=sub["ci_high"] - sub["r"],
                    arrayminus=sub["r"] - sub["ci_low"],
                    color="#bbbbbb",
                ),
                customdata=np.stack([sub["p_expected"], sub["n"]], -1),
                hovertemplate="%{y}<br>r = %{x:.3f}<br>one-sided p = %{customdata[0]:.3g}, "
                "n = %{customdata[1]}<extra></extra>",
            )
    fig.add_vline(x=0, line_color="#888", line_dash="dot")
    fig.update_layout(
        title=title,
        xaxis_title="Pearson r with the best merging loss (95 % interval, tasks resampled)",
        xaxis=dict(range=[-1.05, 1.05]),
        yaxis=dict(autorange="reversed"),
        height=max(320, 28 * len(df) + 140),
        **LAYOUT,
    )
    return fig
