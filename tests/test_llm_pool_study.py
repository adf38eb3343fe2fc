"""The shipped LLM study of issue 23 (SmolLM2-135M-Instruct, 37 candidate tasks, four disjoint
groups of 8): what data/llm/PREREGISTRATION.md fixed is what the shipped rows hold — the admission,
the draw, the units, the swap's rule — checked on the stored rows, nothing typed in."""

from pathlib import Path

import pandas as pd
import pytest

from mergelab.analysis import hypotheses, protocol, views
from mergelab.storage import jobs
from mergelab.study import planner
from mergelab.study.bundled import open_store
from mergelab.study.draw import draw_groups
from mergelab.study.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
LLM = ROOT / "data" / "llm"
GROUPS = ["r1", "r2", "r3", "r4"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(tmp_path_factory.mktemp("llm") / "m.db")


@pytest.fixture(scope="module")
def spec():
    return parse_spec(LLM / "study.yaml")


@pytest.fixture(scope="module")
def admitted():
    table = pd.read_csv(LLM / "admission.csv")
    return sorted(table.loc[table["admitted"], "task"])


def test_the_admission_file_is_the_rule_applied_to_the_shipped_rows(store):
    shipped = pd.read_csv(LLM / "admission.csv").set_index("task")
    now = protocol.admission(store, "llm").set_index("task")
    assert set(shipped.index) == set(now.index) and len(now) == 37
    assert (shipped["admitted"] == now.loc[shipped.index, "admitted"]).all()
    assert shipped["gain"].to_numpy() == pytest.approx(now.loc[shipped.index, "gain"].to_numpy(), abs=1e-3)
    assert shipped["admitted"].sum() >= 32


def test_four_disjoint_groups_of_eight_drawn_from_the_admitted_tasks(spec, admitted):
    groups = {g: spec.groups[g] for g in GROUPS}
    assert all(len(t) == 8 for t in groups.values())
    members = [t for g in groups.values() for t in g]
    assert len(set(members)) == 32 and set(members) <= set(admitted)
    assert spec.random_groups.draw_from == admitted and spec.random_groups.seed == 20261203
    assert draw_groups(spec.random_groups, list(spec.tasks)) == groups


def test_every_planned_unit_is_shipped_and_nothing_is_left_to_run(store, spec):
    planned = {u["unit_key"] for u in planner.plan_units(spec)}
    assert set(jobs.jobs_frame(store, "llm")["unit_key"]) == planned
    assert jobs.enqueue(store, "llm", planner.plan_units(spec))["new"] == 0


def test_experts_base_and_every_group_merge_are_scored_on_the_same_300_rows(store, spec):
    records = store.row_records("llm")
    losses = views.loss_table(store, "llm")
    for g in GROUPS:
        sub = losses[losses["group_name"] == g]
        assert set(sub["method"]) == {"LA", "TA", "TIES", "DARE", "SLERP"}
        assert set(sub["task"]) == set(spec.groups[g])
    counts = records.groupby(["group_name", "model", "task"])["row"].nunique()
    assert (counts == 300).all(), counts[counts != 300]


def test_the_swap_follows_the_plans_rule(store, admitted):
    """H3's group has the lowest worst best-loss; its highest-MDS task goes out; in comes the
    admitted task outside the group that gives the lowest worst MDS (hidden states only)."""
    swaps = store.swaps("llm")
    assert len(swaps) == 1
    (swap,) = swaps.values()
    assert swap.parent == protocol.worst_group(store, "llm")
    tasks = store.groups("llm")[swap.parent]
    kw = {k: v for k, v in views.hidden_settings(store, "llm").items() if k in ("layer", "pooling")}
    pool = [t for t in admitted if t not in tasks]
    ranked = views.swap_candidates(store, "llm", tasks, pool, **kw)
    assert (swap.removed, swap.added) == (ranked.attrs["removed"], ranked["candidate"].iloc[0])


def test_the_verdicts_follow_from_the_numbers(store):
    tests = hypotheses.hypothesis_tests(store, "llm")
    h1 = tests[tests["hypothesis"] == "H1"].iloc[0]
    assert h1["groups"] == 4 and h1["verdict"] == hypotheses.correlation_verdict(h1["estimate"], h1["p_expected"], -1)
    assert h1["detectable_r"] == pytest.approx(0.50, abs=0.01)
    h3 = tests[tests["hypothesis"] == "H3"].iloc[0]
    assert h3["verdict"] == hypotheses.interval_verdict(h3["ci_low"], h3["ci_high"])
    t5 = protocol.table5(store, "llm").set_index("group")
    assert t5.attrs["combined_groups"] == GROUPS
    assert t5.loc[GROUPS, "reliability"].notna().all()


def test_the_markdown_report_carries_the_pairs_with_their_caveat(store):
    """r1's 28 pairs merged with TA (the plan's budget amendment): Table 4 with the warning that the
    pairs share tasks, and the pair losses' reliability."""
    from mergelab.analysis.markdown_report import document

    summary = protocol.summary(store, "llm", n_boot=200)
    assert set(summary["table4_pairwise"]["method"]) == {"TA"}
    assert (summary["table4_pairwise"]["n"] == 28).all()
    text = document("llm", summary, hypotheses.hypothesis_tests(store, "llm", comparison=summary["predictors"]))
    assert "(Table 4)" in text and "The pairs share tasks" in text
    rel = summary["pair_reliability"].set_index("method").loc["TA", "reliability"]
    assert f"Pair-loss reliability per method: TA {rel:.2f} (28 pairs)." in text
