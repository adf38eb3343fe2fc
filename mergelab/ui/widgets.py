"""Small Streamlit helpers shared by pages: figure export, study guards."""

from __future__ import annotations

import shutil

import plotly.graph_objects as go
import streamlit as st


def chart(fig: go.Figure, key: str) -> None:
    """Draw a figure with download buttons: PNG (kaleido, when Chromium is present) and HTML."""
    st.plotly_chart(fig, width="stretch", key=f"chart_{key}")
    cols = st.columns([1, 1, 6])
    cols[0].download_button("HTML", _offline_html(fig), file_name=f"{key}.html", mime="text/html", key=f"html_{key}")
    if shutil.which("chromium"):
        if cols[1].button("PNG", key=f"png_btn_{key}"):
            try:
                st.session_state[f"png_{key}"] = fig.to_image(format="png", scale=2)
            except Exception as exc:  # kaleido/Chromium trouble: say so, keep HTML export
                st.warning(f"PNG export failed ({exc}); use the HTML export.")
        if st.session_state.get(f"png_{key}"):
            cols[1].download_button(
                "save PNG",
                st.session_state[f"png_{key}"],
                file_name=f"{key}.png",
                mime="image/png",
                key=f"png_dl_{key}",
            )


@st.cache_data(show_spinner=False, max_entries=256)
def _html(fig_json: str) -> str:
    import plotly.io as pio

    return pio.from_json(fig_json).to_html(include_plotlyjs=True)  # plotly.js inline: works offline


def _offline_html(fig: go.Figure) -> str:
    return _html(fig.to_json())


# Column names as words, for every table a page shows (names not listed are shown as they are).
WORDS = {
    "worst_loss": "worst merging loss (%)",
    "best_loss": "best merging loss (%)",
    "loss": "merging loss (%)",
    "mds": "MDS",
    "worst_mds": "worst MDS",
    "new_worst_mds": "worst MDS after the swap",
    "worst_task": "worst task after the swap",
    "candidate_mds": "candidate's own MDS",
    "candidate": "candidate",
    "merged_tasks": "tasks merged",
    "tasks": "tasks in group",
    "collapsed_under_all": "collapses under every method",
    "ci_low": "95 % CI low",
    "ci_high": "95 % CI high",
    "r": "Pearson r",
    "p_value": "p",
    "n": "n (rows)",
    "p_paper": "p (paper)",
    "p_recomputed": "p (recomputed)",
    "p_published": "p (published)",
    "p_published_glue": "p (published, GLUE)",
    "expert_score": "expert score",
    "score": "merged score",
    "age_s": "seconds since update",
    "attempts": "attempts",
    "hiddensim": "HiddenSim",
    "p_expected": "one-sided p (expected direction)",
    "p_two_sided": "two-sided p",
    "direction": "direction",
    "reliability": "reliability",
    "detectable_r": "detectable |r| (80 % power)",
    "rows_needed": "eval rows for reliability 0.8",
    "se": "standard error",
    "boot_mean": "mean over resamples",
    "best_method": "best method",
    "worst_method": "worst method",
    "change": "change (points)",
    "change_ci_low": "change 95 % low",
    "change_ci_high": "change 95 % high",
    "within_noise": "within noise",
    "worst_before": "worst loss before (%)",
    "worst_after": "worst loss after (%)",
    "worst_task_before": "worst task before",
    "worst_task_after": "worst task after",
    "worst_mds_before": "worst MDS before",
    "worst_mds_after": "worst MDS after",
    "predicted_mds_change": "predicted change of worst MDS",
    "improves": "lowers the worst MDS",
    "null_q95": "permutation null (95th pct |r|)",
    "familywise_q95": "family-wise bar",
    "beats_null": "beats its null",
    "beats_familywise": "beats the family-wise bar",
    "groups_expected": "disjoint groups, expected sign",
    "groups_tested": "disjoint groups read",
    "combined_r": "combined r (disjoint groups)",
    "combined_p": "combined one-sided p",
    "levels": "levels",
    "ci_note": "why no interval",
    "note": "note",
    "expected": "what the predictor claims",
}


def show_table(data, **kwargs) -> None:
    """st.dataframe with column names in words (WORDS) and no index; ``data`` may be a Styler."""
    frame = getattr(data, "data", data)
    config = {c: WORDS[c] for c in getattr(frame, "columns", []) if c in WORDS}
    config.update(kwargs.pop("column_config", {}) or {})
    st.dataframe(data, hide_index=True, column_config=config, **kwargs)


def md_escape(text: str) -> str:
    """``text`` shown literally where Streamlit renders Markdown (an error naming '_x' keeps its
    underscore instead of turning the rest into italics)."""
    import re

    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


def need_study(study_id: str | None) -> str:
    if not study_id:
        st.info("Pick a study in the sidebar.")
        st.stop()
    return study_id


def task_notes(store, study_id: str) -> dict[str, str]:
    """task → its human-readable note from the study's spec (for tooltips and 'what it is' columns)."""
    from mergelab.analysis.views import spec_dict

    return {t: v.get("note", "") for t, v in (spec_dict(store, study_id).get("tasks") or {}).items()}


PAGE_FAILED = "This page could not finish"


def page_failed(exc: Exception) -> None:
    """What a page shows instead of a traceback: one short line, the details one click away."""
    import traceback

    st.error(
        f"{PAGE_FAILED}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}. Every stored result is "
        "safe; try another setting or study, and report this if it persists."
    )
    with st.expander("details"):
        st.code("".join(traceback.format_exception(exc)), language="text")


CLAIMS_TITLE = "The paper's claims, tested on this study"


def predictor_comparison(store, study_id: str):
    """The predictor comparison (cached), under the spinner its first computation needs."""
    from mergelab.analysis import predictors
    from mergelab.ui.cache import cached

    with st.spinner("Comparing every predictor (1,000 task resamples and 1,000 permutations each)…"):
        return cached(predictors.predictor_comparison, store, study_id)


def claims_tested(store, study_id: str, *, t5=None, comparison=None) -> None:
    """The preregistered tests (``analysis.hypotheses``) as one sentence each, with the caption
    saying how they are computed — for a study of its own with more than one evidence group (one
    group has nothing to combine; the paper's study holds only its printed tables). ``t5`` and
    ``comparison``: Table 5 and the predictor comparison when the page has them already."""
    from mergelab.analysis import grouping, hypotheses, paper, protocol
    from mergelab.ui.cache import cached

    if study_id == paper.STUDY_ID or len(grouping.evidence_groups(store, study_id)) < 2:
        return
    st.subheader(CLAIMS_TITLE)
    if comparison is None:
        comparison = predictor_comparison(store, study_id)
    t5 = t5 if t5 is not None else cached(protocol.table5, store, study_id)
    tests = cached(hypotheses.hypothesis_tests, store, study_id, t5=t5, comparison=comparison)
    for sentence in hypotheses.sentences(tests):
        st.markdown(sentence)
    st.caption(
        "H1 and H2: Pearson r per disjoint group, combined by Fisher's z, one-sided in the direction the "
        "claim states (a correlation the other way never counts as support). H2 claims a conflict metric "
        "does *not* predict the loss, so a metric that does makes it 'contradicted'. H3: the verified "
        "swap's change of the worst best-loss with its paired-bootstrap interval; one swap is one "
        "observation."
    )
