"""The dashboard a stakeholder understands: the Overview's story computed from rows, no traceback on
any page for any study a user can make, the Study and Run pages' fixes, charts on fixed scales."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from mergelab.analysis import story, views
from mergelab.storage import jobs
from mergelab.study.bundled import open_store
from mergelab.ui.widgets import PAGE_FAILED

import degenerate

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["overview", "paper", "merge_loss", "similarity", "statistics", "task_swap", "theory", "study", "run", "export"]


@pytest.fixture()
def app(db_path, monkeypatch):
    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")

    def make(page: str | None = None, study: str = "demo", **state):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.query_params["study"] = study
        for key, value in state.items():
            at.session_state[key] = value
        at.run()
        if page:
            at.switch_page(f"pages/{page}.py").run()
        return at

    return make


def _text(at) -> str:
    return " ".join(
        str(e.value)
        for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error, *at.success, *at.title, *at.subheader]
    )


def _no_failure(at):
    assert not at.exception, at.exception
    assert not any(PAGE_FAILED in e.value for e in at.error), [e.value for e in at.error]


# --- degenerate studies: no traceback, ever --------------------------------------------------------
def _degenerate(store) -> list[str]:
    made = [
        degenerate.pair_study(store),
        degenerate.zero_expert_study(store),
        degenerate.no_merged_rows_study(store),
        degenerate.make(store, "onepool", groups={"g": ["a", "b", "c"]}, pool=["d"]),
        degenerate.make(store, "nostates", groups={"g": ["a", "b", "c"]}, states=False),
        degenerate.make(store, "nomerges", groups={"g": ["a", "b", "c"]}, merged_tasks={"g": []}),
        degenerate.make(store, "failing2", groups={"g": ["a", "b"]}, failed_units=2),
    ]  # a group of 2, failed units
    store.upsert_study(
        "empty",
        "empty",
        "live",
        "registered, nothing run",
        yaml.safe_dump({"name": "empty", "base": "org/base", "adapters": {}, "tasks": {}, "groups": {}}),
    )
    return [*made, "empty"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_on_every_degenerate_study(app, db_path, page):
    """Every page on every study a user can make — the bundled ones too — runs through the router with
    a title, its sidebar on that study, and no failure."""
    studies = ["demo", "paper", *_degenerate(open_store(db_path))]
    for study in studies:
        at = app(page, study)
        _no_failure(at)
        assert at.title, (page, study)
        assert at.session_state["study_id"] == study, (page, study)


# --- the Overview: the story, computed -----------------------------------------------------------------
def test_overview_tells_the_demo_story_from_its_rows(app, db_path):
    at = app("overview", "demo")
    _no_failure(at)
    h = story.headline(open_store(db_path), "demo")
    assert h.task == "wn_pos" and h.collapsed and h.mds_rank == 1
    text = _text(at)
    assert "wn_pos" in text and "collapses" in text
    assert f"{h.best_loss:+.1f} %".replace("-", "−") in text  # the number on the page is the stored one
    metrics = {m.label: m.value for m in at.metric}
    assert any(v == f"{h.best_loss:.1f} %" for v in metrics.values()), metrics
    assert "not significant on 8 tasks" in text  # the demo's MDS-vs-loss p (> 0.05), said as it is


def test_overview_after_a_swap_says_what_it_fixed(app, db_path):
    from mergelab.study import executors, planner

    store = open_store(db_path)
    cands = views.swap_candidates(store, "demo", store.groups("demo")["default"], store.pool("demo"))
    added = cands.iloc[0]["candidate"]
    planner.add_swap(store, "demo", "default", "wn_pos", added)
    assert executors.run_worker(store, "demo")["failed"] == 0
    h = story.headline(store, "demo")
    assert h.swap is not None and h.swap.added == added and h.swap.worst_after > h.swap.worst_before
    at = app("overview", "demo")
    _no_failure(at)
    text = _text(at)
    assert f"Swapping **wn_pos** for **{added}**" in " ".join(m.value for m in at.markdown)
    assert f"{h.swap.worst_after:+.1f} %".replace("-", "−") in text


def test_overview_on_the_paper_tells_the_papers_story(app):
    at = app("overview", "paper")
    _no_failure(at)
    text = _text(at)
    assert "(a)" in text and "Table 6" in text


def _pick(at, study: str) -> None:
    """Choose ``study`` in the sidebar's picker, as a user does."""
    at.sidebar.selectbox(key="study_select").select(study).run()


def test_every_page_runs_through_the_router(app):
    """A page opened on its own (a deep link on a fresh server; AppTest's switch_page) still gets the
    sidebar, the study picker and the error guard of app.py — not Streamlit's old pages/ mode."""
    at = app("similarity", "demo")
    assert at.sidebar.selectbox(key="study_select").value == "demo"
    _pick(at, "llm13")
    assert at.session_state["study_id"] == "llm13" and at.title[0].value == "Hidden-state similarity"


# --- Export ----------------------------------------------------------------------------------------
def test_export_builds_the_papers_report_and_never_offers_another_studys(app):
    at = app("export", "paper")
    at.button(key="export_build").click().run()
    _no_failure(at)
    assert at.session_state["report_html:paper"].startswith("<!doctype html>")
    _pick(at, "demo")
    assert not any(b.key == "export_dl" for b in at.get("download_button"))


def test_export_offers_lm_eval_result_files(app):
    import io
    import zipfile

    at = app("export", "demo")
    at.button(key="export_lm_eval_build").click().run()
    _no_failure(at)
    names = zipfile.ZipFile(io.BytesIO(at.session_state["lm_eval_zip:demo"])).namelist()
    assert any(n.startswith("merged__default__TIES/results_") and n.endswith(".json") for n in names)
    assert any(n.startswith("expert__wn_pos/samples_wn_pos_") and n.endswith(".jsonl") for n in names)
    assert any(b.key == "export_lm_eval_dl" for b in at.get("download_button"))


def test_chart_html_works_offline():
    import pandas as pd

    from mergelab.ui.widgets import _offline_html
    from mergelab.viz import figures

    html = _offline_html(figures.loss_bars(pd.DataFrame({"task": ["a"], "method": ["LA"], "loss": [-3.0]})))
    # plotly.js itself is inline (its own code mentions cdn.plot.ly for optional map data; no
    # script tag loads anything from it)
    assert not re.search(r"<script[^>]*src=", html) and len(html) > 1_000_000
    assert "Plotly.newPlot" in html


# --- the Study page ---------------------------------------------------------------------------------
def _demo_draft(**change) -> dict:
    draft = yaml.safe_load((ROOT / "data" / "demo" / "study.yaml").read_text())
    draft["adapters"] = {t: str(ROOT / "data" / "demo" / a) for t, a in draft["adapters"].items()}
    for t in draft["tasks"].values():
        t["data"] = str(ROOT / "data" / "demo" / t["data"])
    draft.update(change)
    return draft


def test_study_import_applies_the_whole_yaml(app):
    draft = _demo_draft(name="imported", groups={"pair": ["wn_pos", "num_parity"]}, pool=["vowel_start"])
    at = app("study", "demo")
    assert at.text_input(key="study_name").value == "demo"
    at.session_state["study_import"] = ("file-1", "imported.yaml", yaml.safe_dump(draft).encode())  # an upload
    at.run()
    _no_failure(at)
    assert at.text_input(key="study_name").value == "imported"
    assert at.text_area(key="study_groups").value == "pair: wn_pos, num_parity"
    assert at.text_input(key="study_pool").value == "vowel_start"


def test_a_blank_study_form_is_invalid_and_says_why(app, db_path):
    store = open_store(db_path)
    store.upsert_study("blank", "blank", "live", "", "")
    at = app("study", "blank")
    _no_failure(at)
    assert not any("Spec is valid" in s.value for s in at.success)
    errors = " ".join(e.value for e in at.error)
    assert "give a base model" in errors and "at least two tasks" in errors and "at least one group" in errors
    assert at.button(key="study_register").disabled


def test_a_group_line_without_a_colon_is_an_error_and_swap_groups_survive_a_save(app):
    at = app("study", "demo")
    at.text_area(key="study_groups").input("default: wn_pos, num_parity\nwn_pos num_parity").run()
    assert any("has no ':'" in e.value for e in at.error)
    text = "swap:default:wn_pos->vader_intensity: vader_intensity, num_parity, vowel_start"
    at.text_area(key="study_groups").input(text).run()
    _no_failure(at)
    resolved = next(c.value for c in at.code if "batch_size" in c.value)
    assert "swap:default:wn_pos->vader_intensity:" in resolved and "- vader_intensity" in resolved


def test_the_study_page_follows_the_sidebar_and_register_switches_it(app, db_path):
    at = app("study", "demo")
    assert at.text_input(key="study_name").value == "demo"
    _pick(at, "paper")
    _no_failure(at)
    assert at.text_input(key="study_name").value == "my-study"  # the paper has no spec: a fresh form
    _pick(at, "demo")
    at.text_input(key="study_name").input("demo-copy").run()
    at.button(key="study_register").click().run()
    _no_failure(at)
    assert at.sidebar.selectbox(key="study_select").value == "demo-copy"
    assert at.text_input(key="study_name").value == "demo-copy"
    assert open_store(db_path).has_study("demo-copy")
    # and delete it again, with a confirmation
    at.checkbox(key="study_delete_confirm").check().run()
    at.button(key="study_delete").click().run()
    _no_failure(at)
    assert not open_store(db_path).has_study("demo-copy")
    assert at.sidebar.selectbox(key="study_select").value in ("llm", "llm13", "demo")


# --- the Run page ---------------------------------------------------------------------------------------
def test_at_most_one_dashboard_worker_per_store(db_path, monkeypatch, tmp_path):
    from mergelab.study import executors, planner

    from tinymodels import make_tiny_causal_study

    monkeypatch.delenv("MERGELAB_NO_AUTOSTART", raising=False)
    store = open_store(db_path)
    planner.prepare(store, make_tiny_causal_study(tmp_path))
    held = jobs.dashboard_lock(store)
    assert held is not None
    assert executors.ensure_worker(store, "tiny-causal") is None  # "running" (we hold its lock)
    held.close()
    first = executors.ensure_worker(store, "tiny-causal")
    assert first is not None
    import time

    deadline = time.time() + 60
    while time.time() < deadline and jobs.dashboard_lock(store) is not None:  # until the worker holds it
        time.sleep(0.1)
    starts = [executors.ensure_worker(store, "tiny-causal") for _ in range(5)]  # a page polling every 2 s
    assert starts == [None] * 5
    proc = executors._started[0]
    assert proc.wait(timeout=300) == 0
    assert jobs.status_counts(store, "tiny-causal") == {"done": 15}


def test_run_page_groups_failures_with_their_tracebacks_and_shows_batches(app, db_path):
    degenerate.make(open_store(db_path), "failing", groups={"g": ["a", "b", "c"]}, failed_units=3)
    with open_store(db_path).transaction() as con:
        con.execute("UPDATE jobs SET traceback='Traceback (most recent call last):\\n  boom' WHERE study_id='failing'")
    at = app("run", "failing")
    _no_failure(at)
    labels = [e.label for e in at.expander]
    assert any("3 unit(s) failed" in label and "corrupted" in label for label in labels), labels
    assert any("Traceback (most recent call last)" in c.value for c in at.code)
    progress = [str(p.proto) for p in at.get("progress")]
    assert any("batch queued" in p for p in progress)


def test_run_page_starts_the_dashboards_worker_on_ray_when_asked(app, db_path, monkeypatch):
    """The executor choice reaches the worker's command line; per-actor progress is shown from the
    units' messages."""
    from mergelab.study import executors

    degenerate.make(open_store(db_path), "raying", groups={"g": ["a", "b", "c"]})
    with open_store(db_path).transaction() as con:
        con.executemany(  # units as the Ray executor leaves them: one done on actor-2, one running on actor-1
            "INSERT INTO jobs(study_id, kind, unit_key, payload, status, attempts, message, created_at, updated_at) "
            "VALUES ('raying', 'merge', ?, '{}', ?, 1, ?, 0, 0)",
            [("raying:merge:1", "done", "done on actor-2"), ("raying:merge:2", "running", "on ray actor-1")],
        )
    asked = []
    monkeypatch.setattr(executors, "ensure_worker", lambda *a, **k: asked.append((a, k)))
    at = app("run", "raying")
    _no_failure(at)
    assert not asked  # opening the page starts no work
    at.button(key="run_start").click().run()
    assert asked and asked[-1][0][3:] == ("local", None)
    at.radio(key="run_executor").set_value("on a Ray cluster").run()
    at.text_input(key="run_ray_address").input("ray://head:10001").run()
    _no_failure(at)
    assert asked[-1][0][3:] == ("ray", "ray://head:10001")
    assert any("actor-1: 0 done, 1 running · actor-2: 1 done, 0 running" in c.value for c in at.caption)
    command = executors.worker_command("m.db", "raying", executor="ray", address="ray://head:10001")
    assert command[-4:] == ["--executor", "ray", "--address", "ray://head:10001"]


# --- figures ---------------------------------------------------------------------------------------------
