"""MergeLab dashboard: router, the one shared sidebar (study picker), and a guard that turns an
unexpected error on any page into a short message with the details one click away."""

import streamlit as st

from mergelab.ui.state import study_picker
from mergelab.ui.widgets import page_failed

st.set_page_config(page_title="MergeLab", page_icon=":material/science:", layout="wide")

pages = {
    "Story": [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/paper.py", title="Paper", icon=":material/article:"),
    ],
    "Explore": [
        st.Page("pages/merge_loss.py", title="Merge loss", icon=":material/bar_chart:"),
        st.Page("pages/similarity.py", title="Similarity", icon=":material/grid_on:"),
        st.Page("pages/statistics.py", title="Statistics", icon=":material/functions:"),
        st.Page("pages/task_swap.py", title="Task swap", icon=":material/swap_horiz:"),
        st.Page("pages/theory.py", title="Theory", icon=":material/straighten:"),
    ],
    "Work": [
        st.Page("pages/study.py", title="Study", icon=":material/edit_note:"),
        st.Page("pages/run.py", title="Run", icon=":material/play_arrow:"),
        st.Page("pages/export.py", title="Export", icon=":material/download:"),
    ],
}
nav = st.navigation(pages)
st.sidebar.title("MergeLab")
study_picker()
try:
    nav.run()
except Exception as exc:  # st.stop() / st.rerun() are not Exceptions: they pass through
    page_failed(exc)
