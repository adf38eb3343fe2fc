"""Every figure MergeLab draws: pure functions of DataFrames returning plotly Figures.

No I/O, no Streamlit. The pages, the HTML report and the tests call the same functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis import stats

METHOD_COLOURS = {"LA": "#4C78A8", "TA": "#F58518", "TIES": "#54A24B", "DARE": "#E45756",
                  "SLERP": "#72B7B2", "expert": "#9D755D"}
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=60),
              font=dict(size=13))


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {missing}; got {list(df.columns)}")


def loss_bars(df: pd.DataFrame, collapse: float | None = -30.0, title: str = "Merging loss",
              task_order: list[str] | None = None, highlight: str | None = None) -> go.Figure:
    """Grouped bars of merging loss (Eq. 1, %), task on x, one bar per method.

    ``df`` has columns task, method, loss. A dashed line marks the collapse threshold; the
    ``highlight`` task (the collapsing one) is shaded and named.
    """
    _require(df, ["task", "method", "loss"], "loss_bars")
    tasks = task_order or list(dict.fromkeys(df["task"]))
    fig = go.Figure()
    for method, sub in df.groupby("method", sort=False):
        sub = sub.set_index("task").reindex(tasks)
        fig.add_bar(x=tasks, y=sub["loss"], name=str(method),
                    marker_color=METHOD_COLOURS.get(str(method)),
                    hovertemplate="%{x}<br>" + str(method) + ": %{y:.1f}%<extra></extra>")
    if collapse is not None:
        fig.add_hline(y=collapse, line_dash="dash", line_color="crimson",
                      annotation_text=f"collapse ({collapse:g}%)", annotation_position="bottom right")
    if highlight in tasks:
        i = tasks.index(highlight)
        fig.add_vrect(x0=i - 0.5, x1=i + 0.5, fillcolor="crimson", opacity=0.08, line_width=0,
                      annotation_text=f"{highlight}: collapses", annotation_position="top left")
    fig.update_layout(barmode="group", title=title, yaxis_title="merging loss L(T) (%)",
                      xaxis_title="task", legend_title="method", **LAYOUT)
    return fig


def mds_vs_loss(df: pd.DataFrame, title: str = "MDS vs best merging loss") -> go.Figure:
    """Scatter of MDS (Eq. 3) against each task's best merging loss, with a least-squares fit.

    ``df`` has columns task, mds, best_loss. The title carries Pearson's r and p (Table 5).
    """
    _require(df, ["task", "mds", "best_loss"], "mds_vs_loss")
    x, y = df["mds"].to_numpy(float), df["best_loss"].to_numpy(float)
    fig = go.Figure()
    fig.add_scatter(x=x, y=y, mode="markers+text", text=df["task"], textposition="top center",
                    marker=dict(size=11, color="#4C78A8"), name="task",
                    hovertemplate="%{text}<br>MDS %{x:.2f}<br>best loss %{y:.1f}%<extra></extra>")
    subtitle = ""
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() >= 3 and np.ptp(x[finite]) > 0 and np.ptp(y[finite]) > 0:
        slope, intercept = np.polyfit(x[finite], y[finite], 1)
        xs = np.linspace(x[finite].min(), x[finite].max(), 50)
        fig.add_scatter(x=xs, y=slope * xs + intercept, mode="lines", name="least-squares fit",
                        line=dict(color="crimson", dash="dot"))
        r, p = stats.pearson(x, y)
        subtitle = f"  (Pearson r = {r:.3f}, p = {p:.4f})"
    fig.update_layout(title=title + subtitle, xaxis_title="MDS (Eq. 3; higher = harder to merge)",
                      yaxis_title="best merging loss over methods (%)", showlegend=False, **LAYOUT)
    return fig


def hiddensim_heatmap(sim: pd.DataFrame, title: str = "HiddenSim (Eq. 2)",
                      order: list[str] | None = None) -> go.Figure:
    """Heatmap of a square similarity DataFrame (index and columns are task names)."""
    if list(sim.index) != list(sim.columns):
        raise ValueError("hiddensim_heatmap needs a square frame with the same task order on "
                         "both axes")
    if order is not None:
        sim = sim.loc[order, order]
    fig = go.Figure(go.Heatmap(
        z=sim.to_numpy(float), x=list(sim.columns), y=list(sim.index), zmin=0, zmax=1,
        colorscale="Viridis", colorbar=dict(title="HiddenSim"),
        text=np.round(sim.to_numpy(float), 2), texttemplate="%{text}",
        hovertemplate="%{y} × %{x}<br>HiddenSim %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, yaxis_autorange="reversed", **LAYOUT)
    return fig


def pvalue_grid(df: pd.DataFrame, row: str, col: str, value: str = "p_value",
                alpha: float = 0.05, title: str = "Pearson p-values") -> go.Figure:
    """A Table-4-style grid: each cell is 1 where p < ``alpha`` (green, marked ✱) and 0 where not
    (grey), on a fixed 0–1 scale so the colours mean the same on every study, also when nothing is
    significant; the p-value is written in the cell. Blank where a test could not run."""
    _require(df, [row, col, value], "pvalue_grid")
    grid = df.pivot(index=row, columns=col, values=value)
    grid = grid.reindex(index=list(dict.fromkeys(df[row])), columns=list(dict.fromkeys(df[col])))
    p = grid.to_numpy(float)
    z = np.where(np.isnan(p), np.nan, (p < alpha).astype(float))
    scale = [[0.0, "#e0e0e0"], [0.5, "#e0e0e0"], [0.5, "#31a354"], [1.0, "#31a354"]]
    text = np.vectorize(lambda v: "" if np.isnan(v) else (f"{v:.3g} ✱" if v < alpha else f"{v:.3g}"))(p)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(grid.columns), y=list(grid.index), zmin=0.0, zmax=1.0, colorscale=scale,
        customdata=p, colorbar=dict(title="", tickvals=[0.25, 0.75],
                                    ticktext=[f"p ≥ {alpha:g}", f"p < {alpha:g}"]),
        text=text, texttemplate="%{text}", hovertemplate="%{y} · %{x}<br>p = %{customdata:.4g}<extra></extra>"))
    fig.update_layout(title=f"{title} (✱ p < {alpha:g})", yaxis_autorange="reversed", **LAYOUT)
    return fig


def swap_comparison(df: pd.DataFrame, title: str = "Task swap: before / after") -> go.Figure:
    """Table-6-style before/after in two panels (no dual axis): the worst merging loss per task
    group, and its worst MDS."""
    from plotly.subplots import make_subplots

    _require(df, ["group", "worst_loss", "worst_mds"], "swap_comparison")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("worst merging loss (%)", "worst MDS"))
    fig.add_bar(x=df["group"], y=df["worst_loss"], marker_color="#E45756", name="worst loss", row=1, col=1,
                hovertemplate="%{x}<br>worst loss %{y:.1f}%<extra></extra>")
    fig.add_bar(x=df["group"], y=df["worst_mds"], marker_color="#4C78A8", name="worst MDS", row=1, col=2,
                hovertemplate="%{x}<br>worst MDS %{y:.2f}<extra></extra>")
    fig.update_layout(title=title, showlegend=False, **LAYOUT)
    return fig


def theory_chart(df: pd.DataFrame, title: str = "Theorem 1: each merge's distortion") -> go.Figure:
    """Each merge method's measured worst-case distortion δ_max against Theorem 1's interval
    [Δ²/4, d/(2(d+1))·Δ²] (a shaded band); inside = as linear mode connectivity predicts."""
    _require(df, ["method", "delta_max", "lower", "upper", "inside_interval"], "theory_chart")
    fig = go.Figure()
    lower, upper = float(df["lower"].iloc[0]), float(df["upper"].iloc[0])
    fig.add_hrect(y0=lower, y1=upper, fillcolor="#54A24B", opacity=0.15, line_width=0,
                  annotation_text="Theorem 1 interval", annotation_position="top left")
    colours = ["#54A24B" if v else "#E45756" for v in df["inside_interval"]]
    fig.add_scatter(x=df["method"], y=df["delta_max"], mode="markers", marker=dict(size=14, color=colours),
                    hovertemplate="%{x}<br>δ_max %{y:.4g}<extra></extra>", name="measured δ_max")
    fig.add_hline(y=lower, line_dash="dot", line_color="#54A24B")
    fig.add_hline(y=upper, line_dash="dot", line_color="#54A24B")
    fig.update_layout(title=title, yaxis_title="worst-case hidden-state distortion δ_max", xaxis_title="merge method",
                      showlegend=False, **LAYOUT)
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
        fig.add_bar(x=tasks, y=sub.set_index("task")["score"].reindex(tasks), name=str(method),
                    marker_color=METHOD_COLOURS.get(str(method)))
    fig.update_layout(barmode="group", title=title, yaxis_title="score", xaxis_title="task",
                      **LAYOUT)
    return fig


def predictor_forest(df: pd.DataFrame, alpha: float = 0.05,
                     title: str = "Which signal predicts merging loss?") -> go.Figure:
    """Pearson r of each predictor against the best merging loss, with its bootstrap 95 % CI, one
    row per predictor, grouped by level (``df`` from ``protocol.predictor_comparison``). Filled
    markers: p < alpha."""
    _require(df, ["level", "predictor", "pearson_r", "pearson_p", "ci_low", "ci_high"], "predictor_forest")
    fig = go.Figure()
    labels = [f"{lvl}: {p}" for lvl, p in zip(df["level"], df["predictor"])]
    sig = df["pearson_p"] < alpha
    for flag, name, symbol in ((True, f"p < {alpha:g}", "circle"), (False, f"p ≥ {alpha:g}", "circle-open")):
        sub = df[sig == flag]
        lab = [labels[i] for i in sub.index]
        fig.add_scatter(x=sub["pearson_r"], y=lab, mode="markers", name=name,
                        marker=dict(symbol=symbol, size=11, color="#4C78A8"),
                        error_x=dict(type="data", symmetric=False, array=sub["ci_high"] - sub["pearson_r"],
                                     arrayminus=sub["pearson_r"] - sub["ci_low"], color="#9ecae1"),
                        customdata=np.stack([sub["pearson_p"], sub["n"]], -1) if len(sub) else None,
                        hovertemplate="%{y}<br>r = %{x:.3f}<br>p = %{customdata[0]:.3g}, n = %{customdata[1]}"
                                      "<extra></extra>")
    fig.add_vline(x=0, line_color="#888", line_dash="dot")
    fig.update_layout(title=title, xaxis_title="Pearson r with the best merging loss (95 % bootstrap CI)",
                      xaxis=dict(range=[-1.05, 1.05]), yaxis=dict(autorange="reversed"),
                      height=max(320, 28 * len(df) + 140), **LAYOUT)
    return fig
