"""Similarity page: HiddenSim heatmap (Eq. 2) and MDS table (Eq. 3) with ablation controls."""

import numpy as np
import streamlit as st

from mergelab.analysis import equations as analysis
from mergelab.analysis import views as results
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import chart, need_study
from mergelab.viz import figures

st.title("Hidden-state similarity")
store = get_store()
study = need_study(current_study())
groups = store.groups(study)
if not groups:
    st.info("This study has no task groups.")
    st.stop()
names = list(groups)
group = st.selectbox("Task group", names, key="sim_group")
tasks = groups[group]
if not results.has_states(store, study, tasks):
    st.info("No stored hidden states for this group (the paper publishes MDS only). Published MDS:")
    mds = results.mds_table(store, study, group)
    st.dataframe(mds.style.highlight_max(subset=["mds"], color="#f8c4c4").format({"mds": "{:.2f}"}),
                 hide_index=True)
    st.stop()

c1, c2, c3, c4 = st.columns(4)
info = results.states_info(store, study, tasks[0])
layers = info["layers"]
owners = info["probe_tasks"]


def _layer_name(i: int) -> str:
    return "embeddings" if i == 0 else f"layer {i}" + (" (last)" if i == info["n_layers"] - 1 else "")


layer = c1.selectbox("Layer", layers, index=len(layers) - 1, key="sim_layer", format_func=_layer_name)
pooling = c2.selectbox("Pooling", ["mean", "first", "last"], key="sim_pooling")
distance = c3.selectbox("Distance", ["l2", "cosine", "cka"], key="sim_distance")
k_max = min(owners.count(t) for t in tasks)
k = c4.slider("Probes per task (k)", 1, k_max, k_max, key="sim_k")
ordered = st.checkbox("Cluster order (by mean similarity)", key="sim_cluster")
try:
    sim = results.similarity(store, study, tasks, layer=layer, pooling=pooling, distance=distance, k=k)
except analysis.AnalysisError as exc:
    st.error(f"Cannot compute HiddenSim with these settings: {exc}")
    st.stop()
if sim.attrs.get("undefined"):
    st.warning(f"HiddenSim is {sim.attrs['undefined']}; the heatmap shows only the diagonal.")
order = list(sim.index[np.argsort(-np.nan_to_num(sim.to_numpy()).sum(1))]) if ordered else None
title = f"HiddenSim — {group} ({distance}, {pooling}, layer {layer}, k={k})"
chart(figures.hiddensim_heatmap(sim, title=title, order=order), "hiddensim")
st.subheader("Merging Difficulty Score (higher = harder to merge)")
n_boot = st.select_slider("Bootstrap resamples for CIs", [0, 50, 200, 500], value=200, key="sim_boot")
mds = results.mds_table(store, study, group, layer=layer, pooling=pooling, distance=distance, k=k,
                        n_boot=n_boot)
mds = mds.sort_values("mds", ascending=False).reset_index(drop=True)
fmt = {c: "{:.2f}" for c in mds.columns if c in ("mds", "ci_low", "ci_high")}
st.dataframe(mds.style.highlight_max(subset=["mds"], color="#f8c4c4").format(fmt, na_rep="undefined"),
             hide_index=True)
if mds["mds"].notna().any():
    st.caption(f"Worst: **{mds.iloc[0]['task']}** (MDS {mds.iloc[0]['mds']:.2f}). Distances are averaged per "
               "probe; Eq. 2 rescales them to [0, 1] by min–max over the group's pairs.")
else:
    st.caption(f"MDS is {mds['note'].iloc[0] if 'note' in mds else 'undefined'}.")
