"""Per-row records from a real run (issue 21, item 1): every evaluation keeps one record per eval row,
and a snapshot carries them into another store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mergelab.storage import jobs, snapshot
from mergelab.storage.store import Store


def test_a_run_keeps_a_record_per_eval_row(tmp_path):
    """Experts, base and merges each store one record per eval row: the row's score (its mean is the
    unit's score), the prediction, each label's log-likelihood (the prediction is their argmax) — and
    a snapshot carries them into another store."""
    from tinymodels import make_tiny_causal_study, run_study

    path = make_tiny_causal_study(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["base_scores"] = True
    path.write_text(yaml.safe_dump(spec))
    store = Store(tmp_path / "r.db")
    run_study(store, path, "tiny-causal")
    res = store.results("tiny-causal")
    rec = store.row_records("tiny-causal")
    assert set(res["method"]) == {"expert", "base", "TIES", "SLERP"}
    for r in res.itertuples():
        sub = rec[(rec.group_name == r.group_name) & (rec.model == r.model) & (rec.task == r.task)]
        assert len(sub) == 7 and list(sub["row"]) == list(range(7))  # eval_limit 7
        assert sub["score"].mean() == pytest.approx(r.score)
        if r.metric == "accuracy":
            lp = np.array([json.loads(x) for x in sub["label_logprobs"]])
            assert lp.shape == (7, 2)
            assert list(np.array(["no", "yes"])[lp.argmax(1)]) == list(sub["prediction"])
            assert ((sub["prediction"] == sub["reference"]) == (sub["score"] == 100)).all()
        else:
            assert sub["label_logprobs"].isna().all() and sub["prediction"].notna().all()
    # rows pair up across models by prompt
    by_task = rec.groupby(["task", "row"])["row_id"].nunique()
    assert (by_task == 1).all()
    snapshot.export(store, "tiny-causal", tmp_path / "snap")
    assert (tmp_path / "snap" / snapshot.RECORDS_FILE).exists()
    other = Store(tmp_path / "other.db")
    other.upsert_study("tiny-causal", "tiny-causal", "live", "", store.spec_text("tiny-causal"))
    snapshot.load_rows(other, "tiny-causal", tmp_path / "snap")
    pd.testing.assert_frame_equal(other.row_records("tiny-causal"), rec)
    # a unit the spec no longer plans (a method revision re-keyed it) does not ship
    done = [key for _, key, _ in jobs.done_keys(store, "tiny-causal")]
    snapshot.export(store, "tiny-causal", tmp_path / "planned", units=set(done[1:]))
    assert list(pd.read_csv(tmp_path / "planned" / "jobs.csv")["unit_key"]) == done[1:]
