"""Overview: what the study is, its story in plain words (computed from its rows), one before/after
chart, and where to look next."""

import numpy as np
import pandas as pd
import streamlit as st

from mergelab.analysis import predictors, protocol, story, uncertainty, views
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import chart, claims_tested, need_study, show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
store = get_store()
study = need_study(current_study())
row = store.study(study)
st.title(row["name"])
spec = views.spec_dict(store, study)

with st.container(border=True):
    st.markdown(
        "**Why some merges collapse.** *Merging* combines adapters fine-tuned for different tasks into "
        "one model, without training. Often one task *collapses*: it loses most of its skill whatever "
        "the merging method. The paper behind MergeLab claims that a cheap hidden-state score, **MDS**, "
        "predicts which task — before any merge is run — while the usual parameter-conflict metrics do not. "
        "What *this* study's own rows say of that claim is below, with how far each number can be trusted."
    )

if row.get("description"):
    st.caption(row["description"])
if spec and spec.get("tasks"):
    tasks = spec["tasks"]
    groups = store.groups(study)
    st.markdown(
        f"**This study:** base `{spec.get('base')}` ({spec.get('architecture', 'encoder')}), "
        f"{len(tasks)} tasks, {len(groups)} group(s) of tasks merged with "
        f"{', '.join(spec.get('methods', {}) or ['the paper’s five methods'])}."
    )
    with st.expander("The tasks: what each is, and how its expert scores against the untrained base"):
        evidence = cached(protocol.expert_evidence, store, study).set_index("task")
        table = pd.DataFrame(
            [
                {"task": t, "what it is": v.get("note", ""), "scored by": v.get("metric", "accuracy")}
                for t, v in tasks.items()
            ]
        )
        table = table.join(evidence.drop(columns=["metric"]), on="task")
        show_table(
            table.style.format(
                {
                    c: "{:.1f}"
                    for c in ("expert_score", "base_score", "gain", "gain_ci_low", "gain_ci_high", "points_per_row")
                }
                | {"eval_rows": "{:.0f}"},
                na_rep="—",
            ),
            column_config={
                "base_score": "untrained base",
                "gain": "expert − base",
                "gain_ci_low": "95 % low",
                "gain_ci_high": "95 % high",
                "eval_rows": "eval rows",
                "points_per_row": "one row moves Eq. 1 by (points)",
            },
        )
        noisy = table[table["points_per_row"] > 2]
        if len(noisy):
            st.caption(
                "On "
                + ", ".join(f"{r.task} ({r.points_per_row:.1f})" for r in noisy.itertuples())
                + " one eval row moves the merging loss by more than 2 points: their losses are noisy."
            )

story_of = cached(story.story_group, store, study)  # the tables the headline reads, kept across processes
h = cached(
    story.headline,
    store,
    study,
    t5=cached(protocol.table5, store, study),
    group_frame=cached(protocol.mds_vs_loss, store, study, story_of) if story_of else None,
)
st.subheader("The headline")
for sentence in story.sentences(h):
    st.markdown(sentence)
comparison = None
if h.task is not None:
    with st.spinner("Checking which signal tracked collapse here…"):
        comparison = cached(predictors.predictor_comparison, store, study)
    if len(comparison):
        st.markdown(story.predictor_sentence(comparison))

if h.task is not None:
    c1, c2, c3 = st.columns(3)
    lo, hi = h.best_ci
    c1.metric(
        f"{h.task}: best loss over {len(h.methods)} methods",
        f"{h.best_loss:.1f} %",
        f"95 % interval {lo:.1f} to {hi:.1f}" if np.isfinite(lo) else "no interval (no per-row records)",
        delta_color="off",
        help="Eq. 1 merging loss of the task's best method; −30 % or worse under every method = collapse",
    )
    if h.mds_rank is not None:
        c2.metric(
            "its MDS (hidden states only)",
            f"{h.mds:.2f}",
            f"rank {h.mds_rank} of {len(h.tasks)}",
            delta_color="off",
            help="Merging Difficulty Score, Eq. 3; higher = harder to merge",
        )
    if h.swap is not None:
        s = h.swap
        noise = uncertainty.within_noise(s["change_ci_low"], s["change_ci_high"])
        c3.metric(
            f"group's worst loss after swapping in {s['added']}",
            f"{s['worst_after']:.1f} %",
            f"{s['change']:+.1f} points" + (" (within noise)" if noise else ""),
            delta_color="off" if noise in (True, None) else "normal",  # a higher loss is better: green up
            help="verified by merging; the change's 95 % interval: "
            + (
                f"{s['change_ci_low']:+.1f} to {s['change_ci_high']:+.1f} points"
                if np.isfinite(s["change_ci_low"])
                else "none (no per-row records)"
            ),
        )
        chart(
            figures.swap_comparison(protocol.swap_frame(s), title=f"Before and after the swap — {h.group}"),
            "overview_swap",
        )
        st.caption(story.chart_note("swap", table=pd.DataFrame([s])))
    else:
        sub = cached(views.loss_table, store, study)
        sub = sub[sub["group_name"] == h.group]
        chart(
            figures.loss_bars(sub, title=f"Merging loss — {h.group}", highlight=h.task if h.collapsed else None),
            "overview_loss",
        )
        st.caption(story.chart_note("loss_bars", losses=sub))

claims_tested(store, study, comparison=comparison)

st.subheader("Where to look next")
c1, c2, c3, c4 = st.columns(4)
c1.page_link("pages/merge_loss.py", label="Merge loss: every task × method", icon=":material/bar_chart:")
c2.page_link("pages/similarity.py", label="Similarity: HiddenSim and MDS", icon=":material/grid_on:")
c3.page_link("pages/statistics.py", label="Statistics: what predicts collapse", icon=":material/functions:")
c4.page_link("pages/task_swap.py", label="Task swap: what if?", icon=":material/swap_horiz:")

with st.expander("Glossary"):
    for term, meaning in story.GLOSSARY.items():
        st.markdown(f"**{term}** — {meaning}")
