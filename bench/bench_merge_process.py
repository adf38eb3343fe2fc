"""Merging 8 LoRA adapters as a user experiences it: whole processes, start to finish, at real
model shapes — MergeLab vs `mergekit-yaml` (base+adapter) vs a PEFT `add_weighted_adapter` script.

    .venv/bin/python bench/bench_merge_process.py --shape tiny|qwen2-0.5b|llama-1b|mistral-7b [--pairs 3]
        [--methods TA TIES] [--tools mergelab mergekit-yaml peft] [--dtype float32|bfloat16]

The base has the shape's real config with random weights (float32, or `--dtype bfloat16`); 8 rank-16
adapters on q, k, v, o (random A and B, float32, written as PEFT folders). Per method, the tools run
interleaved (ours, mergekit, PEFT, ours, …) --pairs times, each a fresh process that reads the base
and adapters from disk and writes a merged model folder. Reported: wall time and peak resident memory (GNU time), bytes
written (output folder plus mergekit's --lora-merge-cache), as median (min–max); and max |Δ| of the
merged weights against ours. PEFT's `ties` is TIES applied to the A and B factors separately — not
the TIES of ΔW that MergeLab and mergekit compute — so its output differs by design; PEFT's `cat`
is the exact sum of ΔW (the same maths as TA).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_merge import compare_outputs  # noqa: E402

# model configs of the real checkpoints (hub config.json values), random weights
SHAPES = {
    "tiny": (
        "llama",
        dict(
            vocab_size=1024,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=8,
        ),
    ),
    "qwen2-0.5b": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        ),
    ),
    "llama-1b": (
        "llama",
        dict(
            vocab_size=128256,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            tie_word_embeddings=True,
        ),
    ),
    "mistral-7b": (
        "mistral",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
        ),
    ),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
METHODS = {"TA": ("task_arithmetic", {}, "cat"), "TIES": ("ties", {"density": 0.2}, "ties")}

PEFT_SCRIPT = r"""
import os, sys, json
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base, out, combo, density, *adapters = sys.argv[1:]
model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=getattr(torch, os.environ.get("BENCH_DTYPE", "float32")))
names = [f"a{i}" for i in range(len(adapters))]
model = PeftModel.from_pretrained(model, adapters[0], adapter_name=names[0])
for n, a in zip(names[1:], adapters[1:]):
    model.load_adapter(a, adapter_name=n)
kw = {"density": float(density)} if combo == "ties" else {}
weights = [1.0] * len(names) if combo == "ties" else [1.0 / len(names)] * len(names)
model.add_weighted_adapter(names, weights, "merged", combination_type=combo, **kw)
model.set_adapter("merged")
model.merge_and_unload().save_pretrained(out)
"""


def build(shape: str, root: Path, dtype: str = "float32") -> tuple[Path, list[Path]]:
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    kind, cfg = SHAPES[shape]
    base = root / "base"
    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, **cfg)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=getattr(torch, dtype))
    model.save_pretrained(base)
    dims = {
        name: (mod.in_features, mod.out_features)
        for name, mod in model.named_modules()
        if name.rsplit(".", 1)[-1] in TARGETS
    }
    del model
    adapters = []
    for i in range(8):
        g = torch.Generator().manual_seed(100 + i)
        tensors = {}
        for name, (fan_in, fan_out) in dims.items():
            prefix = f"base_model.model.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(16, fan_in, generator=g) / fan_in**0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, 16, generator=g) * 0.01
        folder = root / f"adapter{i}"
        folder.mkdir()
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(
            json.dumps(
                {
                    "peft_type": "LORA",
                    "task_type": "CAUSAL_LM",
                    "r": 16,
                    "lora_alpha": 32,
                    "lora_dropout": 0.0,
                    "target_modules": TARGETS,
                    "bias": "none",
                    "fan_in_fan_out": False,
                    "base_model_name_or_path": str(base),
                }
            )
        )
        adapters.append(folder)
    return base, adapters


def timed(cmd: list[str], env=None) -> tuple[float, float, int]:
    """(wall s, peak RSS GB, exit code) of one whole process, measured by GNU time."""
    stats = Path(tempfile.mktemp(suffix=".time"))
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(stats), *cmd], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    rss = int(stats.read_text().strip().splitlines()[-1]) / 1024**2 if stats.exists() else float("nan")
    if proc.returncode:
        sys.stderr.write(f"{cmd[0]} failed: {proc.stderr[-400:]}\n")
    return wall, rss, proc.returncode


def folder_bytes(*paths: Path) -> int:
    return sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file())


def summary(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def main():
    import yaml

    from mergelab.merging.mergekit_bridge import mergekit_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="tiny")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--tools", nargs="+", default=["mergelab", "mergekit-yaml", "peft"])
    parser.add_argument("--work", help="folder for the base, adapters and outputs (default: a temp folder)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="the base's weights (bfloat16: a Mistral-7B shape fits in 24 GB); PEFT loads it in the same dtype",
    )
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix=f"mergelab-process-{args.shape}-"))
    t = time.perf_counter()
    base, adapters = build(args.shape, work, args.dtype)
    base_gb = folder_bytes(base) / 1e9
    print(
        f"# whole-process merge benchmark — {time.strftime('%Y-%m-%d')} — shape {args.shape} "
        f"(base {base_gb:.2f} GB {args.dtype}, built in {time.perf_counter() - t:.0f} s), 8 adapters r=16 on "
        f"{','.join(TARGETS)} — {os.cpu_count()} cores, torch {torch.__version__}, {args.pairs} interleaved pairs"
    )
    print("method,tool,wall_s,peak_rss_gb,written_gb,max_abs_diff_vs_mergelab,ok_runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_DTYPE": args.dtype}
    exe = Path(sys.executable).parent
    for label in args.methods:
        method, params, combo = METHODS[label]
        flags = [x for k, v in params.items() for x in (f"--{k}", str(v))]
        runs = {tool: [] for tool in args.tools}
        outs = {tool: work / f"out_{label}_{tool}" for tool in args.tools}
        cache = work / "mk_cache"
        cfg = work / f"mk_{label}.yaml"
        cfg.write_text(yaml.safe_dump(mergekit_config(str(base), [str(a) for a in adapters], method, params)))
        commands = {
            "mergelab": [
                sys.executable,
                "-m",
                "mergelab",
                "merge",
                "--base",
                str(base),
                "--adapters",
                *map(str, adapters),
                "--method",
                method,
                *flags,
                "--device",
                "cpu",
                "--out",
                str(outs.get("mergelab", work / "x")),
            ],
            "mergekit-yaml": [
                str(exe / "mergekit-yaml"),
                str(cfg),
                str(outs.get("mergekit-yaml", work / "x")),
                "--lora-merge-cache",
                str(cache),
                "--no-copy-tokenizer",
                "--random-seed",
                "0",
            ],
            "peft": [
                sys.executable,
                "-c",
                PEFT_SCRIPT,
                str(base),
                str(outs.get("peft", work / "x")),
                combo,
                str(params.get("density", 1.0)),
                *map(str, adapters),
            ],
        }
        for _ in range(args.pairs):
            for tool in args.tools:
                shutil.rmtree(outs[tool], ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
                wall, rss, code = timed(commands[tool], env)
                written = folder_bytes(outs[tool], cache) / 1e9
                runs[tool].append((wall, rss, written, code))
        for tool in args.tools:
            ok = [r for r in runs[tool] if r[3] == 0]
            diff = "—"
            if tool != "mergelab" and ok and outs[tool].exists() and outs["mergelab"].exists():
                diff = f"{compare_outputs(outs['mergelab'], outs[tool]):.2e}"
            if not ok:
                print(f"{label},{tool},failed,—,—,—,0/{len(runs[tool])}", flush=True)
                continue
            print(
                f"{label},{tool},{summary([r[0] for r in ok], '.1f')},{summary([r[1] for r in ok], '.2f')},"
                f"{summary([r[2] for r in ok], '.2f')},{diff},{len(ok)}/{len(runs[tool])}",
                flush=True,
            )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
