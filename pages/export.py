"""Export page: a one-file HTML report of the study, and its rows as CSV."""

import streamlit as st

from mergelab.analysis import protocol, views
from mergelab.storage.report_cache import cached_report
from mergelab.ui.cache import cached
from mergelab.ui.router import page_start
from mergelab.ui.state import current_study, get_store
from mergelab.ui.widgets import need_study
from mergelab.viz.report import build_report

page_start()  # through app.py's router, also when opened by a deep link
st.title("Export")
store = get_store()
study = need_study(current_study())
st.markdown(
    "Every chart has its own HTML / PNG download. Here: the whole study as one HTML file "
    "(figures are interactive, no server needed) and the raw rows."
)
report_key = f"report_html:{study}"  # one report per study: switching study never offers another's
if st.button("Build HTML report", key="export_build"):
    with st.spinner("Building the report…"):
        st.session_state[report_key] = cached_report(store, study, "html", lambda: build_report(store, study))[0]
if st.session_state.get(report_key):
    st.download_button(
        "Download report.html",
        st.session_state[report_key],
        file_name=f"{study}-report.html",
        mime="text/html",
        key="export_dl",
    )
st.download_button(
    "Merging losses with 95 % intervals (CSV)",
    cached(protocol.loss_intervals, store, study).to_csv(index=False),
    file_name=f"{study}-losses.csv",
    key="export_losses",
)
records = cached(views.row_records, store, study)
if len(records):
    st.download_button(
        f"Per-row records: {len(records):,} rows, one per eval row of every result (CSV)",
        records.to_csv(index=False),
        file_name=f"{study}-records.csv",
        key="export_records",
    )
else:
    st.caption("This study has no per-row records (computed before MergeLab kept them): recompute it to export them.")
if st.button("Build lm-evaluation-harness result files", key="export_lm_eval_build"):
    from mergelab.analysis.lm_eval_results import documents
    from mergelab.storage.lm_eval_files import lm_eval_zip

    with st.spinner("Writing one results file and its samples per model…"):
        st.session_state[f"lm_eval_zip:{study}"] = lm_eval_zip(documents(store, study))
if st.session_state.get(f"lm_eval_zip:{study}"):
    st.download_button(
        "Download lm-eval results (zip: <model>/results_<time>.json, samples_<task>_<time>.jsonl)",
        st.session_state[f"lm_eval_zip:{study}"],
        file_name=f"{study}-lm-eval.zip",
        mime="application/zip",
        key="export_lm_eval_dl",
    )
st.download_button(
    "Pair metrics (CSV)",
    store.pair_metrics(study).to_csv(index=False),
    file_name=f"{study}-pairs.csv",
    key="export_pairs",
)
