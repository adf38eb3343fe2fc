"""`mergelab report` keeps its finished text beside the store (issue 27: 2–7 s per call, the whole
analysis recomputed each time): the same report of the same rows and code is read back, and any
new row, new state file or code change recomputes it."""

import json

import pytest

from mergelab import cli
from mergelab.cli import study_commands
from mergelab.storage import report_cache
from mergelab.storage.store import Store


def _report(db_path, capsys, *extra) -> str:
    capsys.readouterr()
    assert cli.main(["report", "--study", "demo", "--db", str(db_path), "--format", "markdown", *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture()
def counted(monkeypatch):
    """Counts the report computations (the real ones still run)."""
    calls = []
    real = study_commands._report_text

    def counting(store, study, fmt):
        calls.append(fmt)
        return real(store, study, fmt)

    monkeypatch.setattr(study_commands, "_report_text", counting)
    return calls


def test_the_same_report_of_the_same_rows_is_read_back(db_path, capsys, counted):
    first = _report(db_path, capsys)
    assert counted == ["markdown"]
    assert _report(db_path, capsys) == first and counted == ["markdown"]  # read back, not recomputed
    assert list((db_path.parent / "cache").glob("report-*.txt"))
    capsys.readouterr()
    assert cli.main(["report", "--study", "demo", "--db", str(db_path), "--format", "json"]) == 0
    json.loads(capsys.readouterr().out)  # another format is another report
    assert counted == ["markdown", "json"]
    assert _report(db_path, capsys, "--no-cache") == first and counted == ["markdown", "json", "markdown"]


def test_a_new_row_a_new_state_file_or_new_code_recompute_it(db_path, capsys, counted, monkeypatch):
    first = _report(db_path, capsys)
    store = Store(db_path)
    row = store.results("demo").iloc[0].to_dict()
    row["score"] = (row["score"] or 0) + 1.0
    store.add_results("demo", [row])  # one score changed
    _report(db_path, capsys)
    assert len(counted) == 2
    assert _report(db_path, capsys) and len(counted) == 2
    folder = report_cache.states_dir(store.states_root, "demo")
    (folder / "new_unit.safetensors").write_bytes(b"")  # a new state file (the template's are hard links)
    _report(db_path, capsys)
    assert len(counted) == 3
    monkeypatch.setattr(report_cache, "code_hash", lambda: "another version of mergelab")
    again = _report(db_path, capsys)
    assert len(counted) == 4 and again.splitlines()[0] == first.splitlines()[0]
    assert len(list((db_path.parent / "cache").glob("report-*.txt"))) == 1  # older ones of it removed


def test_rows_written_while_it_runs_are_not_kept(db_path, capsys, monkeypatch):
    real = study_commands._report_text

    def writes_meanwhile(store, study, fmt):
        text = real(store, study, fmt)
        row = store.results("demo").iloc[0].to_dict()
        store.add_results("demo", [{**row, "score": (row["score"] or 0) + 2.0}])
        return text

    monkeypatch.setattr(study_commands, "_report_text", writes_meanwhile)
    _report(db_path, capsys)
    assert not list((db_path.parent / "cache").glob("report-*.txt"))


def test_an_unwritable_cache_folder_still_prints_the_report(db_path, capsys, counted):
    (db_path.parent / "cache").write_text("a file where the folder would go")
    first = _report(db_path, capsys)
    assert "demo" in first and _report(db_path, capsys) == first
    assert len(counted) == 2  # computed each time, never a traceback


# --- analysis tables kept for the next dashboard process (issue 27: a page's first render 1–7 s) ----
def test_a_table_is_kept_only_if_it_reads_back_equal(db_path):
    import pandas as pd

    store = Store(db_path)
    calls = []

    def table():
        calls.append(1)
        frame = pd.DataFrame({"task": ["a", "b"], "r": [-0.5, float("nan")], "ok": [True, False]})
        frame.attrs["combined_groups"] = ["r1", "r2"]
        return frame

    first, hit = report_cache.cached_frame(store, "demo", "t", table)
    again, hit_again = report_cache.cached_frame(store, "demo", "t", table)
    assert (hit, hit_again) == (False, True) and len(calls) == 1
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    assert again.attrs == {"combined_groups": ["r1", "r2"]}
    # a new row: computed again (and the older file of the same request removed)
    row = store.results("demo").iloc[0].to_dict()
    store.add_results("demo", [{**row, "score": (row["score"] or 0) + 1.0}])
    report_cache.cached_frame(store, "demo", "t", table)
    assert len(calls) == 2 and len(list((db_path.parent / "cache").glob("frame-*.parquet"))) == 1
    # what parquet cannot hold exactly, or what is not a table, is returned and never kept
    tuples = pd.DataFrame({"pair": [("a", "b"), ("c", "d")]})
    for value in (tuples, {"a": 1}, 3.5):
        out, _ = report_cache.cached_frame(store, "demo", f"other {type(value)}", lambda v=value: v)
        assert out is value
        _, hit = report_cache.cached_frame(store, "demo", f"other {type(value)}", lambda v=value: v)
        assert not hit


def test_a_fresh_dashboard_process_reads_the_kept_tables(db_path, monkeypatch):
    """The Statistics page's tables and the bootstrap draws computed by one process are read by the
    next (a fresh st.cache_data and no draws in memory, as a new server has) without computing them
    again; the page says the same."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from mergelab.analysis import predictors, protocol

    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")
    root = __import__("pathlib").Path(__file__).resolve().parent.parent

    def render():
        at = AppTest.from_file(str(root / "app.py"), default_timeout=120)
        at.query_params["study"] = "demo"
        at.run()
        at.switch_page("pages/statistics.py").run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        return [m.value for m in at.markdown], [df.value for df in at.dataframe]

    text, frames = render()
    assert list((db_path.parent / "cache").glob("frame-*.parquet"))
    st.cache_data.clear()  # what a new server process starts with

    def computed(real):
        def fail(*a, **k):
            raise AssertionError(f"{real.__qualname__} computed again although it was kept")

        fail.__module__, fail.__qualname__ = real.__module__, real.__qualname__  # the name it is kept by
        return fail

    from mergelab.analysis import uncertainty

    uncertainty._DRAWS.clear()
    monkeypatch.setattr(uncertainty, "Draws", computed(uncertainty.Draws))  # the bootstrap draws
    for module, name in ((protocol, "table4"), (protocol, "anova"), (predictors, "predictor_comparison")):
        monkeypatch.setattr(module, name, computed(getattr(module, name)))
    text_again, frames_again = render()
    assert text_again == text
    assert len(frames_again) == len(frames)
    for a, b in zip(frames, frames_again):
        __import__("pandas").testing.assert_frame_equal(a, b)


def test_kept_draws_read_back_equal(db_path):
    import numpy as np

    from mergelab.analysis import uncertainty

    store = Store(db_path)
    uncertainty._DRAWS.clear()
    first = uncertainty.draws_for(store, "demo")
    assert list((db_path.parent / "cache").glob("arrays-*.npz"))
    uncertainty._DRAWS.clear()
    again = uncertainty.draws_for(store, "demo")
    assert again is not first and again.n_boot == first.n_boot and list(again.tasks) == list(first.tasks)
    for task, td in first.tasks.items():
        other = again.tasks[task]
        assert (other.n_rows, other.higher_is_better, other.point) == (td.n_rows, td.higher_is_better, td.point)
        assert list(other.draws) == list(td.draws)
        for key, values in td.draws.items():
            assert other.draws[key].dtype == values.dtype
            assert np.array_equal(other.draws[key], values, equal_nan=True)
