"""Theory page: Theorem 1's interval against each real merge's measured distortion."""

import streamlit as st

from mergelab.analysis import story, views
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store, group_picker
from mergelab.ui.widgets import chart, need_study, show_table
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("Theorem 1: is the merge where the theory says?")
st.markdown(r"""
With $d(i,j)^2 = \mathbb{E}_X\|h(X;\theta_i)-h(X;\theta_j)\|^2$ and $\Delta=\max_{i,j} d(i,j)$,
Theorem 1 says every merge has worst-case distortion $\delta_{\max}\ge\Delta^2/4$ and, under linear
mode connectivity, some convex merge reaches $\delta_{\max}\le\frac{d}{2(d+1)}\Delta^2$. Below,
$\delta_{\max}$ is **measured** on each real merge's hidden states over the group's probes.
A merge inside the interval behaves as LMC predicts; above it, the merge left the experts' hull.

Note: the proof's step $\Delta_x\le\Delta$ does not hold in general, so the per-input Jung
construction can exceed the paper's upper bound; `upper_per_input` = $\frac{d}{2(d+1)}\mathbb{E}_X\Delta_x^2$
is the bound that does hold for it.
""")
store = get_store()
study = need_study(current_study())
groups = list(store.groups(study, role=("group", "swap")))
if not groups:
    st.info("This study has no task groups.")
    st.stop()
group = group_picker("Task group", store, study, groups, key="theory_group")
settings = views.hidden_settings(store, study)
table = cached(
    views.theory, store, study, group, layer=settings.get("layer", -1), pooling=settings.get("pooling", "mean")
)
if table.empty:
    st.info(
        "No merged hidden states are stored for this group: the paper publishes none, and a live study "
        "stores them once its `mstates` units have run (Run page)."
    )
    st.stop()
chart(figures.theory_chart(table, title=f"Theorem 1 on {group}: measured distortion of each merge"), "theory")
st.caption(story.chart_note("theory", table=table))
fmt = {c: "{:.4g}" for c in ["delta", "lower", "upper", "upper_per_input", "jung_distortion", "delta_max"]}
show_table(table.style.format(fmt))
