"""Evaluation against the machine's floor (issue 27 item 4): label scoring and generation of the
bundled LLM study's base (SmolLM2-135M-Instruct, float32) through MergeLab's own scorer, as tokens/s
and as achieved FLOP/s beside a plain matmul's FLOP/s on the same machine and threads.

    .venv/bin/python bench/bench_flops.py [--rows 300] [--gen-rows 64] [--repeat 3]

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records the matrix
products and attention the model actually executes (padding included) during one call; the call
is timed separately, without the counter, best of ``--repeat``. "Model forward" is the time inside
the model's own ``forward`` (a hook), so the rest of a call — tokenising, padding, moving tensors,
picking labels — is what is not the model's compute. The matmul reference multiplies a
(rows × hidden) activation by the MLP's (hidden × intermediate) weight, the model's largest product.
Tasks: ``vader_polarity`` (labels: 2) and ``wn_define`` (generation, 16 new tokens), their eval rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mergelab  # noqa: E402,F401  (threads and waiting chosen before torch's OpenMP starts)


def matmul_flops(m: int, k: int, n: int, repeat: int = 20) -> float:
    """Achieved FLOP/s of one float32 (m × k) @ (k × n) product, best of ``repeat``."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best


def measure(call, model, repeat: int) -> dict:
    """Best-of-``repeat`` wall time of ``call()``, the model forward's share of it, and the FLOPs
    one call executes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    inside = [0.0]
    started = []

    def pre(_module, _args, _kwargs):
        started.append(time.perf_counter())

    def post(_module, _args, _kwargs, _out):
        inside[0] += time.perf_counter() - started.pop()

    hooks = [
        model.register_forward_pre_hook(pre, with_kwargs=True),
        model.register_forward_hook(post, with_kwargs=True),
    ]
    try:
        call()  # warm-up
        best, best_inside = float("inf"), 0.0
        for _ in range(repeat):
            inside[0] = 0.0
            t = time.perf_counter()
            out = call()
            wall = time.perf_counter() - t
            if wall < best:
                best, best_inside = wall, inside[0]
    finally:
        for h in hooks:
            h.remove()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        call()
    return {"wall": best, "forward": best_inside, "flops": counter.get_total_flops(), "out": out}


def main() -> None:
    import dataclasses

    import torch

    from mergelab.study.spec import parse_spec
    from mergelab.study.units import StudyContext

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300, help="label-scoring rows")
    parser.add_argument("--gen-rows", type=int, default=64, help="generation rows")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    spec = parse_spec(ROOT / "data" / "llm" / "study.yaml")
    keep = {"groups": {}, "pool": ["vader_polarity", "wn_define"], "swaps": [], "pairwise": [], "held_out": []}
    spec = spec.model_copy(update={**keep, "random_groups": None})
    t = time.perf_counter()
    ctx = StudyContext(spec, "cpu")
    load_s = time.perf_counter() - t
    run = ctx.model
    model = run.model
    cfg = model.config
    print(
        f"# bench_flops — {time.strftime('%Y-%m-%d %H:%M')} — {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, SmolLM2-135M-Instruct float32 (hidden {cfg.hidden_size}, {cfg.num_hidden_layers} "
        f"layers), batch size {run.batch_size}; base and 2 adapters loaded in {load_s:.1f} s"
    )
    peak = matmul_flops(run.batch_size * 32, cfg.hidden_size, cfg.intermediate_size)
    print(f"plain matmul ({run.batch_size * 32} × {cfg.hidden_size}) @ ({cfg.hidden_size} × "
          f"{cfg.intermediate_size}): {peak / 1e9:.1f} GFLOP/s")  # fmt: skip
    print("workload,rows,wall_s,model_forward_s,outside_model_pct,tokens,tokens_per_s,gflop,gflop_per_s,pct_of_matmul")
    for name, task_name, fn in (
        ("label scoring", "vader_polarity", lambda task: run.label_scores(task)),
        ("generation", "wn_define", lambda task: run.generate(task)),
    ):
        task = ctx.data[task_name]
        rows = args.rows if name == "label scoring" else args.gen_rows
        task = dataclasses.replace(task, eval_rows=task.eval_rows[:rows])
        run.use_expert(task_name)
        tok = run.tokenizer
        prompts = [task.prompt(r) for r in task.eval_rows] if hasattr(task, "prompt") else None
        res = measure(lambda task=task, fn=fn: fn(task), model, args.repeat)
        if name == "label scoring":
            labels = task.spec.labels
            prompt_tokens = sum(len(tok(p)["input_ids"]) for p in prompts) if prompts else 0
            label_tokens = sum(  # what the scorer computes per label: the tokens `prompt + " " + label` adds
                len(tok(p + " " + lab)["input_ids"]) - len(tok(p)["input_ids"]) for p in prompts for lab in labels
            )
            tokens = prompt_tokens + label_tokens
        else:
            prompt_tokens = sum(len(tok(p)["input_ids"]) for p in prompts) if prompts else 0
            tokens = prompt_tokens + sum(len(tok(o)["input_ids"]) for o in res["out"])
        outside = 100 * (1 - res["forward"] / res["wall"])
        gflop = res["flops"] / 1e9
        print(
            f"{name},{rows},{res['wall']:.2f},{res['forward']:.2f},{outside:.0f},{tokens},"
            f"{tokens / res['wall']:.0f},{gflop:.1f},{gflop / res['wall']:.1f},"
            f"{100 * res['flops'] / res['wall'] / peak:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
