"""MergeLab dashboard: router plus the one shared sidebar (study picker)."""

import streamlit as st

from mergelab.ui.state import study_picker

st.set_page_config(page_title="MergeLab", page_icon="🧪", layout="wide")

pages = [
    st.Page("pages/paper.py", title="Paper", icon="📄", default=True),
]
nav = st.navigation(pages)
st.sidebar.title("MergeLab")
study_picker()
nav.run()
