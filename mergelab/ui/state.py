"""Shared Streamlit state: the cached store and the study picked in the sidebar."""

from __future__ import annotations

import streamlit as st

from mergelab.config import default_db_path
from mergelab.storage.errors import StoreError
from mergelab.storage.store import Store
from mergelab.study.bundled import open_store


@st.cache_resource
def _store(path: str) -> Store:
    return open_store(path)


def get_store() -> Store:
    """The store named by $MERGELAB_DB (or the default), opened once per path."""
    return _store(str(default_db_path()))


def study_picker() -> str | None:
    """Sidebar study picker; the choice survives a page reload through the URL."""
    try:
        store = get_store()
    except StoreError as exc:
        st.sidebar.error(str(exc))
        return None
    studies = store.studies()
    if studies.empty:
        st.sidebar.info("No studies in the store yet.")
        return None
    ids = list(studies["id"])
    labels = dict(zip(studies["id"], studies["name"]))
    fallback = next((s for s in ("llm", "llm13", "demo") if s in ids), ids[0])
    # The picker's value is set through its session-state key *before* it is drawn: passing an index
    # to an existing widget does not move it in the browser (its own state wins there).
    switch = st.session_state.pop("switch_to_study", None)  # a page registered or deleted a study
    asked = st.query_params.get("study")
    if switch is not None:
        st.session_state["study_select"] = switch if switch in ids else fallback
    elif asked is not None and asked != st.session_state.get("study_id"):  # a link or a reload asks for one
        if asked in ids:
            st.session_state["study_select"] = asked
        else:
            st.sidebar.warning(f"There is no study {asked!r} in this store; showing {labels[fallback]!r}.")
            st.session_state["study_select"] = fallback
    if st.session_state.get("study_select") not in ids:  # first visit, or a study deleted elsewhere
        st.session_state["study_select"] = (
            st.session_state.get("study_id") if st.session_state.get("study_id") in ids else fallback
        )
    choice = st.sidebar.selectbox("Study", ids, format_func=labels.get, key="study_select")
    st.session_state["study_id"] = choice
    st.query_params["study"] = choice
    kind = studies.set_index("id").loc[choice, "kind"]
    st.sidebar.caption(f"kind: {kind} · store: `{store.path}`")
    return choice


def current_study() -> str | None:
    """The sidebar's study; None when there is none or it has been deleted since (in another tab)."""
    study = st.session_state.get("study_id")
    return study if study and get_store().has_study(study) else None


def switch_study(study_id: str | None) -> None:
    """Make the sidebar show ``study_id`` (or the default study) from the next run on, and rerun."""
    st.session_state["switch_to_study"] = study_id or ""
    st.rerun()


def focus_group(store: Store, study_id: str, names: list[str]) -> str:
    """The group a page opens on: the last one the user picked on any page for this study, else the
    one the story is about (the Overview's), when listed."""
    from mergelab.analysis.story import story_group
    from mergelab.ui.cache import cached

    chosen = st.session_state.get("focus_groups", {}).get(study_id)
    if chosen in names:
        return chosen
    group = cached(story_group, store, study_id)
    return group if group in names else names[0]


def group_picker(label: str, store: Store, study_id: str, names: list[str], key: str) -> str:
    """A page's group selectbox: opens on :func:`focus_group` and remembers the choice for every page
    (Streamlit forgets a widget's value when its page is left; the focus is kept per study)."""
    widget = f"{key}:{study_id}"
    if st.session_state.get(widget) not in names:
        st.session_state[widget] = focus_group(store, study_id, names)
    choice = st.selectbox(label, names, key=widget)
    st.session_state.setdefault("focus_groups", {})[study_id] = choice
    return choice
