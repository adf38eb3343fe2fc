"""Statistics page: Table 5 over the evidence groups (with direction, intervals, reliability and
power), Table 4 on pairwise merges, Table 3's ANOVA, and which signal predicts collapse — each
beside the paper's printed numbers."""

import streamlit as st

from mergelab.analysis import grouping, paper, protocol, story
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store, group_picker
from mergelab.ui.widgets import chart, claims_tested, need_study, predictor_comparison, show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("Statistics")
store = get_store()
study = need_study(current_study())
groups = grouping.evidence_groups(store, study)
printed = paper.load_tables()
FMT = {
    "r": "{:+.2f}",
    "ci_low": "{:+.2f}",
    "ci_high": "{:+.2f}",
    "p_expected": "{:.3g}",
    "p_two_sided": "{:.3g}",
    "reliability": "{:.2f}",
    "detectable_r": "{:.2f}",
    "rows_needed": "{:.0f}",
    "F": "{:.2f}",
    "p_value": "{:.3g}",
}

claims_tested(store, study, t5=cached(protocol.table5, store, study))

st.subheader("Does MDS predict the best merging loss? (Table 5)")
if not groups:
    st.info("This study has no task groups.")
else:
    t5 = cached(protocol.table5, store, study)
    for sentence in story.table5_sentences(t5, protocol.power_summary(t5)):
        st.markdown(sentence)
    if t5.attrs.get("overlap"):
        st.warning(t5.attrs["overlap"])
    shown = t5
    if study == paper.STUDY_ID:
        shown = t5.merge(
            printed["table5"]
            .rename(columns={"p_value": "p_paper"})
            .assign(group=lambda d: d["group"].map(paper.DETAIL_GROUPS).fillna(d["group"])),
            on="group",
            how="left",
        )
    show_table(shown.style.format(FMT, na_rep="—"))
    st.caption(
        "One row per group drawn or declared (swaps are not groups: they were chosen by looking at results). "
        "p (paper's direction): one-sided, r < 0; a positive r never counts as support. Interval of r: "
        "Fisher z. Reliability: the share of the best-loss spread that is not row-sampling noise. Detectable "
        "|r|: the smallest correlation the group finds with 80 % power. Rows needed: eval rows per task for "
        "reliability 0.8."
    )
    names = list(groups)
    group = group_picker("Group for the scatter", store, study, names, key="stats_group")
    frame = cached(protocol.mds_vs_loss, store, study, group)
    if frame["mds"].notna().sum() >= 3:
        chart(figures.mds_vs_loss(frame, title=f"MDS vs best loss — {group}"), "mds_vs_loss")
        st.caption(story.chart_note("mds_vs_loss", frame=frame))

st.subheader("Pairwise merges: which metric tracks a pair's merging loss? (Table 4)")
t4 = cached(protocol.table4, store, study)
if len(t4):
    pub = printed["table4"].rename(columns={"p_value": "p_paper"})
    t4 = t4.merge(pub, on=["metric", "method"], how="left")
    chart(
        figures.pvalue_grid(
            t4.dropna(subset=["p_expected"]),
            "metric",
            "method",
            value="p_expected",
            title="One-sided p: metric vs the pair's merging loss, per method",
        ),
        "t4_grid",
    )
    st.caption(story.chart_note("pvalue_grid", grid=t4.dropna(subset=["p_expected"])))
    for sentence in story.table4_sentences(t4, cached(protocol.pair_reliability, store, study)):
        st.markdown(sentence)
    show_table(t4.drop(columns=["expected"]).style.format({**FMT, "p_paper": "{:.3g}"}, na_rep="—"))
    st.caption(
        "A pair's merging loss is the mean of Eq. 1 over its two tasks; HiddenSim(i, j) is Eq. 2 "
        "within the group the pairs were drawn from. Expected direction: more conflict (or less cosine, "
        "less HiddenSim) → worse loss. p_paper: the paper's Table 4 (Qwen2.5-3B, GLUE), two-sided."
    )
elif study == paper.STUDY_ID:
    chart(
        figures.pvalue_grid(
            printed["table4"],
            "metric",
            "method",
            value="p_value",
            title="Table 4 as published (pairwise Qwen2.5-3B merges, two-sided p)",
        ),
        "t4_grid",
    )
    st.caption("The pairs' losses and metrics behind Table 4 are not published; shown as printed.")
else:
    st.info(
        "This study has no pairwise merges. Add `pairwise: [<group>]` to its spec to merge every pair "
        "of that group with every method (the paper's Table 4)."
    )

st.subheader("Method vs task: one-way ANOVA over the groups (Table 3)")
anova = cached(protocol.anova, store, study)
show_table(anova.style.format(FMT, na_rep="undefined"))
for sentence in story.anova_sentences(anova, printed["table3"]):
    st.markdown(sentence)

st.subheader("Which signal predicts collapse?")
comparison = predictor_comparison(store, study)
if comparison.empty:
    st.info("Needs merged results with hidden states or conflict metrics.")
else:
    chart(figures.predictor_forest(comparison), "predictors")
    st.markdown(story.predictor_sentence(comparison))
    show_table(
        comparison.drop(columns=["expected"]).style.format(
            {c: "{:.3g}" for c in comparison.columns if comparison[c].dtype.kind == "f"}, na_rep="—"
        )
    )
    st.caption(
        "Same rows for every predictor. 'task in group': each task's best loss in each group vs its MDS "
        "(every stored layer, distance and pooling; the study's own setting is its primary one), its mean "
        "conflict metrics with the group's other tasks, and the merge's distortion of its hidden states; "
        "'pair': a pair's best loss vs HiddenSim(i, j) and the conflict metrics. Interval: whole tasks "
        "resampled. Null: the best losses shuffled within groups; the family-wise bar is the 95th "
        "percentile of the largest |r| over all predictors. Replication: the groups that share no task, "
        "read one by one."
    )

if groups:
    with st.expander("Per task inside one group — exploratory, not the paper's Table 4"):
        names = list(store.groups(study, role=("group", "swap")))
        g = group_picker("Group", store, study, names, key="stats_grid_group")
        grid = cached(protocol.task_conflict_grid, store, study, g)
        if not grid.empty and grid["p_expected"].notna().any():
            chart(
                figures.pvalue_grid(
                    grid.dropna(subset=["p_expected"]),
                    "metric",
                    "method",
                    value="p_expected",
                    title=f"Per task in {g}: the task's mean metric over its pairs vs its loss",
                ),
                "pvalue_grid",
            )
            st.caption(
                story.chart_note("pvalue_grid", grid=grid.dropna(subset=["p_expected"]))
                + " Each task's conflict metrics averaged over its pairs inside the group (and its mean "
                "HiddenSim to the others), correlated with its own merging loss in the group's merge."
            )
        else:
            st.info("No conflict metrics stored for this group.")
