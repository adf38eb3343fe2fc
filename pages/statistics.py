"""Statistics page: the paper's Table 4 on pairwise merges, Table 5 over groups, Table 3's ANOVA,
and which signal predicts merging loss — each beside the paper's printed numbers."""

import streamlit as st

from mergelab.analysis import paper, protocol, story
from mergelab.analysis import views as results
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import chart, need_study, show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
ALPHA = 0.05
st.title("Statistics")
store = get_store()
study = need_study(current_study())
groups = protocol.main_groups(store, study)
printed = paper.load_tables()


def _count_significant(frame, col="p_value"):
    return int((frame[col] < ALPHA).sum()), int(frame[col].notna().sum())


st.subheader("Pairwise merges: which metric tracks a pair's merging loss? (Table 4)")
t4 = cached(protocol.table4, store, study)
if len(t4):
    pub = printed["table4"].rename(columns={"p_value": "p_paper"})
    t4 = t4.merge(pub, on=["metric", "method"], how="left")
    chart(figures.pvalue_grid(t4.dropna(subset=["p_value"]), "metric", "method", alpha=ALPHA,
                              title="Pearson p: metric vs the pair's merging loss, per method"), "t4_grid")
    hs, conf = t4[t4.metric == "hiddensim"], t4[t4.metric != "hiddensim"]
    k_hs, n_hs = _count_significant(hs)
    k_c, n_c = _count_significant(conf)
    p_hs, pn_hs = _count_significant(hs.dropna(subset=["p_paper"]), "p_paper")
    p_c, pn_c = _count_significant(conf.dropna(subset=["p_paper"]), "p_paper")
    n_pairs = int(t4["n"].max())
    st.markdown(f"Over **{n_pairs} pairwise merges**: HiddenSim has p < {ALPHA} for **{k_hs} of {n_hs}** methods, "
                f"the four conflict metrics for **{k_c} of {n_c}** method × metric cells. The paper printed "
                f"{p_hs} of {pn_hs} and {p_c} of {pn_c}.")
    if n_pairs < 20:
        st.warning(f"Only {n_pairs} pairs per method: a Pearson test this small detects only large effects.")
    show_table(t4.style.format({"r": "{:.3f}", "p_value": "{:.3g}", "p_paper": "{:.3g}"}, na_rep="—"))
    st.caption("A pair's merging loss is the mean of Eq. 1 over its two tasks; HiddenSim(i, j) is Eq. 2 "
               "within the group the pairs were drawn from. p_paper: the paper's Table 4 (Qwen2.5-3B, GLUE).")
elif study == paper.STUDY_ID:
    chart(figures.pvalue_grid(printed["table4"], "metric", "method", alpha=ALPHA,
                              title="Table 4 as published (pairwise Qwen2.5-3B merges)"), "t4_grid")
    st.caption("The pairs' losses and metrics behind Table 4 are not published; shown as printed.")
else:
    st.info("This study has no pairwise merges. Add `pairwise: [<group>]` to its spec to merge every pair "
            "of that group with every method (the paper's Table 4).")

st.subheader("MDS vs best merging loss, per group and pooled (Table 5)")
if not groups:
    st.info("This study has no task groups.")
else:
    t5 = cached(protocol.table5_groups, store, study, **results.hidden_settings(store, study))
    if study == paper.STUDY_ID:
        t5 = t5.merge(printed["table5"].rename(columns={"p_value": "p_paper"}).assign(
            group=lambda d: d["group"].map(paper.DETAIL_GROUPS).fillna(d["group"])), on="group", how="left")
    else:
        t5["p_paper (GLUE, a, b, c)"] = ", ".join(f"{p:g}" for p in printed["table5"]["p_value"])
    show_table(t5.style.format({"r": "{:.3f}", "p_value": "{:.3g}"}, na_rep="undefined"))
    k5, n5 = _count_significant(t5)
    small = t5[(t5["n"] < 10) & t5["p_value"].notna()]
    st.markdown(f"MDS tracks the best loss with p < {ALPHA} in **{k5} of {n5}** rows "
                f"(the paper: 4 of 4 groups).")
    for row in small.itertuples():
        if row.p_value >= ALPHA:
            st.warning(f"{row.group}: r = {row.r:.2f}, p = {row.p_value:.3g} — not significant on {row.n} tasks.")
    group = st.selectbox("Group for the scatter", list(groups), key="stats_group")
    frame = cached(results.mds_vs_loss, store, study, group, **results.hidden_settings(store, study))
    if frame["mds"].notna().sum() >= 3:
        chart(figures.mds_vs_loss(frame, title=f"MDS vs best loss — {group}"), "mds_vs_loss")
        st.caption(story.chart_note("mds_vs_loss", frame=frame))

st.subheader("Method vs task: one-way ANOVA over every group (Table 3)")
anova = cached(protocol.anova_groups, store, study)
show_table(anova.style.format({"F": "{:.2f}", "p_value": "{:.3g}"}, na_rep="undefined"))
by = anova.set_index("factor")["p_value"]
if by.notna().all():
    st.markdown(f"Task: p = {by['task']:.3g}; method: p = {by['method']:.3g}. The paper: task p = 2.4e-36, "
                "method p = 0.575 — collapse is a property of the task combination, not of the technique.")

st.subheader("Which signal predicts collapse?")
with st.spinner("Comparing every predictor (1,000 bootstrap resamples each)…"):
    comparison = cached(protocol.predictor_comparison, store, study)
if comparison.empty:
    st.info("Needs merged results with hidden states or conflict metrics.")
else:
    chart(figures.predictor_forest(comparison), "predictors")
    best = comparison.dropna(subset=["pearson_p"]).sort_values("pearson_p").head(1)
    if len(best):
        b = best.iloc[0]
        st.markdown(f"Strongest here: **{b['predictor']}** ({b['level']}), r = {b['pearson_r']:.2f} "
                    f"[{b['ci_low']:.2f}, {b['ci_high']:.2f}], p = {b['pearson_p']:.3g}, n = {b['n']}; "
                    f"{_count_significant(comparison, 'pearson_p')[0]} of {len(comparison)} predictors have "
                    f"p < {ALPHA}.")
    show_table(comparison.style.format({c: "{:.3g}" for c in comparison.columns
                                        if comparison[c].dtype.kind == "f"}, na_rep="—"))
    st.caption("Same rows for every predictor. 'task in group': each task's best loss over methods in each group "
               "vs its MDS (per distance and layer) and its mean conflict metrics with the group's other tasks; "
               "'pair': a pair's best loss vs HiddenSim(i, j) and the four conflict metrics. CIs: 1,000 bootstrap "
               "resamples of rows. LOGO: Pearson r with each group left out in turn (needs ≥ 3 groups).")

if groups:
    with st.expander("Per task inside one group — a different analysis from Table 4"):
        g = st.selectbox("Group", list(groups), key="stats_grid_group")
        grid = cached(results.conflict_vs_loss, store, study, g)
        if not grid.empty and grid["p_value"].notna().any():
            chart(figures.pvalue_grid(grid.dropna(subset=["p_value"]), "metric", "method", alpha=ALPHA,
                                      title=f"Per task in {g}: the task's mean metric over its pairs vs its loss"),
                  "pvalue_grid")
            st.caption("Each task's conflict metrics averaged over its pairs inside the group (and its mean "
                       "HiddenSim to the others), correlated with its own merging loss in the group's merge. "
                       "Not the paper's Table 4, which merges pairs.")
        else:
            st.info("No conflict metrics stored for this group.")
