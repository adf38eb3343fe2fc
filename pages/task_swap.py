"""Task swap — the paper's (a)→(a1): drop the group's highest-MDS task, rank replacements by hidden
states beside what the study already measured of them, then verify a swap by actually merging."""

import pandas as pd
import streamlit as st

from mergelab.analysis import protocol, story, views
from mergelab.study import executors, planner
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store, group_picker
from mergelab.ui.widgets import chart, need_study, show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("Task swap: what if?")
store = get_store()
study = need_study(current_study())
groups = store.groups(study)
if not groups:
    st.info("This study has no task groups to swap a task in.")
    st.stop()
names = list(groups)
group = group_picker("Task group", store, study, names, key="swap_group")
tasks = groups[group]
if len(tasks) < 3:
    st.info(
        f"{group} has {len(tasks)} tasks: HiddenSim and MDS need at least 3 (Eq. 2 rescales distances by "
        "their max − min, and one pair has a single distance), so there is nothing to rank a swap by."
    )
    st.stop()
everything = list(
    dict.fromkeys([*store.pool(study), *(t for g in store.groups(study, role=("group", "swap")).values() for t in g)])
)
if len(everything) <= len(tasks):
    st.info(
        "This study has no spare tasks (a `pool:` list in its spec, or other groups), so there is nothing "
        "to swap in. The paper's own swap is on the Paper page (Table 6)."
    )
    st.stop()
if not views.has_states(store, study, everything):
    st.info("Hidden states for the group's and the candidate tasks are needed; run the study first.")
    st.stop()
advice = cached(protocol.swap_advice, store, study, group)
removed, now = advice.attrs["removed"], advice.attrs["current_worst_mds"]
st.markdown(
    f"Highest-MDS task in **{group}**: **{removed}** (MDS {now:.2f}: the paper's candidate for collapse). "
    "Each replacement below is ranked by the new group's worst MDS, from hidden states alone — no merge "
    "needed — beside what this study already measured of it."
)
if not advice.attrs["any_improves"]:
    st.warning(
        f"No candidate improves {group} by this measure: every swap raises the group's worst MDS "
        f"above its present {now:.2f}. Merging one anyway tests the advice, not a recommendation."
    )
shown = advice.rename(
    columns={
        "change": "change vs now",
        "measured_elsewhere": "its best loss in other groups",
        "collapsed_in": "collapsed in",
        "pair_loss_with_group": "mean pair loss with the group",
    }
)
fmt = {
    "new_worst_mds": "{:.2f}",
    "candidate_mds": "{:.2f}",
    "change vs now": "{:+.2f}",
    "mean pair loss with the group": "{:+.1f}",
}
styled = shown.style.format(fmt, na_rep="—")
if advice.attrs["any_improves"]:
    styled = styled.apply(lambda r: ["background-color: #c7e9c0" if r["improves"] else "" for _ in r], axis=1)
show_table(styled, key="swap_table")
risky = advice[advice["collapsed_in"] != ""]
if len(risky):
    st.warning(
        "Collapsed elsewhere in this study: "
        + "; ".join(f"{r.candidate} (in {r.collapsed_in})" for r in risky.itertuples())
        + ". A low MDS here does not undo that."
    )
default = int(advice.index[advice["improves"]][0]) if advice.attrs["any_improves"] else 0
choice = st.selectbox("Swap in", list(advice["candidate"]), index=default, key="swap_choice")
if st.button("Merge and evaluate this swap", type="primary", key="swap_go"):
    counts = planner.add_swap(store, study, group, removed, choice)
    pid = executors.ensure_worker(store, study)
    st.success(
        f"Queued {counts['new']} units for the swap {removed} → {choice}" + (f"; started worker {pid}" if pid else "")
    )

effects = protocol.swap_effects(store, study)  # read again: a swap queued above is new
effects = effects[effects["parent"] == group]
if len(effects):
    st.subheader("Predicted and measured, verified by merging (Table 6 style)")
    shown = effects.assign(predicted_mds_change=effects["worst_mds_after"] - effects["worst_mds_before"])
    show_table(
        shown[
            [
                "removed",
                "added",
                "worst_mds_before",
                "worst_mds_after",
                "predicted_mds_change",
                "worst_before",
                "worst_after",
                "change",
                "change_ci_low",
                "change_ci_high",
                "within_noise",
                "worst_task_after",
                "merged_tasks",
                "tasks",
            ]
        ].style.format(
            {c: "{:.1f}" for c in ("worst_before", "worst_after", "change", "change_ci_low", "change_ci_high")}
            | {"worst_mds_before": "{:.2f}", "worst_mds_after": "{:.2f}", "predicted_mds_change": "{:+.2f}"},
            na_rep="—",
        )
    )
    for _, s in effects.iterrows():
        if s["merged_tasks"] == s["tasks"]:
            chart(
                figures.swap_comparison(protocol.swap_frame(s), title=f"{s['removed']} → {s['added']}"),
                f"swap_{s['added']}",
            )
            st.caption(story.chart_note("swap", table=pd.DataFrame([s])))
        else:
            st.info(
                f"{s['swap']}: {s['merged_tasks']} of {s['tasks']} tasks merged — see the Run page; this fills "
                "in as units finish."
            )
record = protocol.swap_record(store, study)
if record["verified"]:
    st.caption(story.swap_record_sentence(record))

st.subheader("Best group of size m")
pool = store.pool(study)
m = st.slider("m", 2, max(2, len(tasks + pool) - 1), min(len(tasks), len(tasks + pool) - 1), key="swap_m")
with st.spinner("Searching groups by MDS…"):
    show_table(cached(views.best_subset, store, study, list(dict.fromkeys(tasks + pool)), m))
