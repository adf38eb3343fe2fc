"""Every bad input gets one clear error naming what is wrong (engine and CLI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mergelab.io.adapters import load_adapter, load_adapter_set, resolve_dir
from mergelab.io.errors import LoadError

from tinymodels import make_causal_base, make_lora


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    base = make_causal_base(root / "base", "llama")
    other = make_causal_base(root / "other-base", "qwen2", seed=3)
    good = [make_lora(base, root / f"good{i}", i) for i in range(2)]
    return root, base, other, good


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_adapter_of_another_base(env, tmp_path):
    _root, base, other, good = env
    foreign = make_lora(other, tmp_path / "foreign", 5)
    with pytest.raises(LoadError, match=r"'foreign' was trained on base .*other-base"):
        load_adapter_set(base, {"good": good[0], "foreign": foreign})


def test_adapter_of_another_base_same_name_caught_by_shape(env, tmp_path):
    _root, base, _other, good = env
    wide = tmp_path / "wide-base" / "base"
    from transformers import AutoModelForCausalLM, LlamaConfig

    AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=96,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).save_pretrained(wide)
    odd = make_lora(wide, tmp_path / "odd", 1)
    with pytest.raises(LoadError, match=r"'odd', module .*q_proj: its ΔW would be \(48, 48\)"):
        load_adapter_set(base, {"good": good[0], "odd": odd})


def test_mismatched_target_modules(env, tmp_path):
    _root, base, _other, good = env
    qkv = make_lora(base, tmp_path / "qkv", 7, targets=["q_proj", "k_proj", "v_proj"])
    with pytest.raises(LoadError, match=r"'qkv' targets different modules.*k_proj"):
        load_adapter_set(base, {"good0": good[0], "qkv": qkv})


def test_different_ranks_are_fine_for_task_vectors(env, tmp_path):
    _root, base, _other, good = env
    r8 = make_lora(base, tmp_path / "r8", 8, r=8)
    aset = load_adapter_set(base, {"r4": good[0], "r8": r8})
    assert {a.rank(a.modules[0]) for a in aset.adapters} == {4, 8}


def test_corrupted_safetensors(env, tmp_path):
    _root, base, _other, good = env
    bad = _copy(good[1], tmp_path / "corrupt")
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError, match=r"'corrupt'.*corrupted or not safetensors"):
        load_adapter_set(base, {"good": good[0], "corrupt": bad})


def test_nan_in_a_delta(env, tmp_path):
    _root, base, _other, good = env
    bad = _copy(good[1], tmp_path / "nan")
    state = load_file(bad / "adapter_model.safetensors")
    key = next(k for k in state if "lora_B" in k)
    state[key][0, 0] = float("nan")
    save_file(state, bad / "adapter_model.safetensors")
    with pytest.raises(LoadError, match=r"'nan', module .*NaN or infinite"):
        load_adapter_set(base, {"good": good[0], "nan": bad})


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_adapters(env, count):
    _root, base, _other, good = env
    with pytest.raises(LoadError, match=f"at least 2 adapters, got {count}"):
        load_adapter_set(base, {f"a{i}": good[i] for i in range(count)})


def test_pickle_only_adapter_refused_unless_opted_in(env, tmp_path):
    _root, _base, _other, good = env
    bad = _copy(good[1], tmp_path / "pickled")
    state = load_file(bad / "adapter_model.safetensors")
    (bad / "adapter_model.safetensors").unlink()
    torch.save(state, bad / "adapter_model.bin")
    with pytest.raises(LoadError, match="pickle"):
        load_adapter(bad)
    assert load_adapter(bad, allow_pickle=True).modules


def test_dora_refused(env, tmp_path):
    _root, _base, _other, good = env
    bad = _copy(good[1], tmp_path / "dora")
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="DoRA"):
        load_adapter(bad)


def test_missing_folder_and_offline_hub_id(env):
    with pytest.raises(LoadError, match="does not exist"):
        resolve_dir("./no/such/folder", what="adapter")
    with pytest.raises(LoadError, match="could not be fetched from the Hugging Face hub"):
        resolve_dir("someone/some-adapter", what="adapter")


def test_cli_reports_errors_without_traceback(env, tmp_path):
    _root, base, _other, good = env
    run = lambda *a: subprocess.run([sys.executable, "-m", "mergelab", *a], capture_output=True, text=True)
    res = run("merge", "--base", str(base), "--adapters", str(good[0]), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "at least 2 adapters" in res.stderr
    assert "Traceback" not in res.stderr
    res = run(
        "merge",
        "--base",
        str(base),
        "--adapters",
        *map(str, good),
        "--method",
        "ties",
        "--t",
        "0.3",
        "--out",
        str(tmp_path / "o"),
    )
    assert res.returncode == 2 and "does not take --t" in res.stderr
    res = run(
        "merge",
        "--base",
        str(base),
        "--adapters",
        *map(str, good),
        "--method",
        "ties",
        "--density",
        "0.3",
        "--out",
        str(tmp_path / "o"),
        "--device",
        "cuda",
    )
    if not torch.cuda.is_available():
        assert res.returncode == 2 and "no CUDA GPU" in res.stderr
    res = run(
        "merge",
        "--base",
        str(base),
        "--adapters",
        *map(str, good),
        "--method",
        "TIES",
        "--density",
        "0.3",
        "--out",
        str(tmp_path / "merged"),
        "--device",
        "cpu",
    )
    assert res.returncode == 0, res.stderr
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").config.hidden_size == 32
    res = run(
        "merge",
        "--base",
        str(base),
        "--adapters",
        *map(str, good),
        "--method",
        "linear",
        "--format",
        "adapter",
        "--rank",
        "8",
        "--out",
        str(tmp_path / "ad"),
    )
    assert res.returncode == 0 and "reconstruction error" in res.stdout
