"""The shipped demo study says what the README and the closing note claim — checked on its rows."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mergelab.analysis import views
from mergelab.study.bundled import open_store

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(tmp_path_factory.mktemp("demo") / "m.db")


def test_twelve_balanced_offline_tasks_with_provenance():
    files = sorted((DEMO / "tasks").glob("*.jsonl"))
    assert len(files) >= 12
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        for split in ("train", "eval", "probe"):
            counts = Counter(r["label"] for r in rows if r["split"] == split)
            assert len(counts) >= 2 and max(counts.values()) - min(counts.values()) <= 1, (f.name, split)
        assert f.stem in (DEMO / "tasks" / "PROVENANCE.md").read_text()


def test_every_expert_well_above_chance(store):
    training = {r["task"]: r for r in json.loads((DEMO / "adapters" / "training.json").read_text())}
    experts = views.expert_table(store, "demo").set_index("task")["score"]
    assert len(experts) == 12
    for task, score in experts.items():
        chance = training[task]["chance"]
        assert score >= chance + 15, (task, score, chance)
        assert abs(score - training[task]["eval_accuracy"]) <= 1.0  # runner reproduces training eval


def test_default_group_has_a_collapse_under_every_method(store):
    """The paper's five and the six LoRA-native methods of issue 15: wn_pos collapses under all."""
    losses = views.loss_table(store, "demo")
    default = losses[losses["group_name"] == "default"]
    assert set(default["method"]) == {
        "LA",
        "TA",
        "TIES",
        "DARE",
        "SLERP",
        "knots",
        "tsv",
        "iso_c",
        "iso_cts",
        "core_ties",
        "core_tsv",
    }
    best = default.groupby("task")["loss"].max()
    collapsed = best[best <= -30]
    assert list(collapsed.index) == ["wn_pos"]
    mds = views.mds_table(store, "demo", "default").set_index("task")["mds"]
    assert mds.idxmax() == "wn_pos"


def test_pool_has_a_swap_that_lowers_the_worst_mds(store):
    groups = store.groups("demo")  # the pool is a role, not a group
    assert "pool" not in groups
    cands = views.swap_candidates(store, "demo", groups["default"], store.pool("demo"))
    assert cands.attrs["removed"] == "wn_pos"
    assert (cands["new_worst_mds"] < cands.attrs["current_worst_mds"]).sum() >= 1


def test_shipped_results_cover_every_unit_of_the_demo_spec(store):
    """Unit keys hash what determines a result; a spec field added later must not change them,
    or every checkout would re-run the shipped demo."""
    from mergelab.storage import jobs
    from mergelab.study import planner
    from mergelab.study.spec import parse_spec

    spec = parse_spec(DEMO / "study.yaml")
    assert jobs.enqueue(store, spec.name, planner.plan_units(spec))["new"] == 0
    # and the shipped rows carry the keys a recompute writes, so `run --recompute` replaces them
    # instead of adding a second row per merge
    planned = {u["unit_key"] for u in planner.plan_units(spec)}
    assert set(jobs.jobs_frame(store, "demo")["unit_key"]) == planned
    merged = store.results("demo").query("method != 'expert'")
    assert (merged["params_hash"] == [spec.fingerprint(m, spec.methods[m]) for m in merged["method"]]).all()


def test_best_subset_equals_mds_computed_group_by_group(store):
    """The Task swap page's search averages per-probe distances computed once; each group's worst
    MDS must equal Eq. 3 computed on that group's own probes from scratch."""
    from itertools import combinations

    from mergelab.analysis import hidden

    groups = store.groups("demo")
    tasks = list(dict.fromkeys(groups["default"] + store.pool("demo")))[:9]
    best = views.best_subset(store, "demo", tasks, 4)
    h_all, owners = views.expert_states(store, "demo", tasks, probe_tasks=tasks)
    direct = []
    for combo in combinations(range(len(tasks)), 4):
        names = {tasks[i] for i in combo}
        probes = [j for j, o in enumerate(owners) if o in names]
        direct.append((", ".join(tasks[i] for i in combo), float(hidden.mds_of(h_all[list(combo)][:, probes]).max())))
    direct = sorted(direct, key=lambda r: r[1])[:10]
    assert list(best["tasks"]) == [name for name, _ in direct]
    assert np.allclose(best["worst_mds"], [w for _, w in direct], rtol=1e-12, atol=1e-12)
