"""An expert and 8 merges scored on one lm-eval task: MergeLab (one process, the base loaded once,
each merge computed and swapped in place) against lm-evaluation-harness run once per model
(`lm_eval --model hf --model_args pretrained=BASE,peft=ADAPTER` for the expert, `pretrained=FOLDER`
for each merge saved as a folder beforehand), whole processes, paired. Issue 26 item 5.

    .venv/bin/python bench/bench_lm_eval.py prepare --work /tmp/mergelab-lmeval [--rows 60]
    # then time these two whole processes in turn (A B A B …, e.g. under /usr/bin/time -v):
    .venv/bin/python bench/bench_lm_eval.py mergelab --work /tmp/mergelab-lmeval
    .venv/bin/python bench/bench_lm_eval.py lm-eval --work /tmp/mergelab-lmeval
    .venv/bin/python bench/bench_lm_eval.py compare --work /tmp/mergelab-lmeval

The task is the LLM study's `vader_polarity` (its prompt and labels) as a local lm-eval multiple-
choice YAML over its first ``--rows`` eval rows; the expert is its adapter, the merges are the study's
group r4 (8 adapters, vader_polarity among them) merged by 8 methods. `prepare` (untimed) writes the
task, and the merged folders lm-eval needs (MergeLab's side merges again, inside its timed run). Each
side writes its scores to ``WORK/<side>.json``; `compare` prints both and their largest difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STUDY = ROOT / "data" / "llm" / "study.yaml"
TASK = "vader_polarity"
GROUP = "r4"
METHODS = ["LA", "TA", "TIES", "DARE", "SLERP", "knots", "tsv", "iso_c"]
LM_TASK = "bench_vader_mc"


def _spec():
    from mergelab.study.spec import parse_spec

    return parse_spec(STUDY)


def prepare(work: Path, rows: int) -> None:
    from mergelab.io import hub

    spec = _spec()
    task = spec.tasks[TASK]
    data = [json.loads(line) for line in (STUDY.parent / task.data).read_text().splitlines() if line.strip()]
    labels = list(task.labels)
    out = work / "tasks"
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("eval", "test"), ("train", "train")):
        picked = [r for r in data if r["split"] == split][: rows if split == "eval" else 8]
        (out / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": r["text"], "answer": labels.index(r["label"])}) + "\n" for r in picked)
        )
    template = task.template.replace("{text}", "{{text}}").replace('"', '\\"').replace("\n", "\\n")
    choices = json.dumps([" " + label for label in labels])
    (out / f"{LM_TASK}.yaml").write_text(
        f"task: {LM_TASK}\ndataset_path: json\ntraining_split: train\ntest_split: test\n"
        f"dataset_kwargs:\n  data_files:\n    train: {out}/train.jsonl\n    test: {out}/test.jsonl\n"
        f'output_type: multiple_choice\ndoc_to_text: "{template}"\ndoc_to_choice: {choices}\n'
        "doc_to_target: answer\nnum_fewshot: 0\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    base = hub.resolve_dir(spec.base, what="base")
    (work / "base.txt").write_text(str(base))
    adapters = [str(STUDY.parent / spec.adapters[t]) for t in spec.groups[GROUP]]
    for method in METHODS:
        folder = work / "merged" / method
        if (folder / "config.json").exists():
            continue
        subprocess.run(
            [sys.executable, "-m", "mergelab", "merge", "--base", spec.base, "--adapters", *adapters,
             "--method", method, "--format", "model", "--out", str(folder)],
            check=True,
        )  # fmt: skip
    print(f"prepared {work}: task {LM_TASK} ({rows} rows), base {base}, {len(METHODS)} merged folders")


def side_mergelab(work: Path) -> None:
    """The whole MergeLab path in one process: load the base and the 8 adapters once, score the
    expert, then merge and score each method's model, weights swapped in place."""
    import torch

    from mergelab.io.adapters import load_adapter_set
    from mergelab.merging.merge import merge
    from mergelab.models import lm_eval_bridge
    from mergelab.models.loaded import LoadedModel

    spec = _spec()
    members = spec.groups[GROUP]
    aset = load_adapter_set(spec.base, {t: STUDY.parent / spec.adapters[t] for t in members})
    model = LoadedModel(aset, "causal", torch.device("cpu"), 16, False, "float32")
    cfg = lm_eval_bridge.LmEvalTask(name=LM_TASK, include_path=str(work / "tasks"))
    task = lm_eval_bridge.load_task(cfg)
    scores = {}
    model.use_expert(TASK)
    scores["expert"] = lm_eval_bridge.evaluate(model.model, model.tokenizer, cfg, 16, "cpu", task).score
    for method in METHODS:
        deltas = merge(aset, method, {"seed": 0}, device="cpu").deltas
        model.use(f"merged:{method}", deltas)
        scores[method] = lm_eval_bridge.evaluate(model.model, model.tokenizer, cfg, 16, "cpu", task).score
    (work / "mergelab.json").write_text(json.dumps(scores, indent=1))


def side_lm_eval(work: Path) -> None:
    """lm-eval's own CLI, once per model, as a user without MergeLab would run it."""
    base = (work / "base.txt").read_text().strip()
    spec = _spec()
    models = {"expert": f"pretrained={base},peft={STUDY.parent / spec.adapters[TASK]}"}
    models |= {m: f"pretrained={work / 'merged' / m}" for m in METHODS}
    scores = {}
    for name, args in models.items():
        out = work / "lm_eval_out" / name
        subprocess.run(
            [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
             f"{args},dtype=float32", "--device", "cpu", "--tasks", LM_TASK, "--include_path", str(work / "tasks"),
             "--batch_size", "16", "--output_path", str(out)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
        scores[name] = 100 * result["results"][LM_TASK]["acc,none"]
    (work / "lm_eval.json").write_text(json.dumps(scores, indent=1))


def compare(work: Path) -> None:
    ours = json.loads((work / "mergelab.json").read_text())
    theirs = json.loads((work / "lm_eval.json").read_text())
    print("| model | MergeLab | lm-eval |\n|---|---|---|")
    for name in ours:
        print(f"| {name} | {ours[name]:.2f} | {theirs.get(name, float('nan')):.2f} |")
    diff = max(abs(ours[n] - theirs[n]) for n in ours if n in theirs)
    print(f"largest difference: {diff:.4f} points ({time.strftime('%Y-%m-%d')})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["prepare", "mergelab", "lm-eval", "compare"])
    p.add_argument("--work", type=Path, default=Path("/tmp/mergelab-lmeval"))
    p.add_argument("--rows", type=int, default=60)
    args = p.parse_args()
    if args.step == "prepare":
        prepare(args.work, args.rows)
    elif args.step == "mergelab":
        side_mergelab(args.work)
    elif args.step == "lm-eval":
        side_lm_eval(args.work)
    else:
        compare(args.work)


if __name__ == "__main__":
    main()
