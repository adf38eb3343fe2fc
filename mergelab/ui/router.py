"""The dashboard's router: the page menu, the one shared sidebar (study picker) and a guard that
turns an unexpected error on any page into a short message with the details one click away.
``app.py`` calls :func:`run`; so does a page that Streamlit ran on its own (see :func:`page_start`)."""

from __future__ import annotations

import streamlit as st

from .state import study_picker
from .widgets import page_failed

MENU = {
    "Story": [("overview", "Overview", ":material/home:"), ("paper", "Paper", ":material/article:")],
    "Explore": [
        ("merge_loss", "Merge loss", ":material/bar_chart:"),
        ("similarity", "Similarity", ":material/grid_on:"),
        ("statistics", "Statistics", ":material/functions:"),
        ("task_swap", "Task swap", ":material/swap_horiz:"),
        ("theory", "Theory", ":material/straighten:"),
    ],
    "Work": [
        ("study", "Study", ":material/edit_note:"),
        ("run", "Run", ":material/play_arrow:"),
        ("export", "Export", ":material/download:"),
    ],
}


def run() -> None:
    st.set_page_config(page_title="MergeLab", page_icon=":material/science:", layout="wide")
    pages = {
        section: [
            st.Page(
                f"pages/{name}.py",
                title=title,
                icon=icon,
                default=name == "overview",
                url_path="home" if name == "overview" else None,  # served at /; its own path below
            )
            for name, title, icon in items
        ]
        for section, items in MENU.items()
    }
    # The default page is served at "/" only; /overview (a link someone shares, a bookmark) is the
    # same page under its own name, kept out of the menu.
    pages["Story"].append(st.Page("pages/overview.py", title="Overview", url_path="overview", visibility="hidden"))
    nav = st.navigation(pages)
    st.sidebar.title("MergeLab")
    study_picker()
    try:
        nav.run()
    except Exception as exc:  # st.stop() / st.rerun() are not Exceptions: they pass through
        page_failed(exc)


def page_start() -> None:
    """The first call of every page. Until some run of app.py has called ``st.navigation``,
    Streamlit (1.67) treats the ``pages/`` folder as an old-style multipage app: the first visitor
    of a fresh server who opens a deep link (``/similarity?study=demo``) gets that page run on its
    own — no sidebar, no study picked, no error guard, file names as the menu (and AppTest runs
    every switched-to page that way). A page run like that turns the old mode off and runs the
    router here, in the same script run (a rerun would drop the click that started it), which
    runs this same page again, then stops."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        run()
        st.stop()
