"""`mergelab swap`: the swap advice of the Task swap page from the command line — which group, which
task to take out, and the replacements ranked by hidden states alone (the rule H3 of an LLM study's
plan fixes before its swap is merged)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from mergelab import cli
from mergelab.analysis import protocol, views
from mergelab.study.bundled import open_store

import degenerate


@pytest.fixture()
def swap_store(db_path):
    store = open_store(db_path)
    tasks = [f"t{i}" for i in range(12)]
    degenerate.make(store, "sw", groups={"g1": tasks[:4], "g2": tasks[4:8]}, pool=tasks[8:], seed=3)
    return store


def _worst(store, group):
    best = views.best_loss(views.loss_table(store, "sw"), group, views.best_of(store, "sw"))
    return float(best["best_loss"].min())


def test_the_worst_group_is_the_one_with_the_lowest_worst_best_loss(swap_store):
    want = min(["g1", "g2"], key=lambda g: _worst(swap_store, g))
    assert protocol.worst_group(swap_store, "sw") == want


def test_swap_prints_the_ranking_for_the_worst_group(swap_store, capsys):
    group = protocol.worst_group(swap_store, "sw")
    assert cli.main(["swap", "--study", "sw", "--db", str(swap_store.path)]) == 0
    out, err = capsys.readouterr()
    table = pd.read_csv(io.StringIO(out))
    want = protocol.swap_advice(swap_store, "sw", group)
    assert table["candidate"].tolist() == want["candidate"].tolist()
    assert table["new_worst_mds"].tolist() == pytest.approx(want["new_worst_mds"].tolist())
    assert f"{group}: worst best-loss" in err and f"take out {want.attrs['removed']}" in err


def test_swap_candidates_can_be_named(swap_store, capsys):
    """A plan may fix the candidates (e.g. the admitted tasks outside the group)."""
    groups = swap_store.groups("sw")
    assert (
        cli.main(["swap", "--study", "sw", "--db", str(swap_store.path), "--group", "g1", "--candidates", "t9", "t5"])
        == 0
    )
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert sorted(table["candidate"]) == ["t5", "t9"]
    want = views.swap_candidates(swap_store, "sw", groups["g1"], ["t9", "t5"], layer=-1, pooling="mean")
    assert table["candidate"].tolist() == want["candidate"].tolist()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--group", "nope"], "--group 'nope' is not a group of sw"),
        (["--candidates", "zz"], "--candidates: 'zz' is not a task of sw"),
        (["--study", "missing"], "study 'missing' is not in the store"),
    ],
)
def test_swap_bad_input_is_one_line(swap_store, capsys, args, words):
    argv = ["swap", "--db", str(swap_store.path), *([] if "--study" in args else ["--study", "sw"]), *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
