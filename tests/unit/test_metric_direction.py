"""Lower-is-better metrics and scores that are not a plain mean of rows (issue 26): an lm-eval task
scored by perplexity enters Eq. 1 with the right sign, and its intervals resample what lm-eval
aggregates (the log-likelihood and word count of each row, a ratio of sums), not a mean of rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from mergelab.analysis import equations, protocol, uncertainty, views
from mergelab.analysis.equations import AnalysisError
from mergelab.storage.store import Store


def test_eq1_for_a_lower_is_better_metric_is_the_ratio_of_performances():
    # performance is 1 / metric: a merge at twice the expert's perplexity keeps half its performance
    assert equations.merging_loss(20.0, 10.0, higher_is_better=False) == pytest.approx(-50.0)
    assert equations.merging_loss(5.0, 10.0, higher_is_better=False) == pytest.approx(100.0)
    assert equations.merging_loss(10.0, 10.0, higher_is_better=False) == 0.0
    got = equations.merging_loss(np.array([20.0, 40.0]), np.array([10.0, 10.0]), higher_is_better=False)
    assert got == pytest.approx([-50.0, -75.0])
    # higher-is-better is unchanged (the default)
    assert equations.merging_loss(50.0, 100.0) == pytest.approx(-50.0)
    with pytest.raises(AnalysisError, match="merge scores 0"):
        equations.merging_loss(0.0, 10.0, higher_is_better=False)


@pytest.mark.parametrize("name", ["mean", "perplexity", "weighted_perplexity", "bits_per_byte"])
def test_each_aggregation_equals_lm_evals_own(name):
    metrics = pytest.importorskip("lm_eval.api.metrics")
    rng = np.random.default_rng(3)
    ll, words = -rng.uniform(5, 40, 30), rng.integers(3, 12, 30).astype(float)
    if name == "mean":
        items, value, weight = list(ll), ll, np.ones_like(ll)
    elif name == "perplexity":
        items, value, weight = list(ll), ll, np.ones_like(ll)
    else:
        items, value, weight = list(zip(ll, words)), ll, words
    theirs = getattr(metrics, name)(items)
    assert equations.aggregate(name, value.sum() / weight.sum()) == pytest.approx(theirs, rel=1e-12)


def _ppl_study(store: Store, n: int = 120) -> dict:
    """One task scored by word perplexity (lower is better): per row its log-likelihood per word and
    its words; the expert is better than the base, the merge worse than the expert."""
    rng = np.random.default_rng(11)
    words = rng.integers(4, 15, n).astype(float)
    truth = {
        ("", "base"): -words * rng.normal(3.0, 0.4, n),
        ("", "expert"): -words * rng.normal(2.2, 0.4, n),
        ("g", "LA"): -words * rng.normal(2.6, 0.4, n),
    }
    spec = {
        "name": "ppl",
        "base": "org/base",
        "architecture": "causal",
        "adapters": {t: f"adapters/{t}" for t in ("p", "q")},
        "tasks": {t: {"data": f"data/{t}.jsonl", "labels": ["no", "yes"]} for t in ("p", "q")},
        "groups": {"g": ["p", "q"]},
        "methods": {"LA": {}},
    }
    store.upsert_study("ppl", "ppl", "live", "", yaml.safe_dump(spec))
    store.set_groups("ppl", {"g": ["p", "q"]})
    rows, records = [], []
    for (group, method), ll in truth.items():
        model = {"base": "base", "expert": "expert:p"}.get(method, f"merged:g:{method}")
        rows.append(
            dict(group_name=group, model=model, task="p", method=method, metric="word_perplexity",
                 score=math.exp(-ll.sum() / words.sum()), higher_is_better=0, aggregation="weighted_perplexity")
        )  # fmt: skip
        records += [
            dict(group_name=group, model=model, task="p", method=method, row=i, row_id=f"r{i}",
                 score=float(ll[i] / words[i]), weight=float(words[i]))
            for i in range(n)
        ]  # fmt: skip
    store.add_results("ppl", rows)
    store.add_row_records("ppl", records)
    return {"words": words, **truth}


def _ppl(ll, words):
    return math.exp(-ll.sum() / words.sum())


def test_a_perplexity_task_loses_with_the_right_sign_and_its_interval_resamples_sums(tmp_path):
    store = Store(tmp_path / "p.db")
    t = _ppl_study(store)
    words, expert, merged, base = t["words"], t[("", "expert")], t[("g", "LA")], t[("", "base")]
    res = store.results("ppl").set_index("method")
    assert res.loc["expert", "higher_is_better"] == 0 and res.loc["expert", "aggregation"] == "weighted_perplexity"
    loss = views.loss_table(store, "ppl").set_index("method").loc["LA", "loss"]
    want = 100 * (_ppl(expert, words) / _ppl(merged, words) - 1)
    assert want < 0 and loss == pytest.approx(want)  # the merge's perplexity is higher: a loss, negative

    draws = uncertainty.Draws(store, "ppl")
    assert draws.tasks["p"].point[uncertainty.EXPERT] == pytest.approx(_ppl(expert, words))
    table = protocol.loss_intervals(store, "ppl").set_index("method")
    rng = np.random.default_rng(123)
    plain = []
    for _ in range(8000):
        i = rng.integers(0, len(words), len(words))
        plain.append(100 * (_ppl(expert[i], words[i]) / _ppl(merged[i], words[i]) - 1))
    assert table.loc["LA", "ci_low"] == pytest.approx(np.percentile(plain, 2.5), abs=0.6)
    assert table.loc["LA", "ci_high"] == pytest.approx(np.percentile(plain, 97.5), abs=0.6)
    assert table.loc["LA", "ci_high"] < 0  # this merge is clearly worse than its expert

    # the expert's gain over the base is an improvement: positive when its perplexity is lower
    ev = protocol.expert_evidence(store, "ppl", draws).set_index("task").loc["p"]
    assert ev["gain"] == pytest.approx(_ppl(base, words) - _ppl(expert, words)) and ev["gain"] > 0
    assert ev["gain_ci_low"] > 0
    assert ev["better"] == "lower"
    # MergeBench's normalized performance is 1 + Eq. 1 / 100 here too: expert ÷ merged
    norm = protocol.normalized_scores(store, "ppl", draws)
    row = norm[(norm.level == "task") & (norm.task == "p")].iloc[0]
    assert row["normalized"] == pytest.approx(_ppl(expert, words) / _ppl(merged, words))
    assert row["ci_low"] < row["normalized"] < row["ci_high"] < 1


def test_a_version_3_store_keeps_its_rows_as_higher_is_better_means(tmp_path):
    import sqlite3

    from mergelab.storage import schema

    path = tmp_path / "v3.db"
    v3 = schema.SCHEMA.replace(
        "    higher_is_better INTEGER NOT NULL DEFAULT 1, aggregation TEXT NOT NULL DEFAULT 'mean',\n", ""
    ).replace("label_logprobs TEXT, weight REAL,", "label_logprobs TEXT,")
    assert v3 != schema.SCHEMA and "weight REAL" not in v3
    con = sqlite3.connect(path)
    for statement in v3.split(";"):
        if statement.strip():
            con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    con.execute("INSERT INTO studies VALUES ('s', 's', 'live', '', '', 0)")
    con.execute(
        "INSERT INTO results(study_id, group_name, model, task, method, metric, score, created_at) "
        "VALUES ('s', '', 'expert:a', 'a', 'expert', 'accuracy', 80.0, 0)"
    )
    con.execute(
        "INSERT INTO row_records(study_id, group_name, model, task, method, row, row_id, score) "
        "VALUES ('s', '', 'expert:a', 'a', 'expert', 0, 'r0', 100.0)"
    )
    con.commit()
    con.close()
    store = Store(path)
    assert store.migrated_from == 3 and store.schema_version() == 4
    res = store.results("s").iloc[0]
    assert (res["score"], res["higher_is_better"], res["aggregation"]) == (80.0, 1, "mean")
    rec = store.row_records("s").iloc[0]
    assert rec["score"] == 100.0 and rec["weight"] is None
