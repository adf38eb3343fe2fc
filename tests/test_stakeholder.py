"""A stakeholder's two minutes are true (issue 22): the story, the swap advisor and the report say
what the study's own statistics show, whichever way they point — checked in AppTest on bundled and
made-up studies (the browser walk is in test_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from mergelab.analysis import protocol, story, views
from mergelab.storage import jobs
from mergelab.study.bundled import open_store
from mergelab.ui.widgets import PAGE_FAILED
from mergelab.viz.report import build_report

import degenerate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def app(db_path, monkeypatch):
    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")

    def make(page: str | None = None, study: str = "demo"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
        at.query_params["study"] = study
        at.run()
        if page:
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
        assert not any(PAGE_FAILED in e.value for e in at.error), [e.value for e in at.error]
        return at

    return make


def _text(at) -> str:
    return " ".join(
        str(e.value)
        for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success, *at.title, *at.subheader]
    )


def _rendered(markdown: str) -> str:
    return MarkdownIt().render(markdown)


# --- 1. the story follows the evidence ------------------------------------------------------------------
def test_the_overview_states_the_claim_and_this_studys_verdict(app, db_path):
    store = open_store(db_path)
    tasks = list("abcdefgh")
    quality = {t: 0.3 + 0.06 * i for i, t in enumerate(tasks)}  # higher MDS merged better: against the paper
    degenerate.records_study(
        store,
        "against",
        {"g": tasks},
        merged_p=lambda g, m, t: quality[t],
        n_rows=300,
        mds={"g": {t: 1.0 + i for i, t in enumerate(tasks)}},
    )
    text = _text(app("overview", "against"))
    assert "claims" in text and "The paper's claim on this study: contradicts" in text
    assert "predicts which task — before any merge is run — while" in text  # the paper's claim, said as a claim
    demo = _text(app("overview", "demo"))
    t5 = protocol.table5(store, "demo")
    assert "The paper's claim on this study: cannot tell" in demo and f"{t5.iloc[0]['p_expected']:.3g}" in demo
    assert "The paper's claim on this study: supports" in _text(app("overview", "paper"))


def test_the_verdict_of_overlapping_groups_reads_each_alone(db_path):
    store = open_store(db_path)
    h = story.headline(store, "llm13")
    t5 = protocol.table5(store, "llm13")
    assert "share tasks" in h.verdict_detail
    for g, r in zip(t5["group"][:3], t5["r"][:3]):
        assert f"{g} {r:+.2f}".replace("-", "−") in h.verdict_detail
    if h.mds_rank != 1:  # the collapsing task was not MDS's first pick: said, not hidden behind a rank
        assert "MDS did not flag it" in " ".join(story.sentences(h))


# --- 2. words from signs and intervals ------------------------------------------------------------------
def test_a_swap_within_noise_is_told_as_such_and_not_coloured(app, db_path):
    store = open_store(db_path)
    effect = protocol.swap_effects(store, "demo").iloc[0]
    assert effect["change_ci_low"] <= 0 <= effect["change_ci_high"]  # the demo's shipped swap: within noise
    at = app("overview", "demo")
    text = _text(at)
    assert "moved within noise" in text and "rose (better)" not in text and "lifts" not in text
    badge = next(m for m in at.metric if "after swapping in" in m.label)
    assert "within noise" in badge.delta and badge.proto.color == 2  # MetricColor.GRAY: no green for noise


# --- 3. a swap advisor worth following --------------------------------------------------------------------
def test_the_advisor_says_when_no_candidate_helps_and_flags_collapses_elsewhere(app, db_path):
    store = open_store(db_path)
    advice = protocol.swap_advice(store, "llm13", "r1")
    assert list(advice["change"]) == pytest.approx(list(advice["new_worst_mds"] - advice.attrs["current_worst_mds"]))
    assert (advice["improves"] == (advice["change"] < 0)).all()
    collapsed_any = views.best_loss(views.loss_table(store, "llm13"), "r2")
    at = app("task_swap", "llm13")
    text = _text(at)
    group = story.story_group(store, "llm13")
    assert at.selectbox(key="swap_group:llm13").value == group  # it opens on the story's group
    shown = protocol.swap_advice(store, "llm13", group)
    if not shown.attrs["any_improves"]:
        assert "No candidate improves" in text
    risky = shown[shown["collapsed_in"] != ""]
    for r in risky.itertuples():
        assert f"{r.candidate} (in {r.collapsed_in})" in text
    assert len(collapsed_any)


def test_the_advisor_on_a_two_task_group_says_why_it_cannot(app, db_path):
    degenerate.make(open_store(db_path), "two", groups={"g": ["a", "b"]}, pool=["c"])
    assert "need at least 3" in _text(app("task_swap", "two"))


def test_the_swap_record_counts_outcomes(db_path):
    store = open_store(db_path)
    record = protocol.swap_record(store, "demo")
    assert record["verified"] == 1 and record["within_noise"] == 1
    assert "1 moved it within noise" in story.swap_record_sentence(record)


# --- 4, 5, 6: one group in focus, charts and captions that match the text ------------------------------------
def test_a_task_that_did_not_collapse_is_not_labelled_collapsing(app, db_path):
    store = open_store(db_path)
    degenerate.records_study(store, "fine", {"g": list("abcd")}, merged_p=lambda g, m, t: 0.75)  # losses ≈ −6 %
    at = app("overview", "fine")
    chart = at.get("plotly_chart")[0]
    assert ": collapses" not in chart.proto.spec and "no task collapses" in _text(at)


@pytest.mark.parametrize(
    "page,key",
    [
        ("merge_loss", "loss_group"),
        ("similarity", "sim_group"),
        ("statistics", "stats_group"),
        ("theory", "theory_group"),
    ],
)
def test_every_page_opens_on_the_storys_group(app, db_path, page, key):
    store = open_store(db_path)
    group = story.story_group(store, "llm13")
    assert group == story.headline(store, "llm13").group
    at = app(page, "llm13")
    assert at.selectbox(key=f"{key}:llm13").value == group


def test_the_similarity_caption_names_the_task_that_collapsed(app, db_path):
    store = open_store(db_path)
    task, _, collapsed = story.worst_task(store, "demo", "default")
    text = _text(app("similarity", "demo"))
    assert f"In the merges, {task} {'collapsed' if collapsed else 'merged worst'}" in text


def test_the_overview_shows_the_description_base_scores_and_noisy_tasks(app, db_path):
    store = open_store(db_path)
    at = app("overview", "llm13")
    assert any(store.study("llm13")["description"][:60] in c.value for c in at.caption)
    table = next(df.value for df in at.dataframe if "base_score" in df.value.columns)
    evidence = protocol.expert_evidence(store, "llm13").set_index("task")
    assert table.set_index("task")["base_score"].to_dict() == pytest.approx(evidence["base_score"].to_dict())
    noisy = evidence[evidence["points_per_row"] > 2].index
    assert all(t in _text(at) for t in noisy)
    merge_text = _text(app("merge_loss", "llm13"))
    assert "head" not in merge_text.lower()  # no encoder-head caption on a causal study


# --- 7. the report is the whole story ------------------------------------------------------------------------
def test_the_report_holds_the_statistics_and_the_story(db_path):
    store = open_store(db_path)
    html = build_report(store, "llm13")
    for part in (
        "Does MDS predict the best merging loss? (Table 5)",
        "Pairwise merges (Table 4)",
        "Method vs task (Table 3)",
        "Which signal predicts collapse?",
        "Swaps, verified by merging",
        "Experts and the untrained base",
        "claim on this study",
    ):
        assert part in html, part
    assert html.count("js-plotly-plot") + html.count("plotly-graph-div") >= 5


# --- 8. register switches the study ----------------------------------------------------------------------------
def test_register_switches_the_sidebar_and_the_run_page(app, db_path):
    at = app("study", "demo")
    at.text_input(key="study_name").input("demo-copy").run()
    at.button(key="study_register").click().run()
    assert at.sidebar.selectbox(key="study_select").value == "demo-copy"
    assert at.session_state["study_id"] == "demo-copy"
    at.switch_page("pages/run.py").run()
    assert not at.exception
    counts = jobs.status_counts(open_store(db_path), "demo-copy")
    assert any(f"{counts.get('done', 0)} / " in str(p.proto) for p in at.get("progress"))


# --- 9-12: the Study form and the URL ------------------------------------------------------------------------------
def test_a_two_task_group_is_flagged_on_the_study_page(app):
    at = app("study", "demo")
    at.text_area(key="study_groups").input("g: wn_pos, num_parity").run()
    assert any("fewer than 3 tasks" in w.value for w in at.warning)


def test_a_validation_message_keeps_its_underscores(app):
    at = app("study", "demo")
    at.text_input(key="study_name").input("_x").run()
    message = next(e.value for e in at.error if "study name" in e.value)
    assert "'_x' is not allowed" in _rendered(message).replace("&#x27;", "'")


@pytest.mark.parametrize(
    "field,value,words",
    [("study_k", 100000, "hidden.k"), ("study_seed", 99999999999, "seed"), ("study_batch", 100000, "batch_size")],
)
def test_out_of_range_numbers_are_errors_not_ignored(app, field, value, words):
    at = app("study", "demo")
    at.number_input(key=field).set_value(value).run()
    assert at.number_input(key=field).value == value
    assert any(words in _rendered(e.value) for e in at.error), [e.value for e in at.error]
    assert at.button(key="study_register").disabled


def test_an_unknown_study_in_the_url_is_said(app):
    at = app(None, "nope")
    assert any("There is no study 'nope'" in w.value for w in at.sidebar.warning)
    assert at.session_state["study_id"] in ("llm", "llm13")


def test_a_registered_study_without_results_shows_no_none(app, db_path):
    store = open_store(db_path)
    spec = yaml.safe_load((ROOT / "data" / "demo" / "study.yaml").read_text())
    spec["name"] = "fresh"
    for field in ("adapters",):
        spec[field] = {t: str(ROOT / "data" / "demo" / a) for t, a in spec[field].items()}
    for t in spec["tasks"].values():
        t["data"] = str(ROOT / "data" / "demo" / t["data"])
    from mergelab.study import planner
    from mergelab.study.spec import parse_spec

    planner.prepare_spec(store, parse_spec(spec), grants=None)
    for page in ("overview", "statistics", "merge_loss"):
        text = _text(app(page, "fresh"))
        assert "None" not in text and "0 of 0" not in text, (page, text[:500])


# --- 13. the Run page ---------------------------------------------------------------------------------------------
