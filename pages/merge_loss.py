"""Merge-loss page: grouped bars task × method, expert vs merged, worst / best per task."""

import streamlit as st

from mergelab.analysis import grouping, protocol, story, uncertainty, views
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store, group_picker
from mergelab.ui.widgets import chart, need_study, show_table, task_notes
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("Merging loss")
st.caption(
    "L(T) = (P_merged / P_expert − 1) · 100 (Eq. 1): 0 = the merge keeps the expert's score, −100 = it "
    "loses all of it. Error bars: 95 % intervals from resampling the eval rows (expert and merge on the "
    "same rows)."
)
store = get_store()
study = need_study(current_study())
losses = cached(views.loss_table, store, study)
intervals = cached(protocol.loss_intervals, store, study)
if losses.empty:
    st.info("No merge results in this study yet — queue them on the Run page.")
    st.stop()
pairs = set(store.groups(study, role="pair"))
groups = [g for g in dict.fromkeys(losses["group_name"]) if g not in pairs]  # pairs: Statistics page
group = group_picker("Task group", store, study, groups, key="loss_group")
collapse = st.slider("Collapse line (%)", -100, 0, -30, key="loss_collapse")
sub = intervals[intervals["group_name"] == group]
if sub.duplicated(["task", "method"]).any():  # the paper's Table 2: several base models per group
    model = st.selectbox("Base model", sorted(sub["model"].unique()), key="loss_model")
    sub = sub[sub["model"] == model]
best_of = views.best_of(store, study)
summary = views.loss_extremes(sub[sub["method"].isin(best_of)] if best_of else sub, collapse)
collapsed = summary.loc[summary["collapsed_under_all"], "task"].tolist()
chart(
    figures.loss_bars(
        sub, collapse=collapse, title=f"Merging loss — {group}", highlight=collapsed[0] if collapsed else None
    ),
    "loss_bars",
)
st.caption(story.chart_note("loss_bars", losses=sub, collapse=collapse))
same = sorted({v for v in grouping.identical_methods(sub).values() if " = " in v})
if same:
    st.caption(
        f"{'; '.join(same)} give identical scores on every task here: one merge, counted once by the "
        "statistics. (Task arithmetic with λ = 1/n is linear averaging; MergeLab's TA default is 0.3.)"
    )
if sub["ci_note"].eq(uncertainty.NO_RECORDS).any():
    st.info(f"Some losses have {uncertainty.NO_RECORDS}.")
if sub["score"].notna().all() and sub["expert_score"].notna().all():
    chart(figures.expert_vs_merged(sub, title=f"Expert vs merged score — {group}"), "expert_vs_merged")
st.subheader("Worst and best method per task")
notes = task_notes(store, study)
summary.insert(1, "what it is", [notes.get(t, "") for t in summary["task"]])
best_ci = cached(protocol.best_loss_intervals, store, study, group).set_index("task")
summary["best 95 % low"] = summary["task"].map(best_ci["ci_low"])
summary["best 95 % high"] = summary["task"].map(best_ci["ci_high"])
show_table(
    summary.style.format(
        {"worst_loss": "{:.1f}", "best_loss": "{:.1f}", "best 95 % low": "{:.1f}", "best 95 % high": "{:.1f}"},
        na_rep="undefined",
    ),
    column_config={"worst_loss": "worst loss (%)", "best_loss": "best loss (%)"},
)  # shorter here
for note in sorted({n for n in sub["note"] if n}):
    st.warning(f"Some merging losses are {note} — shown as gaps; every other number is as measured.")
if collapsed:
    st.error(f"Collapse under every method (best loss ≤ {collapse}%): {', '.join(collapsed)}")

st.subheader("Normalized score: merged ÷ expert (MergeBench)")
st.caption(
    "The same comparison on MergeBench's scale: 1.00 = the merge keeps the expert's score (it equals "
    "1 + Eq. 1 / 100). Per task, then the mean over the group's tasks and over each category the study "
    "declares (`categories:` in its YAML); 95 % intervals resample each task's eval rows, the mean taken "
    "inside every resample."
)
normalized = cached(protocol.normalized_scores, store, study)
show_table(
    normalized[normalized["group_name"] == group]
    .drop(columns=["group_name"])
    .style.format({"normalized": "{:.3f}", "ci_low": "{:.3f}", "ci_high": "{:.3f}"}, na_rep="undefined"),
    column_config={
        "level": "averaged over",
        "n_tasks": "tasks",
        "normalized": "merged ÷ expert",
        "ci_low": "95 % low",
        "ci_high": "95 % high",
    },
)

held = cached(protocol.forgetting, store, study)
if len(held):
    st.subheader("Forgetting: the merge against the base on held-out tasks (MergeBench)")
    st.caption(
        "Each merge of this group scored on tasks outside it (`held_out:` in the study's YAML), against the "
        "untrained base on the same eval rows: change = merged − base in points (below 0: the merge lost "
        "skill the base had), retained = merged ÷ base. 95 % intervals resample the rows of merged and base "
        "together; a change whose interval covers 0 is within noise."
    )
    show_table(
        held[held["group_name"] == group]
        .drop(columns=["group_name"])
        .style.format(
            {c: "{:.1f}" for c in ("score", "base_score", "change", "ci_low", "ci_high")} | {"retained": "{:.3f}"},
            na_rep="undefined",
        ),
        column_config={
            "level": "averaged over",
            "n_tasks": "tasks",
            "score": "merged",
            "base_score": "untrained base",
            "change": "merged − base",
            "ci_low": "95 % low",
            "ci_high": "95 % high",
            "retained": "merged ÷ base",
        },
    )
