"""Whole-study benchmark (issue 7b's third target): one 8-task group, 8 experts + 5 methods,
100 eval rows per task scored by label log-likelihood, on a random Llama/Mistral-shaped model.

    .venv/bin/python bench/bench_study.py                      # small model (CPU-sized)
    .venv/bin/python bench/bench_study.py --size mistral-7b    # Mistral-7B shape, needs a GPU

Writes a real study to a temporary folder — base model folder (safetensors) with a word-level
tokenizer, 8 PEFT LoRA adapter folders (r=16 on q, k, v), 8 jsonl tasks — and runs it with
``mergelab``'s runner exactly as ``mergelab run`` does. Prints, in one run on one device:

1. the study: units, wall time, and seconds per unit kind (experts, hidden states, merges);
2. label scoring of one task by MergeLab (rows batched and left-padded, each prompt run once
   with its key/value cache repeated per label, logits only where used) vs the one-row-at-a-time
   loop MergeLab used before (kept below as the reference: a prompt's label sequences in one
   forward, full logits) — seconds, ratio, and whether both chose the same labels;
3. greedy generation (as for rougeL tasks), batched vs one row at a time — seconds, ratio, and
   whether the texts are the same.

Random weights measure speed only; the scores mean nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mergelab.storage.store import Store  # noqa: E402
from mergelab.study import (  # noqa: E402
    executors,
    planner,
    units,
)

SIZES = {
    "small": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    ),
    "mistral-7b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
    ),
}
TARGETS = ("q_proj", "k_proj", "v_proj")


def build_base(folder: Path, size: str, device: torch.device) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, MistralConfig, PreTrainedTokenizerFast

    shape = SIZES[size]
    cfg = MistralConfig(**shape, max_position_embeddings=4096)
    dtype = torch.bfloat16 if size == "mistral-7b" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    vocab = {"[PAD]": 0, "[UNK]": 1, "</s>": 2}
    vocab.update({f"w{i}": i + 3 for i in range(shape["vocab_size"] - 3)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    ).save_pretrained(folder)
    return shape


def build_adapter(folder: Path, base: Path, shape: dict, seed: int, rank: int = 16) -> None:
    """A PEFT LoRA folder in the on-disk layout PEFT writes (random A and B)."""
    g = torch.Generator().manual_seed(100 + seed)
    h, kv = shape["hidden_size"], shape["hidden_size"] // shape["num_attention_heads"] * shape["num_key_value_heads"]
    out_dim = {"q_proj": h, "k_proj": kv, "v_proj": kv}
    state = {}
    for layer in range(shape["num_hidden_layers"]):
        for m in TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{m}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(rank, h, generator=g) * 0.01
            state[f"{prefix}.lora_B.weight"] = torch.randn(out_dim[m], rank, generator=g) * 0.01
    folder.mkdir(parents=True)
    save_file(state, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": rank,
                "lora_alpha": 2 * rank,
                "target_modules": list(TARGETS),
                "base_model_name_or_path": str(base),
                "bias": "none",
                "fan_in_fan_out": False,
                "use_rslora": False,
                "lora_dropout": 0.0,
            }
        )
    )


def build_study(root: Path, size: str, device: torch.device, rows: int, n_tasks: int, words: int) -> Path:
    import yaml

    base = root / "base"
    shape = build_base(base, size, device)
    rng = random.Random(0)
    tasks, adapters = {}, {}
    for t in range(n_tasks):
        name = f"task{t}"
        labels = [f"w{10 * t + j}" for j in range(2 + t % 3)]  # 2–4 labels
        lines = []
        for i in range(rows + 5):
            n_words = rng.randint(words // 2, words)
            text = " ".join(f"w{rng.randrange(100, shape['vocab_size'] - 3)}" for _ in range(n_words))
            lines.append(
                json.dumps({"text": text, "label": labels[i % len(labels)], "split": "probe" if i < 5 else "eval"})
            )
        path = root / "data" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        tasks[name] = {"data": f"data/{name}.jsonl", "labels": labels, "template": "{text} w3 w4"}
        build_adapter(root / "adapters" / name, base, shape, t)
        adapters[name] = f"adapters/{name}"
    spec = {
        "name": f"bench-{size}",
        "base": str(base),
        "architecture": "causal",
        "adapters": adapters,
        "tasks": tasks,
        "groups": {"g": list(tasks)},
        "hidden": {"k": 5},
        "eval_limit": rows,
        "batch_size": 32,
    }
    out = root / "study.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


@torch.no_grad()
def per_row_label_scoring(run, task) -> list[int]:
    """The reference: MergeLab's label scoring before batching over rows (one forward per row,
    right padding, full logits)."""
    preds = []
    for row in task.eval_rows:
        prompt = task.prompt(row)
        p_len = len(run.tokenizer(prompt)["input_ids"])
        enc = run.tokenizer(
            [prompt + " " + lab for lab in task.spec.labels], return_tensors="pt", padding=True, padding_side="right"
        )
        enc = {k: v.to(run.device) for k, v in enc.items()}
        logp = torch.log_softmax(run.model(**enc).logits.float(), -1)
        tok_lp = logp[:, :-1].gather(-1, enc["input_ids"][:, 1:, None])[..., 0]
        mask = enc["attention_mask"][:, 1:].clone()
        mask[:, : max(p_len - 1, 0)] = 0
        preds.append(int((tok_lp * mask).sum(-1).argmax()))
    return preds


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rows", type=int, default=100, help="eval rows per task")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--words", type=int, default=48, help="longest prompt, in words (= tokens)")
    p.add_argument("--gen-rows", type=int, default=64, help="rows for the generation comparison")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--keep", help="build the study in this folder and keep it")
    args = p.parse_args()
    device = torch.device(args.device)
    root = Path(args.keep or tempfile.mkdtemp(prefix="mergelab-bench-study-"))
    t0 = time.perf_counter()
    spec_path = build_study(root, args.size, device, args.rows, args.tasks, args.words)
    print(
        f"# study benchmark — {time.strftime('%Y-%m-%d')} — device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", {torch.get_num_threads()} threads")
        + f" — {args.size} shape {SIZES[args.size]}, {args.tasks} tasks × {args.rows} rows, 8 LoRA r=16 "
        f"on q,k,v; built in {time.perf_counter() - t0:.1f} s"
    )

    store = Store(root / "bench.db")
    kinds: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}

    def on_event(ev):
        if ev["event"] == "start":
            started[ev["id"]] = time.perf_counter()
        elif ev["event"] in ("done", "failed"):
            kinds[ev["kind"]] += time.perf_counter() - started.pop(ev["id"])
            if ev["event"] == "failed":
                print("FAILED", ev["kind"], ev["error"], file=sys.stderr)

    t = time.perf_counter()
    spec, _ = planner.prepare(store, spec_path)
    out = executors.run_worker(store, spec.name, device=args.device, on_event=on_event)
    sync(device)
    wall = time.perf_counter() - t
    print(
        f"study: {out['done']} units done, {out['failed']} failed, {wall:.1f} s wall "
        f"(model load and data included); per unit kind: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(kinds.items()))
    )

    # label scoring, batched vs per row, on the same loaded model and task
    from mergelab.study.data import load_all

    ctx = units.StudyContext(spec, args.device)
    task = load_all(spec)[f"task{min(1, args.tasks - 1)}"]  # task1 has 3 labels
    run = ctx.model
    run.use_expert(task.name)
    times = {}
    preds = {}
    for name, fn in (("mergelab", run.classify), ("per-row", lambda d: per_row_label_scoring(run, d))):
        fn(task)  # warm-up
        sync(device)
        t = time.perf_counter()
        preds[name] = fn(task)
        sync(device)
        times[name] = time.perf_counter() - t
    same = sum(a == b for a, b in zip(preds["mergelab"], preds["per-row"]))
    print(
        f"label scoring, {len(task.eval_rows)} rows × {len(task.spec.labels)} labels: mergelab "
        f"{times['mergelab']:.3f} s, per-row loop {times['per-row']:.3f} s, ratio "
        f"{times['per-row'] / times['mergelab']:.1f}x; same choice on {same}/{len(task.eval_rows)} rows"
    )

    # greedy generation (rougeL tasks), batched vs one row at a time, same rows
    import dataclasses

    from mergelab.study.spec import TaskSpec

    gen_task = dataclasses.replace(
        task, spec=TaskSpec(data=task.spec.data, target_field="label", metric="rougeL", template=task.spec.template)
    )
    gen_task = dataclasses.replace(gen_task, eval_rows=gen_task.eval_rows[: args.gen_rows])
    outs = {}
    for name, size in (("mergelab", spec.batch_size), ("per-row", 1)):
        run.batch_size = size
        sync(device)
        t = time.perf_counter()
        outs[name] = run.generate(gen_task, max_new_tokens=args.new_tokens)
        sync(device)
        times[name] = time.perf_counter() - t
    run.batch_size = spec.batch_size
    same = sum(a == b for a, b in zip(outs["mergelab"], outs["per-row"]))
    print(
        f"generation, {len(gen_task.eval_rows)} rows × {args.new_tokens} new tokens: mergelab (batch "
        f"{spec.batch_size}) {times['mergelab']:.3f} s, one row at a time {times['per-row']:.3f} s, ratio "
        f"{times['per-row'] / times['mergelab']:.1f}x; same text on {same}/{len(gen_task.eval_rows)} rows"
    )


if __name__ == "__main__":
    main()
