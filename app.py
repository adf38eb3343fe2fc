"""MergeLab dashboard: router plus the one shared sidebar (study picker)."""

import streamlit as st

from mergelab.ui.state import study_picker

st.set_page_config(page_title="MergeLab", page_icon=":material/science:", layout="wide")

pages = {
    "Explore": [
        st.Page("pages/similarity.py", title="Similarity", icon=":material/grid_on:", default=True),
        st.Page("pages/merge_loss.py", title="Merge loss", icon=":material/bar_chart:"),
        st.Page("pages/statistics.py", title="Statistics", icon=":material/functions:"),
        st.Page("pages/task_swap.py", title="Task swap", icon=":material/swap_horiz:"),
        st.Page("pages/theory.py", title="Theory", icon=":material/straighten:"),
    ],
    "Work": [
        st.Page("pages/study.py", title="Study", icon=":material/edit_note:"),
        st.Page("pages/run.py", title="Run", icon=":material/play_arrow:"),
        st.Page("pages/export.py", title="Export", icon=":material/download:"),
    ],
    "Reference": [st.Page("pages/paper.py", title="Paper", icon=":material/article:")],
}
nav = st.navigation(pages)
st.sidebar.title("MergeLab")
study_picker()
nav.run()
