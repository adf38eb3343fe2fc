"""Statistics page: Table-4-style p-value grid, Table-5-style MDS vs best loss, Table-3 ANOVA."""

import streamlit as st

from mergelab import figures, results
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import chart, need_study

st.title("Statistics")
store = get_store()
study = need_study(current_study())
groups = list(store.groups(study))
group = st.selectbox("Task group", groups, key="stats_group")

st.subheader("Which metric tracks merging loss? (Table 4 style)")
published = store.published_stats(study)
grid = results.conflict_vs_loss(store, study, group)
if not grid.empty and grid["p_value"].notna().any():
    chart(figures.pvalue_grid(grid.dropna(subset=["p_value"]), "metric", "method",
                              title=f"Pearson p: metric (mean over the task's pairs in {group}) vs loss"),
          "pvalue_grid")
    st.caption("Per task: the conflict metric averaged over its pairs inside the group, and its mean "
               "HiddenSim to the others, correlated with its merging loss under each method.")
elif not published[published["ref"] == "Table 4"].empty:
    t4 = published[published["ref"] == "Table 4"].copy()
    t4[["metric", "method"]] = t4["key"].str.split("|", expand=True)
    chart(figures.pvalue_grid(t4.rename(columns={"value": "p_value"}), "metric", "method",
                              title="Table 4 as published (pairwise Qwen2.5-3B merges)"), "pvalue_grid")
else:
    st.info("No parameter-conflict metrics stored for this study yet.")

st.subheader("MDS vs best merging loss (Table 5 style)")
frame = results.mds_vs_loss(store, study, group)
if len(frame) >= 3:
    chart(figures.mds_vs_loss(frame, title=f"MDS vs best loss — {group}"), "mds_vs_loss")
    t5 = results.table5(store, study)
    pub5 = published[published["ref"] == "Table 5"].rename(columns={"key": "group", "value": "p_published"})
    if not pub5.empty:
        t5 = t5.merge(pub5[["group", "p_published"]], on="group", how="left")
    st.dataframe(t5, hide_index=True)
else:
    st.info("Needs MDS and merge losses for at least three tasks of this group.")

st.subheader("Method vs task: one-way ANOVA (Table 3 style)")
st.dataframe(results.anova(store, study, group), hide_index=True)
st.caption("A small p for 'task' and a large one for 'method' is the paper's finding: collapse is a "
           "property of the task combination, not of the merging technique.")
