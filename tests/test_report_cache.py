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
