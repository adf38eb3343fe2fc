"""Task swap — the paper's (a)→(a1): drop the worst-MDS task, rank replacements by hidden states,
then verify the best swap by actually merging."""

import streamlit as st

from mergelab.analysis import story
from mergelab.analysis import views as results
from mergelab.study import executors as background
from mergelab.study import planner as runner
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import chart, need_study, show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("Task swap: what if?")
store = get_store()
study = need_study(current_study())
groups = store.groups(study)
pool = store.pool(study)
if not pool or not groups:
    st.info("This study has no pool of spare tasks (a `pool:` list in its spec), so there is "
            "nothing to swap in. The paper's own swap is on the Paper page (Table 6).")
    st.stop()
group = st.selectbox("Task group", [g for g in groups if not g.startswith("swap:")], key="swap_group")
tasks = groups[group]
if not results.has_states(store, study, tasks + pool):
    st.info("Hidden states for the group and pool tasks are needed; run the study first.")
    st.stop()
cands = cached(results.swap_candidates, store, study, tasks, pool)
removed = cands.attrs["removed"]
st.markdown(f"Worst-MDS task in **{group}**: **{removed}** (MDS {cands.attrs['current_worst_mds']:.2f}). "
            "Candidates from the pool, ranked by the new group's worst MDS (hidden states only, no merge):")
show_table(cands.style.format({"new_worst_mds": "{:.2f}", "candidate_mds": "{:.2f}"})
           .highlight_min(subset=["new_worst_mds"], color="#c7e9c0"), key="swap_table")
choice = st.selectbox("Swap in", list(cands["candidate"]), key="swap_choice")
swap_name = results.swap_name(group, removed, choice)
if st.button("Merge and evaluate this swap", type="primary", key="swap_go"):
    counts = runner.add_group(store, study, swap_name, [choice if t == removed else t for t in tasks])
    pid = background.ensure_worker(store, study)
    st.success(f"Queued {counts['new']} units for {swap_name}" + (f"; started worker {pid}" if pid else ""))

if results.swaps_of(store, study, group):  # read again: a swap queued above is a new group
    st.subheader("Before / after (Table 6 style)")
    table = results.swap_table(store, study, group)
    show_table(table)
    if table["worst_loss"].notna().all():
        chart(figures.swap_comparison(table), "swap_comparison")
        st.caption(story.chart_note("swap", table=table))
    else:
        st.info("Some swaps are still running — see the Run page; this table fills in as units finish.")

st.subheader("Best group of size m")
m = st.slider("m", 2, max(2, len(tasks + pool) - 1), min(len(tasks), len(tasks + pool) - 1), key="swap_m")
with st.spinner("Searching groups by MDS…"):
    show_table(cached(results.best_subset, store, study, list(dict.fromkeys(tasks + pool)), m))
