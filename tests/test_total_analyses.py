"""Analyses are total: a group of 2 (Eq. 2 undefined), an expert scoring 0 (Eq. 1 undefined) and a
task with no merged rows give a labelled 'undefined' for those cells and everything else as
usual — in `mergelab report`, the HTML export and the pages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mergelab import cli
from mergelab.analysis import protocol, views
from mergelab.study.bundled import open_store
from mergelab.viz.report import build_report

import degenerate

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def store(db_path):
    store = open_store(db_path)
    degenerate.pair_study(store)
    degenerate.zero_expert_study(store)
    degenerate.no_merged_rows_study(store)
    return store


def _report(db_path, study, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(["report", "--study", study, "--db", str(db_path), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_on_a_group_of_two(store, db_path, capsys):
    out = _report(db_path, "pair", capsys)
    sim = out["hiddensim:g"]
    assert [row["a"] for row in sim] == [1.0, None] and "group of 2" in sim[0]["note"]
    assert all(m["mds"] is None and "group of 2" in m["note"] for m in out["mds_vs_best_loss:g"])
    assert len(out["losses"]) == 4 and all(r["loss"] is not None for r in out["losses"])
    assert [r["factor"] for r in out["table3_anova"]] == ["method", "task"]


def test_report_with_an_expert_scoring_zero(store, db_path, capsys):
    out = _report(db_path, "zero", capsys)
    losses = out["losses"]
    undefined = [r for r in losses if r["loss"] is None]
    assert {r["task"] for r in undefined} == {"b"} and all("scores 0" in r["note"] for r in undefined)
    assert all(r["loss"] is not None for r in losses if r["task"] != "b")
    assert len(out["mds_vs_best_loss:g"]) == 4 and all(m["mds"] is not None for m in out["mds_vs_best_loss:g"])
    t5 = out["table5"][0]
    assert t5["n"] == 3 and t5["p_expected"] is not None  # 3 tasks with both numbers: still a test


def test_report_with_a_task_without_merged_rows(store, db_path, capsys):
    out = _report(db_path, "partial", capsys)
    assert {r["task"] for r in out["losses"]} == {"a", "b", "c"}
    frame = protocol.mds_vs_loss(store, "partial", "g")
    assert list(frame["task"]) == ["a", "b", "c", "d"] and math.isnan(frame.set_index("task").loc["d", "best_loss"])


def test_report_uses_the_specs_hidden_settings(store, db_path, capsys):
    """A spec asking for cosine at layer 1 gets cosine at layer 1, not the default l2/last."""
    degenerate.make(store, "cos", groups={"g": ["a", "b", "c"]})
    import yaml

    spec = yaml.safe_load(store.spec_text("cos"))
    spec["hidden"] = {"k": 3, "layer": 1, "pooling": "first", "distance": "cosine"}
    store.upsert_study("cos", "cos", "live", None, yaml.safe_dump(spec))
    out = _report(db_path, "cos", capsys)
    want = views.mds_table(store, "cos", "g", layer=1, pooling="first", distance="cosine")
    default = views.mds_table(store, "cos", "g")
    got = [m["mds"] for m in out["mds_vs_best_loss:g"]]
    assert got == pytest.approx(list(want["mds"])) and got != pytest.approx(list(default["mds"]))


@pytest.mark.parametrize("study", ["pair", "zero", "partial"])
def test_html_report_builds_and_says_undefined(store, study):
    html = build_report(store, study)
    assert "<h2>Group g</h2>" in html
    if study in ("pair", "zero"):
        assert "undefined" in html


@pytest.mark.parametrize("page", ["similarity", "merge_loss", "statistics", "theory", "task_swap", "export"])
@pytest.mark.parametrize("study", ["pair", "zero", "partial"])
def test_pages_on_undefined_cells(store, db_path, monkeypatch, page, study):
    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["study"] = study
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    text = " ".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error])
    if (study, page) in {("pair", "similarity"), ("zero", "merge_loss")}:
        assert "undefined" in text, text[:2000]
