"""Paper page: the published tables, figures rebuilt from them, statistics recomputed."""

import streamlit as st

from mergelab.analysis import paper
from mergelab.ui.router import page_start
from mergelab.ui.state import get_store
from mergelab.ui.widgets import show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("The paper's published results")
st.caption(
    "Cao et al., *An Empirical Study and Theoretical Explanation on Task-Level Model-Merging "
    "Collapse* (preprint, 2026-03-11). Numbers transcribed into `data/paper/`; every statistic "
    "below is recomputed from them with `mergelab.analysis.stats`, beside the value the paper prints."
)

store = get_store()
tables = paper.load_tables()
results = store.results(paper.STUDY_ID)
mds_rows = store.task_metrics(paper.STUDY_ID)

loss_tab, mds_tab, anova_tab, swap_tab, tables_tab = st.tabs(
    [
        "Merge-loss bars (Table 2)",
        "MDS vs loss (Table 5)",
        "ANOVA (Table 3)",
        "Task swap (Table 6)",
        "Tables & provenance",
    ]
)

with loss_tab:
    glue = results[results["group_name"] == "GLUE (Table 2)"]
    model = st.selectbox("Model", sorted(glue["model"].unique()), key="paper_model")
    collapse = st.slider("Collapse line (%)", -100, 0, -30, key="paper_collapse")
    sub = glue[glue["model"] == model]
    st.plotly_chart(
        figures.loss_bars(sub, collapse=collapse, title=f"Merging loss, 8 GLUE tasks merged, {model}"), width="stretch"
    )
    st.plotly_chart(figures.expert_vs_merged(sub, title=f"Expert (FT) vs merged accuracy, {model}"), width="stretch")

with mds_tab:
    st.markdown(
        "Pearson correlation between each task's MDS (Eq. 3) and its **best** merging "
        "loss over the methods in Tables 7–10 (LA, TA, TIES)."
    )
    t5 = paper.table5_recomputed(tables)
    show_table(t5.style.format({"r": "{:.3f}", "p_recomputed": "{:.3g}", "p_published": "{:.3g}"}, na_rep="—"))
    st.caption(
        "The last row recomputes GLUE after replacing Table 7's TIES row by Table 2's "
        "Qwen2.5-3B TIES values (the printed row repeats DARE's for RTE, SST-2, WNLI)."
    )
    frame = paper.mds_vs_best_loss(tables)
    cols = st.columns(2)
    for i, (group, sub) in enumerate(frame.groupby("group", sort=False)):
        with cols[i % 2]:
            st.plotly_chart(figures.mds_vs_loss(sub, title=f"Group {paper.DETAIL_GROUPS[group]}"), width="stretch")

with anova_tab:
    st.markdown(
        "One-way ANOVA of the merging loss by **method** and by **task**. The paper's Table 3 "
        "pools every model of Table 1 (Llama, Qwen and T5 — 8 models × 5 methods × 8 tasks), "
        "whose per-task losses are not published; only Table 2's three Qwen2.5 models can be "
        "recomputed, so the p-values differ. With DARE included, its collapses (two −100 "
        "scores for 7B) make the method effect significant on Qwen alone; without DARE the "
        "method effect vanishes and the task effect matches the paper's order of magnitude."
    )
    show_table(
        paper.table3_recomputed(tables).style.format(
            {"F": "{:.2f}", "p_recomputed": "{:.3g}", "p_published_glue": "{:.3g}"}
        )
    )
    st.markdown("Published Table 3:")
    show_table(tables["table3"])

with swap_tab:
    st.markdown(
        "Group (a) had one collapsing task (the 6th, TIES loss −70.8). Replacing it with "
        "lower-MDS tasks gave groups (a1) and (a2), merged with TIES."
    )
    st.plotly_chart(figures.swap_comparison(tables["table6"], title="Table 6: (a) → (a1), (a2)"), width="stretch")
    show_table(tables["table6"])

with tables_tab:
    st.subheader("Consistency checks (computed from the tables)")
    show_table(paper.consistency_checks(tables), width="stretch")
    st.subheader("Table 4: conflict metrics vs merging loss (pairs of Qwen2.5-3B experts)")
    st.plotly_chart(
        figures.pvalue_grid(tables["table4"], "metric", "method", title="Table 4 Pearson p-values (published)"),
        width="stretch",
    )
    st.caption(
        "The pairwise merge losses and conflict metrics behind Table 4 are not published, "
        "so Table 4 cannot be recomputed; it is shown as printed."
    )
    for name in ["table1", "table2", "detail_losses", "detail_mds"]:
        with st.expander(name):
            show_table(tables[name])
    with st.expander("Provenance"):
        st.markdown((paper.PAPER_DIR / "PROVENANCE.md").read_text())
    st.caption(
        f"{len(results)} published result rows and {len(mds_rows)} MDS rows served from the store, like any live study."
    )
