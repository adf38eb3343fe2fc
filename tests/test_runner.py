"""Study runner end to end on a tiny MiniLM study: run, report, resume after kill -9, two
workers at once, and bad specs rejected before any model work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from mergelab import jobs, runner
from mergelab.spec import SpecError, parse_spec
from mergelab.store import Store

from tinymodels import make_tiny_study

MERGELAB = [sys.executable, "-m", "mergelab"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_tiny_study(tmp_path_factory.mktemp("study"))


def _counts(store, study_id="tiny"):
    return jobs.jobs_frame(store, study_id)["status"].value_counts().to_dict()


def test_run_and_report_end_to_end(study, tmp_path):
    db = tmp_path / "m.db"
    res = subprocess.run([*MERGELAB, "run", str(study), "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ran 15 units (0 failed)" in res.stderr
    store = Store(db)
    assert _counts(store) == {"done": 15}
    rep = subprocess.run([*MERGELAB, "report", str(study), "--db", str(db), "--format", "json"],
                         capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    out = json.loads(rep.stdout)
    assert len(out["experts"]) == 3 and len(out["losses"]) == 6
    assert {r["method"] for r in out["losses"]} == {"LA", "TIES"}
    for r in out["losses"]:
        assert r["loss"] == pytest.approx((r["score"] / r["expert_score"] - 1) * 100)
    sim = out["hiddensim:g"]
    assert [row[row["task"]] for row in sim] == [1.0, 1.0, 1.0]
    assert all(m["mds"] >= 1 for m in out["mds:g"])
    assert len(store.pair_metrics("tiny")) == 3 * 4
    runs = store.query("SELECT method, params FROM runs WHERE study_id='tiny' ORDER BY method")
    assert list(runs["method"]) == ["LA", "TIES"]
    # a second run finds every unit done and recomputes nothing
    again = subprocess.run([*MERGELAB, "run", str(study), "--db", str(db)], capture_output=True, text=True)
    assert again.returncode == 0 and "0 new units" in again.stderr and "ran 0 units" in again.stderr


def test_kill_mid_run_then_resume_redoes_nothing(study, tmp_path):
    db = tmp_path / "k.db"
    store = Store(db)
    runner.prepare(store, study)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "0.6"}
    proc = subprocess.Popen([*MERGELAB, "worker", "--db", str(db)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and _counts(store).get("done", 0) < 4:
        time.sleep(0.05)
    # now inside a unit (every unit sleeps 0.6 s before it writes): kill without warning
    while time.time() < deadline and _counts(store).get("running", 0) == 0:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = jobs.jobs_frame(store, "tiny")
    done_before = before[before.status == "done"]
    assert len(done_before) >= 4 and (before.status == "running").sum() == 1
    rows_before = store.query("SELECT * FROM results WHERE study_id='tiny'")
    time.sleep(1.2)
    out = runner.run_worker(store, "tiny", stale_after=1.0)
    after = jobs.jobs_frame(store, "tiny").set_index("id")
    assert (after.status == "done").all()
    assert out["done"] == 15 - len(done_before)
    # zero finished units recomputed: one attempt each, rows untouched
    assert (after.loc[done_before["id"], "attempts"] == 1).all()
    rows_after = store.query("SELECT * FROM results WHERE study_id='tiny'")
    kept = rows_after.merge(rows_before, on=list(rows_before.columns))
    assert len(kept) == len(rows_before)
    assert len(rows_after) == 3 + 6


def test_two_workers_never_run_the_same_unit(study, tmp_path):
    db = tmp_path / "c.db"
    store = Store(db)
    runner.prepare(store, study)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "0.2"}
    procs = [subprocess.Popen([*MERGELAB, "worker", "--db", str(db)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    frame = jobs.jobs_frame(store, "tiny")
    assert (frame.status == "done").all() and (frame.attempts == 1).all()
    assert frame.worker.nunique() == 2


def _spec(study, **change):
    data = yaml.safe_load(study.read_text())
    for key, value in change.items():
        data[key] = value
    return data


def test_bad_specs_fail_clearly_before_model_work(study, tmp_path):
    root = study.parent
    with pytest.raises(SpecError, match="groups: unknown task 'nope'"):
        parse_spec(_spec(study, groups={"g": ["task0", "nope"]}), root)
    with pytest.raises(SpecError, match=r"tasks.task0.data: file .*missing.jsonl does not exist"):
        bad = _spec(study)
        bad["tasks"]["task0"]["data"] = "data/missing.jsonl"
        parse_spec(bad, root)
    with pytest.raises(SpecError, match="methods.TIES: TIES: density = 2.0 is outside"):
        parse_spec(_spec(study, methods={"TIES": {"density": 2.0}}), root)
    with pytest.raises(SpecError, match="hidden.k"):
        parse_spec(_spec(study, hidden={"k": 0}), root)
    from mergelab.data import load_all

    spec = parse_spec(_spec(study, hidden={"k": 50}), root)
    with pytest.raises(SpecError, match="hidden.k = 50 but only 4 probe rows"):
        load_all(spec)
    bad = _spec(study)
    bad["tasks"]["task1"]["labels"] = ["no", "maybe"]
    with pytest.raises(SpecError, match=r"labels \['yes'\] are outside the label set"):
        load_all(parse_spec(bad, root))
    # an adapter that does not match the base: prepare fails before any unit is queued
    other = tmp_path / "store.db"
    bad = _spec(study)
    from tinymodels import make_causal_base, make_lora

    llama = make_causal_base(tmp_path / "llama")
    bad["adapters"]["task2"] = str(make_lora(llama, tmp_path / "llama-adapter", 0))
    yaml_path = study.parent / "bad.yaml"
    yaml_path.write_text(yaml.safe_dump(bad))
    res = subprocess.run([*MERGELAB, "run", str(yaml_path), "--db", str(other)],
                         capture_output=True, text=True, cwd=study.parent)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "adapter 'task2' was trained on base" in res.stderr
    assert Store(other).query("SELECT COUNT(*) AS n FROM jobs WHERE study_id='tiny'")["n"].item() == 0


def test_causal_study_label_scoring_and_rouge(tmp_path):
    """Causal LMs: classification by label log-likelihood, generation scored with rougeL."""
    from mergelab import results

    from tinymodels import make_tiny_causal_study

    spec_path = make_tiny_causal_study(tmp_path)
    store = Store(tmp_path / "c.db")
    runner.prepare(store, spec_path)
    out = runner.run_worker(store, "tiny-causal")
    frame = jobs.jobs_frame(store, "tiny-causal")
    assert out["failed"] == 0, frame[frame.status == "failed"]["error"].tolist()
    experts = results.expert_table(store, "tiny-causal").set_index("task")
    assert list(experts["metric"]) == ["accuracy", "accuracy", "rougeL"]
    assert experts["score"].between(0, 100).all()
    losses = results.loss_table(store, "tiny-causal")
    assert len(losses) == 2 * 3 and set(losses["method"]) == {"TIES", "SLERP"}
    assert len(results.theory(store, "tiny-causal", "g")) == 2


def test_label_scoring_picks_the_likeliest_label(tmp_path):
    """Independent check of causal label scoring against a direct log-likelihood computation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergelab.data import load_all
    from mergelab.loading import load_adapter_set
    from mergelab.runtime import ModelRunner

    from tinymodels import make_tiny_causal_study

    spec = parse_spec(make_tiny_causal_study(tmp_path))
    data = load_all(spec)["c0"]
    aset = load_adapter_set(spec.base, spec.adapters)
    run = ModelRunner(aset, "causal", torch.device("cpu"), batch_size=4)
    preds = run.classify(data)
    tok = AutoTokenizer.from_pretrained(spec.base)
    model = AutoModelForCausalLM.from_pretrained(spec.base).eval()
    for row, pred in zip(data.eval_rows, preds):
        prompt = data.prompt(row)
        n = len(tok(prompt)["input_ids"])
        scores = []
        for label in data.spec.labels:
            ids = tok(prompt + " " + label, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
            scores.append(sum(logp[i - 1, ids[0, i]].item() for i in range(n, ids.shape[1])))
        assert pred == int(torch.tensor(scores).argmax())


def test_unit_keys_do_not_depend_on_where_the_study_lives(study, tmp_path):
    """Shipped results stay 'done' in any checkout: keys see file contents, not paths."""
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(study.parent, copy, ignore=shutil.ignore_patterns("*.db*", "states"))
    keys = lambda path: sorted(u["unit_key"] for u in runner.plan_units(parse_spec(path)))
    assert keys(study) == keys(copy / "study.yaml")
    data = copy / "data" / "task0.jsonl"
    data.write_text(data.read_text().replace('"no"', '"yes"', 1))
    changed = set(keys(copy / "study.yaml")) - set(keys(study))
    assert changed and all(":expert:" in k or ":states:" in k or ":merge:" in k or ":mstates:" in k
                           for k in changed)


def test_worker_picks_up_a_group_added_while_it_runs(study, tmp_path):
    """A swap queued from the dashboard while a worker is busy must not fail on a stale spec."""
    store = Store(tmp_path / "g.db")
    runner.prepare(store, study)
    added = {}

    def on_event(ev):
        if ev["event"] == "done" and not added:
            added.update(runner.add_group(store, "tiny", "pair", ["task0", "task1"]))

    out = runner.run_worker(store, "tiny", on_event=on_event)
    frame = jobs.jobs_frame(store, "tiny")
    assert added["new"] == 2 * 2 + 2  # 2 methods × 2 tasks merged, plus 2 merged-state units
    assert out == {"done": 15 + added["new"], "failed": 0}, frame[frame.status == "failed"]["error"].tolist()
