"""Small Streamlit helpers shared by pages: figure export, study guards."""

from __future__ import annotations

import shutil

import plotly.graph_objects as go
import streamlit as st


def chart(fig: go.Figure, key: str) -> None:
    """Draw a figure with download buttons: PNG (kaleido, when Chromium is present) and HTML."""
    st.plotly_chart(fig, width="stretch", key=f"chart_{key}")
    cols = st.columns([1, 1, 6])
    cols[0].download_button("HTML", fig.to_html(include_plotlyjs="cdn"), file_name=f"{key}.html",
                            mime="text/html", key=f"html_{key}")
    if shutil.which("chromium"):
        if cols[1].button("PNG", key=f"png_btn_{key}"):
            try:
                st.session_state[f"png_{key}"] = fig.to_image(format="png", scale=2)
            except Exception as exc:  # kaleido/Chromium trouble: say so, keep HTML export
                st.warning(f"PNG export failed ({exc}); use the HTML export.")
        if st.session_state.get(f"png_{key}"):
            cols[1].download_button("save PNG", st.session_state[f"png_{key}"], file_name=f"{key}.png",
                                    mime="image/png", key=f"png_dl_{key}")


def need_study(study_id: str | None) -> str:
    if not study_id:
        st.info("Pick a study in the sidebar.")
        st.stop()
    return study_id
