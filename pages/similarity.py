"""Similarity page: HiddenSim heatmap (Eq. 2) and MDS table (Eq. 3) with ablation controls."""

import numpy as np
import streamlit as st

from mergelab import choices
from mergelab.analysis import story, views
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store, group_picker
from mergelab.ui.widgets import chart, need_study, show_table, task_notes
from mergelab.viz import figures

page_start()  # through app.py's router, also when opened by a deep link
st.title("Hidden-state similarity")
st.caption(
    "HiddenSim (Eq. 2): how alike two experts' hidden states are on the same inputs, rescaled to [0, 1] "
    "within the group. MDS (Eq. 3): 1 / a task's mean HiddenSim to the others — higher = harder to merge."
)
store = get_store()
study = need_study(current_study())
groups = store.groups(study, role=("group", "swap"))
if not groups:
    st.info("This study has no task groups.")
    st.stop()
names = list(groups)
group = group_picker("Task group", store, study, names, key="sim_group")
tasks = groups[group]
if not views.has_states(store, study, tasks):
    st.info("No stored hidden states for this group (the paper publishes MDS only). Published MDS:")
    mds = views.mds_table(store, study, group)
    show_table(mds.style.highlight_max(subset=["mds"], color="#f8c4c4").format({"mds": "{:.2f}"}, na_rep="—"))
    st.stop()

settings = views.hidden_settings(store, study)
c1, c2, c3, c4 = st.columns(4)
info = cached(views.states_info, store, study, tasks[0])
layers = info["layers"]
owners = info["probe_tasks"]
wanted = settings.get("layer", -1)
wanted = info["n_layers"] + wanted if wanted < 0 else wanted


def _layer_name(i: int) -> str:
    return "embeddings" if i == 0 else f"layer {i}" + (" (last)" if i == info["n_layers"] - 1 else "")


layer = c1.selectbox(
    "Layer",
    layers,
    index=layers.index(wanted) if wanted in layers else len(layers) - 1,
    key="sim_layer",
    format_func=_layer_name,
)
POOLINGS, DISTANCES = list(choices.POOLINGS), list(choices.DISTANCES)
pooling = c2.selectbox("Pooling", POOLINGS, index=POOLINGS.index(settings.get("pooling", "mean")), key="sim_pooling")
distance = c3.selectbox(
    "Distance",
    DISTANCES,
    index=DISTANCES.index(settings.get("distance", "l2")),
    key="sim_distance",
    help="l2: mean Euclidean distance per probe; cosine: mean 1 − cos; "
    "cka: 1 − linear CKA of the probes × dim matrices",
)
k_max = min(owners.count(t) for t in tasks)
k = c4.slider("Probes per task (k)", 1, k_max, k_max, key="sim_k")
ordered = st.checkbox("Cluster order (by mean similarity)", key="sim_cluster")
kw = dict(layer=layer, pooling=pooling, distance=distance, k=k)
sim = cached(views.similarity, store, study, tasks, **kw)
if sim.attrs.get("undefined"):
    why = (
        " At the embeddings every expert is the same: adapters on attention layers do not change them."
        if layer == 0
        else ""
    )
    st.warning(f"HiddenSim is {sim.attrs['undefined']}; the heatmap shows only the diagonal.{why}")
order = list(sim.index[np.argsort(-np.nan_to_num(sim.to_numpy()).sum(1))]) if ordered else None
title = f"HiddenSim — {group} ({distance}, {pooling}, {_layer_name(layer)}, k={k})"
chart(figures.hiddensim_heatmap(sim, title=title, order=order), "hiddensim")
st.caption(story.chart_note("hiddensim", sim=sim, worst=cached(story.worst_task, store, study, group)))

st.subheader("Merging Difficulty Score (higher = harder to merge)")
n_boot = st.select_slider("Bootstrap resamples for CIs (over probes)", [0, 50, 200, 500], value=200, key="sim_boot")
with st.spinner(f"MDS with {n_boot} bootstrap resamples…"):
    mds = cached(views.mds_table, store, study, group, n_boot=n_boot, **kw)
mds = mds.sort_values("mds", ascending=False).reset_index(drop=True)
notes = task_notes(store, study)
mds.insert(1, "what it is", [notes.get(t, "") for t in mds["task"]])
fmt = {c: "{:.2f}" for c in mds.columns if c in ("mds", "ci_low", "ci_high")}
show_table(mds.style.highlight_max(subset=["mds"], color="#f8c4c4").format(fmt, na_rep="undefined"))
if mds["mds"].notna().any():
    st.caption(
        f"Hardest to merge by MDS: **{mds.iloc[0]['task']}** (MDS {mds.iloc[0]['mds']:.2f}). Distances are "
        f"averaged per probe; Eq. 2 rescales them to [0, 1] by min–max over the group's pairs. With {k} "
        "probes per task the CIs are wide: read ranks, not decimals."
    )
else:
    st.caption(f"MDS is {mds['note'].iloc[0] if 'note' in mds else 'undefined'}.")
