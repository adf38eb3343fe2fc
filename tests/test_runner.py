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

from mergelab.storage import jobs
from mergelab.storage.store import Store
from mergelab.study import executors, planner
from mergelab.study.errors import SpecError
from mergelab.study.spec import parse_spec
from mergelab.study.units import StudyContext

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
    rep = subprocess.run(
        [*MERGELAB, "report", str(study), "--db", str(db), "--format", "json"], capture_output=True, text=True
    )
    assert rep.returncode == 0, rep.stderr
    out = json.loads(rep.stdout)
    assert len(out["experts"]) == 3 and len(out["losses"]) == 6
    assert {r["method"] for r in out["losses"]} == {"LA", "TIES"}
    for r in out["losses"]:
        assert r["loss"] == pytest.approx((r["score"] / r["expert_score"] - 1) * 100)
    sim = out["hiddensim:g"]
    assert [row[row["task"]] for row in sim] == [1.0, 1.0, 1.0]
    assert all(m["mds"] >= 1 for m in out["mds_vs_best_loss:g"])
    # the preregistered tests are reported with a verdict each, even where they cannot run (one group)
    verdicts = {(r["hypothesis"], r["verdict"]) for r in out["hypotheses"]}
    assert ("H1", "not measured") in verdicts and ("H3", "not measured") in verdicts
    md = subprocess.run(
        [*MERGELAB, "report", str(study), "--db", str(db), "--format", "markdown"], capture_output=True, text=True
    )
    assert md.returncode == 0, md.stderr
    assert "## The paper's claims, tested" in md.stdout and "**H1** — MDS predicts" in md.stdout
    assert "| group" in md.stdout  # Table 5, as a Markdown table
    assert len(store.pair_metrics("tiny")) == 3 * 4
    merged = store.results("tiny").query("method != 'expert'")  # LA and TIES with default params: own hashes
    assert merged.groupby("method")["params_hash"].nunique().to_dict() == {"LA": 1, "TIES": 1}
    assert merged["params_hash"].nunique() == 2
    # a second run finds every unit done and recomputes nothing
    again = subprocess.run([*MERGELAB, "run", str(study), "--db", str(db)], capture_output=True, text=True)
    assert again.returncode == 0 and "0 new units" in again.stderr and "ran 0 units" in again.stderr
    # --recompute runs every unit again and replaces (never duplicates) the results
    n_results = len(store.results("tiny"))
    redo = subprocess.run(
        [*MERGELAB, "run", str(study), "--db", str(db), "--recompute"], capture_output=True, text=True
    )
    assert redo.returncode == 0 and "15 units queued again" in redo.stderr and "ran 15 units" in redo.stderr
    assert _counts(store) == {"done": 15}
    assert len(store.results("tiny")) == n_results


def test_kill_mid_run_then_resume_redoes_nothing(study, tmp_path):
    db = tmp_path / "k.db"
    store = Store(db)
    planner.prepare(store, study)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "0.6"}
    proc = subprocess.Popen(
        [*MERGELAB, "worker", "--db", str(db)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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
    rows_before = store.results("tiny")
    time.sleep(1.2)
    out = executors.run_worker(store, "tiny", stale_after=1.0)
    after = jobs.jobs_frame(store, "tiny").set_index("id")
    assert (after.status == "done").all()
    assert out["done"] == 15 - len(done_before)
    # zero finished units recomputed: one attempt each, rows untouched
    assert (after.loc[done_before["id"], "attempts"] == 1).all()
    rows_after = store.results("tiny")
    kept = rows_after.merge(rows_before, on=list(rows_before.columns))
    assert len(kept) == len(rows_before)
    assert len(rows_after) == 3 + 6


def test_two_workers_never_run_the_same_unit(study, tmp_path):
    db = tmp_path / "c.db"
    store = Store(db)
    planner.prepare(store, study)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "0.2"}
    procs = [
        subprocess.Popen(
            [*MERGELAB, "worker", "--db", str(db)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
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
    from mergelab.study.data import load_all

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
    res = subprocess.run(
        [*MERGELAB, "run", str(yaml_path), "--db", str(other)], capture_output=True, text=True, cwd=study.parent
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "adapter 'task2' was trained on base" in res.stderr
    assert jobs.status_counts(Store(other), "tiny") == {}


def test_causal_study_label_scoring_and_rouge(tmp_path):
    """Causal LMs: classification by label log-likelihood, generation scored with rougeL."""
    from mergelab.analysis import views

    from tinymodels import make_tiny_causal_study, run_study

    run_study(store := Store(tmp_path / "c.db"), make_tiny_causal_study(tmp_path), "tiny-causal")
    experts = views.expert_table(store, "tiny-causal").set_index("task")
    assert list(experts["metric"]) == ["accuracy", "accuracy", "rougeL"]
    assert experts["score"].between(0, 100).all()
    losses = views.loss_table(store, "tiny-causal")
    assert len(losses) == 2 * 3 and set(losses["method"]) == {"TIES", "SLERP"}
    assert len(views.theory(store, "tiny-causal", "g")) == 2


def _varied_lengths(rows: list[dict]) -> list[dict]:
    """Rows whose prompts have 1, 2 or 3 words, so that batches need padding."""
    return [{**r, "text": " ".join(r["text"].split()[: 1 + i % 3])} for i, r in enumerate(rows)]


def _direct_label_scores(base, model_state, data, architecture="causal"):
    """Σ log p of each label's tokens, each (prompt, label) computed alone and unpadded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    cls = AutoModelForSeq2SeqLM if architecture == "seq2seq" else AutoModelForCausalLM
    model = cls.from_pretrained(base).eval()
    model.load_state_dict({k: v.to(model.dtype) for k, v in model_state.items()})
    table = []
    for row in data.eval_rows:
        prompt = data.prompt(row)
        n = len(tok(prompt)["input_ids"])
        scores = []
        for label in data.spec.labels:
            with torch.no_grad():
                if architecture == "seq2seq":
                    target = tok(label, return_tensors="pt")["input_ids"]
                    logits = model(**tok(prompt, return_tensors="pt"), labels=target).logits[0]
                    scores.append(
                        sum(torch.log_softmax(logits, -1)[i, target[0, i]].item() for i in range(target.shape[1]))
                    )
                    continue
                ids = tok(prompt + " " + label, return_tensors="pt")["input_ids"]
                logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
            scores.append(sum(logp[i - 1, ids[0, i]].item() for i in range(n, ids.shape[1])))
        table.append(scores)
    return torch.tensor(table)


def _check_label_scores(run, data, base, architecture="causal"):
    import torch

    direct = _direct_label_scores(base, run.model.state_dict(), data, architecture)
    torch.testing.assert_close(run.label_scores(data), direct, atol=1e-4, rtol=1e-4)
    assert run.classify(data) == direct.argmax(-1).tolist()


MULTI_TOKEN_LABELS = ["no", "yes river", "stone cloud music", "paper"]


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_label_scoring_equals_a_direct_computation(tmp_path, batch_size):
    """Causal label scoring (an expert of a tiny Llama) against a direct, unbatched computation:
    labels of 1–3 tokens, prompts of 1–3 words, batch sizes that split rows every way."""
    import dataclasses

    import torch

    from mergelab.io.adapters import load_adapter_set
    from mergelab.models.loaded import LoadedModel as ModelRunner
    from mergelab.study.data import load_all

    from tinymodels import make_tiny_causal_study

    spec = parse_spec(make_tiny_causal_study(tmp_path))
    data = load_all(spec)["c0"]
    data = dataclasses.replace(
        data,
        spec=data.spec.model_copy(update={"labels": MULTI_TOKEN_LABELS}),
        eval_rows=_varied_lengths(data.eval_rows),
    )
    aset = load_adapter_set(spec.base, spec.adapters)
    run = ModelRunner(aset, "causal", torch.device("cpu"), batch_size=batch_size)
    run.use_expert("c0")
    _check_label_scores(run, data, spec.base)


def test_label_scoring_with_absolute_positions(tmp_path):
    """GPT-2 has learned absolute positions, so left padding without position ids would shift
    every padded sequence (RoPE models are shift-invariant and cannot show this)."""
    import types

    import torch

    from mergelab.models.loaded import LoadedModel as ModelRunner
    from mergelab.study.data import TaskData
    from mergelab.study.spec import TaskSpec

    from tinymodels import WORDS, add_word_tokenizer, make_causal_base

    base = add_word_tokenizer(make_causal_base(tmp_path / "gpt2", "gpt2", seed=3))
    no_adapters = types.SimpleNamespace(base=types.SimpleNamespace(folder=base), module_keys={})
    rows = [{"text": " ".join(WORDS[i % 7 : i % 7 + 1 + i % 4]), "label": "no"} for i in range(12)]
    spec = TaskSpec(data="unused.jsonl", labels=MULTI_TOKEN_LABELS, template="{text} ? answer :")
    run = ModelRunner(no_adapters, "causal", torch.device("cpu"), batch_size=8)
    _check_label_scores(run, TaskData("t", spec, rows, []), base)


def test_seq2seq_label_scoring_equals_a_direct_computation(tmp_path):
    import dataclasses

    import torch

    from mergelab.io.adapters import load_adapter_set
    from mergelab.models.loaded import LoadedModel as ModelRunner
    from mergelab.study.data import load_all

    from tinymodels import make_tiny_causal_study

    spec = parse_spec(make_tiny_causal_study(tmp_path, "seq2seq"))
    data = load_all(spec)["c1"]
    data = dataclasses.replace(
        data,
        spec=data.spec.model_copy(update={"labels": MULTI_TOKEN_LABELS}),
        eval_rows=_varied_lengths(data.eval_rows),
    )
    aset = load_adapter_set(spec.base, spec.adapters)
    run = ModelRunner(aset, "seq2seq", torch.device("cpu"), batch_size=3)
    run.use_expert("c1")
    _check_label_scores(run, data, spec.base, "seq2seq")


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_batched_generation_equals_one_row_at_a_time(tmp_path, architecture):
    """Left padding (decoder-only) must not change what greedy decoding produces."""
    import dataclasses

    import torch

    from mergelab.io.adapters import load_adapter_set
    from mergelab.models.loaded import LoadedModel as ModelRunner
    from mergelab.study.data import load_all

    from tinymodels import make_tiny_causal_study

    spec = parse_spec(make_tiny_causal_study(tmp_path, architecture))
    data = load_all(spec)["c2"]
    data = dataclasses.replace(
        data, eval_rows=_varied_lengths(data.eval_rows), spec=data.spec.model_copy(update={"max_new_tokens": 6})
    )
    aset = load_adapter_set(spec.base, spec.adapters)
    runners = []
    for size in (8, 1):
        run = ModelRunner(aset, architecture, torch.device("cpu"), batch_size=size)
        run.use_expert("c2")
        # compare token ids: the random tiny models emit ids the word-level vocabulary cannot spell
        special = set(run.tokenizer.all_special_ids)
        run.tokenizer.batch_decode = lambda ids, special=special, **_: [
            " ".join(str(i) for i in row.tolist() if i not in special) for row in ids
        ]
        runners.append(run)
    batched, one = runners
    assert len({len(batched.tokenizer(data.prompt(r))["input_ids"]) for r in data.eval_rows}) == 3
    out = batched.generate(data)
    assert out == one.generate(data)
    assert len(out) == len(data.eval_rows) and any(out)
    assert max(len(text.split()) for text in out) <= 6 and any(len(text.split()) > 2 for text in out)


def test_unit_keys_do_not_depend_on_where_the_study_lives(study, tmp_path):
    """Shipped results stay 'done' in any checkout: keys see file contents, not paths."""
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(study.parent, copy, ignore=shutil.ignore_patterns("*.db*", "states"))
    keys = lambda path: sorted(u["unit_key"] for u in planner.plan_units(parse_spec(path)))
    assert keys(study) == keys(copy / "study.yaml")
    data = copy / "data" / "task0.jsonl"
    data.write_text(data.read_text().replace('"no"', '"yes"', 1))
    changed = set(keys(copy / "study.yaml")) - set(keys(study))
    assert changed and all(":expert:" in k or ":states:" in k or ":merge:" in k or ":mstates:" in k for k in changed)


def test_worker_picks_up_a_group_added_while_it_runs(study, tmp_path):
    """A swap queued from the dashboard while a worker is busy must not fail on a stale spec."""
    store = Store(tmp_path / "g.db")
    planner.prepare(store, study)
    added = {}

    def on_event(ev):
        if ev["event"] == "done" and not added:
            added.update(planner.add_group(store, "tiny", "pair", ["task0", "task1"]))

    out = executors.run_worker(store, "tiny", on_event=on_event)
    frame = jobs.jobs_frame(store, "tiny")
    assert added["new"] == 2 * 2 + 2  # 2 methods × 2 tasks merged, plus 2 merged-state units
    assert out == {"done": 15 + added["new"], "failed": 0}, frame[frame.status == "failed"]["error"].tolist()


def test_bfloat16_evaluation(tmp_path):
    """dtype: bfloat16 loads the base in bf16, adds ΔW in float32 and rounds once, and gets its
    own unit keys (a float32 result is not a bf16 result); 'auto' keeps the keys it had."""
    import torch

    from mergelab.io.adapters import load_adapter_set
    from mergelab.models.loaded import LoadedModel as ModelRunner
    from mergelab.study.data import load_all

    from tinymodels import make_tiny_causal_study

    path = make_tiny_causal_study(tmp_path)
    spec = parse_spec(path)
    aset = load_adapter_set(spec.base, spec.adapters)
    run = ModelRunner(aset, "causal", torch.device("cpu"), batch_size=4, dtype="bfloat16")
    key, param = next(iter(run._param.items()))
    assert param.dtype == torch.bfloat16
    run.use_expert("c1")
    module = next(m for m, k in aset.module_keys.items() if k == key)
    delta = aset.adapters[aset.names.index("c1")].delta(module)
    assert torch.equal(param, (run._original[key].float() + delta.float()).to(torch.bfloat16))
    data = load_all(spec)
    assert len(run.classify(data["c0"])) == len(data["c0"].eval_rows)
    assert run.hidden_states(["apple river"])["mean"].dtype == torch.float32
    keys = lambda s: {u["unit_key"] for u in planner.plan_units(s)}
    assert keys(spec) == keys(spec.model_copy(update={"dtype": "auto"}))
    assert not keys(spec) & keys(spec.model_copy(update={"dtype": "bfloat16"}))


def test_a_worker_context_follows_edited_data_and_retrained_adapters(study, tmp_path):
    """Unit keys hash contents; a long-lived worker must too: an edited data file's new units
    see the new rows, and an adapter retrained in place (same path) reloads the model."""
    import shutil

    from mergelab.study.spec import parse_spec

    from tinymodels import make_lora, minilm_path

    copy = tmp_path / "copy"
    shutil.copytree(study.parent, copy, ignore=shutil.ignore_patterns("*.db*", "states"))
    spec = parse_spec(copy / "study.yaml")
    ctx = StudyContext(spec)
    data = copy / "data" / "task0.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({**r, "text": r["text"] + " edited"}) + "\n" for r in rows))
    assert ctx.refresh(parse_spec(copy / "study.yaml"))
    assert all(r["text"].endswith(" edited") for r in ctx.data["task0"].eval_rows)
    shutil.rmtree(copy / "adapters" / "task1")
    make_lora(minilm_path(), copy / "adapters" / "task1", 99, kind="classifier", num_labels=2, scale=0.2)
    assert not ctx.refresh(parse_spec(copy / "study.yaml"))


def test_a_spec_that_only_adds_units_extends_the_stored_study(study, tmp_path):
    """A preregistered study scores experts and base first (admission), then adds its groups:
    the second spec plans every unit of the first and more, so the stored study is extended —
    finished units are kept, not recomputed — without --replace. A spec that changes a planned
    unit is still refused, naming the difference, and loses nothing."""
    data = _spec(study)
    names = list(data["groups"]["g"])
    pool_only = study.parent / "pool.yaml"
    pool_only.write_text(yaml.safe_dump({**data, "groups": {}, "pool": names}))
    db = tmp_path / "x.db"
    store = Store(db)
    planner.prepare(store, pool_only)
    assert executors.run_worker(store, "tiny")["failed"] == 0
    before = jobs.jobs_frame(store, "tiny").set_index("unit_key")
    rows_before = store.results("tiny")
    assert set(rows_before["method"]) == {"expert"}

    grouped = study.parent / "grouped.yaml"
    grouped.write_text(yaml.safe_dump({**data, "pool": []}))
    _, counts = planner.prepare(store, grouped)  # no --replace needed: nothing planned before changes
    assert counts["new"] > 0
    frame = jobs.jobs_frame(store, "tiny").set_index("unit_key")
    assert (frame.loc[before.index, "status"] == "done").all()
    assert executors.run_worker(store, "tiny")["failed"] == 0
    after = jobs.jobs_frame(store, "tiny").set_index("unit_key")
    assert (after.loc[before.index, "attempts"] == 1).all()  # zero finished units recomputed
    kept = store.results("tiny").merge(rows_before, on=list(rows_before.columns))
    assert len(kept) == len(rows_before)
    assert store.groups("tiny") == {"g": names}

    changed = study.parent / "changed.yaml"
    changed.write_text(yaml.safe_dump({**data, "pool": [], "methods": {"LA": {}, "TIES": {"density": 0.5}}}))
    with pytest.raises(ValueError, match="another spec.*methods"):
        planner.prepare(store, changed)
    assert len(store.results("tiny")) == len(store.results("tiny").drop_duplicates())
    assert (jobs.jobs_frame(store, "tiny").status == "done").all()
