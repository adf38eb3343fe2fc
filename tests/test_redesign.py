"""The redesign's seams: a merge method is one registration; the store migrates a store made by
the previous release; a failed unit keeps its traceback; a unit that kills its worker is given up
after MAX_ATTEMPTS."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mergelab import cli
from mergelab.analysis import views
from mergelab.merging import registry
from mergelab.storage import jobs
from mergelab.storage.store import Store
from mergelab.study import executors, planner

from tinymodels import make_causal_base, make_lora, make_tiny_causal_study

ROOT = Path(__file__).resolve().parent.parent
MERGELAB = [sys.executable, "-m", "mergelab"]


# --- one registration ----------------------------------------------------------------------------
def _toy_mean(deltas, values, ctx):
    return values["scale"] * torch.stack(deltas).mean(0)


@pytest.fixture()
def toy():
    method = registry.register(
        registry.Method(
            "toy_mean",
            "Toy mean",
            "the plain mean of the task vectors, scaled",
            merge=_toy_mean,
            params=(registry.Param("scale", float, 1.0, "scale of the mean", minimum=0.0),),
        )
    )
    yield method
    registry.unregister("toy_mean")


def test_a_registered_method_appears_in_the_cli_the_form_and_the_export(toy, tmp_path, capsys, db_path, monkeypatch):
    base = make_causal_base(tmp_path / "base")
    adapters = [make_lora(base, tmp_path / f"a{i}", i) for i in range(2)]
    # the CLI: its flag, its listing, a merge with it
    assert "--scale" in cli.build_parser().format_help() or "--scale" in _merge_help()
    capsys.readouterr()
    assert cli.main(["methods"]) == 0 and "toy_mean" in capsys.readouterr().out
    out = tmp_path / "merged"
    assert (
        cli.main(
            [
                "merge",
                "--base",
                str(base),
                "--adapters",
                *map(str, adapters),
                "--method",
                "toy_mean",
                "--scale",
                "0.5",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    from mergelab.io.adapters import BaseWeights, load_adapter_set
    from mergelab.merging.merge import read_folder

    aset = load_adapter_set(base, {"a0": adapters[0], "a1": adapters[1]})
    merged = read_folder(out)
    module, key = next(iter(aset.module_keys.items()))
    mean = (aset.adapters[0].delta(module) + aset.adapters[1].delta(module)) / 2
    want = BaseWeights(base).get(key) + 0.5 * mean
    assert torch.allclose(merged[key], want, atol=1e-6)
    # the mergekit export: one clear line
    capsys.readouterr()
    assert (
        cli.main(["export-mergekit", "--base", str(base), "--adapters", *map(str, adapters), "--method", "toy_mean"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mergekit has no Toy mean method" in err[0]
    # the Study page: offered with its own widget
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["study"] = "demo"
    at.run()
    at.switch_page("pages/study.py").run()
    chooser = at.multiselect(key="study_methods")
    assert "toy_mean" in chooser.options or "Toy mean" in chooser.options
    chooser.select("toy_mean").run()
    assert not at.exception
    assert any(n.key == "param_toy_mean_scale" for n in at.number_input)


def _merge_help() -> str:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices["merge"].format_help()


def test_registering_a_name_twice_is_refused(toy):
    with pytest.raises(registry.MethodError, match="already registered"):
        registry.register(toy)
    with pytest.raises(registry.MethodError, match="already registered"):
        registry.register(registry.Method("TIES", "x", "x", (), merge=_toy_mean))  # a paper alias


def test_ties_dare_and_friends_are_one_generalised_task_arithmetic():
    """TA, TIES, DARE(-TIES), breadcrumbs and DELLA are options of one function, as in mergekit."""
    names = ["task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "della"]
    qualnames = {registry.get(n).merge.__qualname__ for n in names}
    assert qualnames == {"generalized_task_arithmetic.<locals>.merge"}


# --- the store of the previous release -----------------------------------------------------------
def test_a_store_made_by_the_previous_release_migrates(tmp_path):
    """tests/data/store-v1 was written by the release before the redesign (commit 1e67688): the
    bundled paper and demo studies, a tiny causal study run to the end, a swap added to the demo."""
    shutil.copytree(ROOT / "tests" / "data" / "store-v1", tmp_path / "s")
    db = tmp_path / "s" / "mergelab.db"
    con = sqlite3.connect(db)
    before = {
        t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("studies", "results", "task_groups", "pair_metrics", "published_stats", "jobs")
    }
    dead = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")} & {
        "models",
        "tasks",
        "runs",
        "hidden_distances",
    }
    con.close()
    assert dead == {"models", "tasks", "runs", "hidden_distances"}
    store = Store(db)
    assert store.migrated_from == 1 and store.schema_version() == 4  # through v2 and v3 to v4
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    after = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in before}
    columns = {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
    con.close()
    assert not tables & dead and after == before
    assert {"traceback", "started_at", "finished_at"} <= columns
    assert store.pool("demo") == ["wn_noun_topic", "wn_antonym", "wn_hypernym", "vader_intensity"]
    assert set(store.groups("demo")) == {"default"}  # v3: the swap has the swap role, with what it swapped
    swap = store.swaps("demo")["swap:default:wn_pos->vader_intensity"]
    assert (swap.parent, swap.removed, swap.added) == ("default", "wn_pos", "vader_intensity")
    losses = views.loss_table(store, "tiny-causal")
    assert len(losses) == 6 and losses["loss"].notna().all()
    assert views.similarity(store, "tiny-causal", ["c0", "c1", "c2"], pooling="last").shape == (3, 3)
    assert Store(db).migrated_from is None  # opened again: nothing left to do


# --- units that fail, and units that kill their worker -------------------------------------------
def test_a_failed_unit_keeps_its_whole_traceback(tmp_path, monkeypatch):
    from mergelab.study import units

    store = Store(tmp_path / "f.db")
    planner.prepare(store, make_tiny_causal_study(tmp_path))
    real = units._run

    def broken(ctx, kind, p, key, progress):
        if kind == "conflicts":
            raise ValueError("boom in the conflicts unit")
        return real(ctx, kind, p, key, progress)

    monkeypatch.setattr(units, "_run", broken)
    out = executors.run_worker(store, "tiny-causal")
    assert out["failed"] == 1
    frame = jobs.jobs_frame(store, "tiny-causal").set_index("kind")
    row = frame.loc["conflicts"]
    assert row["status"] == "failed" and row["error"] == "ValueError: boom in the conflicts unit"
    assert "Traceback (most recent call last)" in row["traceback"] and "in broken" in row["traceback"]


def test_a_unit_that_kills_its_worker_is_given_up_after_three_attempts(tmp_path):
    db = tmp_path / "k.db"
    store = Store(db)
    planner.prepare(store, make_tiny_causal_study(tmp_path))
    env = {**os.environ, "MERGELAB_CRASH_UNIT": "conflicts"}
    for _ in range(jobs.MAX_ATTEMPTS + 1):
        subprocess.run([*MERGELAB, "worker", "--db", str(db)], env=env, capture_output=True, timeout=300)
    frame = jobs.jobs_frame(store, "tiny-causal").set_index("kind")
    row = frame.loc["conflicts"]
    assert row["status"] == "failed" and row["attempts"] == jobs.MAX_ATTEMPTS
    assert f"stopped its worker {jobs.MAX_ATTEMPTS} times" in row["error"]
    assert (frame.drop(index="conflicts")["status"] == "done").all()
    assert (frame.drop(index="conflicts")["attempts"] == 1).all()
