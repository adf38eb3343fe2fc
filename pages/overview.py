"""Overview: what the study is, its story in plain words (computed from its rows), one before/after
chart, and where to look next."""

import streamlit as st

from mergelab.analysis import story
from mergelab.analysis import views as results
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import chart, need_study
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
store = get_store()
study = need_study(current_study())
row = store.study(study)
st.title(row["name"])
spec = results.spec_dict(store, study)

with st.container(border=True):
    st.markdown("**Why some merges collapse.** *Merging* combines adapters fine-tuned for different tasks into "
                "one model, without training. Often one task *collapses*: it loses most of its skill whatever "
                "the merging method. The paper behind MergeLab shows that a cheap hidden-state score, **MDS**, "
                "predicts which task — before any merge is run — while the usual parameter-conflict metrics do not.")

if spec:
    tasks = spec.get("tasks", {})
    groups = store.groups(study)
    st.markdown(f"**This study:** base `{spec.get('base')}` ({spec.get('architecture', 'encoder')}), "
                f"{len(tasks)} tasks, {len(groups)} group(s) of tasks merged with "
                f"{', '.join(spec.get('methods', {}) or ['the paper’s five methods'])}.")
    with st.expander("The tasks"):
        st.dataframe([{"task": t, "what it is": v.get("note", ""), "scored by": v.get("metric", "accuracy")}
                      for t, v in tasks.items()], hide_index=True)
elif row.get("description"):
    st.caption(row["description"])

h = cached(story.headline, store, study)
st.subheader("The headline")
for sentence in story.sentences(h):
    st.markdown(sentence)

if h.task is not None:
    c1, c2, c3 = st.columns(3)
    c1.metric(f"{h.task}: best loss over {len(h.methods)} methods", f"{h.best_loss:.1f} %",
              help="Eq. 1 merging loss of the task's best method; −30 % or worse under every method = collapse")
    if h.mds_rank is not None:
        c2.metric("its MDS (hidden states only)", f"{h.mds:.2f}", f"rank {h.mds_rank} of {len(h.tasks)}",
                  delta_color="off", help="Merging Difficulty Score, Eq. 3; higher = harder to merge")
    if h.swap is not None:
        c3.metric(f"group's worst loss after swapping in {h.swap.added}", f"{h.swap.worst_after:.1f} %",
                  f"{h.swap.worst_after - h.swap.worst_before:+.1f} points", help="verified by merging")
    if h.swap is not None:
        table = cached(results.swap_table, store, study, h.group)
        chart(figures.swap_comparison(table, title=f"Before and after the swap — {h.group}"), "overview_swap")
        st.caption(story.chart_note("swap", table=table))
    else:
        sub = cached(results.loss_table, store, study)
        sub = sub[sub["group_name"] == h.group]
        chart(figures.loss_bars(sub, title=f"Merging loss — {h.group}", highlight=h.task), "overview_loss")
        st.caption(story.chart_note("loss_bars", losses=sub))

st.subheader("Where to look next")
c1, c2, c3, c4 = st.columns(4)
c1.page_link("pages/merge_loss.py", label="Merge loss: every task × method", icon=":material/bar_chart:")
c2.page_link("pages/similarity.py", label="Similarity: HiddenSim and MDS", icon=":material/grid_on:")
c3.page_link("pages/statistics.py", label="Statistics: what predicts collapse", icon=":material/functions:")
c4.page_link("pages/task_swap.py", label="Task swap: what if?", icon=":material/swap_horiz:")

with st.expander("Glossary"):
    for term, meaning in story.GLOSSARY.items():
        st.markdown(f"**{term}** — {meaning}")
