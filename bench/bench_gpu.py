"""GPU benchmark at real scale (issue 7b): random Mistral-7B-shaped weights, 8 rank-16 adapters.

    .venv/bin/python bench/bench_gpu.py              # needs a CUDA GPU (~16 GB for the forward)
    .venv/bin/python bench/bench_gpu.py --tiny       # same code path at toy size, runs on CPU

Prints, in one run on one device:
1. TIES over the whole model (q, k, v of 32 layers; density 0.2): MergeLab's merge (selection
   trim) vs mergekit's own `ties` on the same task vectors (argsort trim) — seconds and ratio, and
   max |difference| (must be 0: the fast trim is exact).
2. HiddenSim for 8 adapters on 40 probes × 128 tokens: one base model in memory, adapter weights
   switched in place, last-layer mean-pooled states, distances, Eq. 2 and Eq. 3 — seconds.
Random weights measure speed only; the numbers mean nothing about merging quality.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mergelab.analysis import equations, hidden  # noqa: E402
from mergelab.io.adapters import AdapterSet, LoraAdapter  # noqa: E402
from mergelab.merging.merge import merge  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_adapters(n, layers, hidden_size, kv, rank, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    shapes = {"q_proj": (hidden_size, hidden_size), "k_proj": (kv, hidden_size), "v_proj": (kv, hidden_size)}
    modules = {
        f"model.layers.{i}.self_attn.{m}": f"model.layers.{i}.self_attn.{m}.weight"
        for i in range(layers)
        for m in shapes
    }
    adapters = []
    for a in range(n):
        la, lb = {}, {}
        for mod in modules:
            out, inp = shapes[mod.split(".")[-1]]
            la[mod] = (torch.randn(rank, inp, generator=g) * 0.01).to(device)
            lb[mod] = (torch.randn(out, rank, generator=g) * 0.01).to(device)
        adapters.append(LoraAdapter(f"t{a}", Path("."), {"lora_alpha": 2 * rank}, la, lb))
    return AdapterSet(None, "random", adapters, modules)


def bench_ties(aset, device, repeat):
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        ours = merge(aset, "ties", {"density": 0.2}, device=str(device))
        sync(device)
        best = min(best, time.perf_counter() - t)
    from mergekit.merge_methods.api import merge_tensors

    ref_best, worst_diff = float("inf"), 0.0
    for r in range(repeat):
        sync(device)
        t = time.perf_counter()
        refs = {}
        for module, key in aset.module_keys.items():
            deltas = [a.delta(module, device=device) for a in aset.adapters]
            zero = torch.zeros_like(deltas[0])
            refs[key] = merge_tensors([zero, *deltas], "ties", parameters={"weight": 1.0, "density": 0.2}, base_index=0)
        sync(device)
        ref_best = min(ref_best, time.perf_counter() - t)
        if r == 0:
            worst_diff = max((ours.deltas[k] - refs[k].cpu()).abs().max().item() for k in refs)
    return best, ref_best, worst_diff


def bench_hiddensim(aset, layers, hidden_size, kv, device, probes, tokens, dtype):
    from transformers import AutoModelForCausalLM, MistralConfig

    cfg = MistralConfig(
        hidden_size=hidden_size,
        intermediate_size=int(hidden_size * 3.5),
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 128,
        num_key_value_heads=kv // 128,
        vocab_size=32000,
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    params = dict(model.named_parameters())
    original = {k: params[k].detach().clone() for k in aset.module_keys.values()}
    ids = torch.randint(0, cfg.vocab_size, (probes, tokens), device=device)
    sync(device)
    t = time.perf_counter()
    pooled = []
    with torch.no_grad():
        for a in aset.adapters:
            for module, key in aset.module_keys.items():
                params[key].copy_(original[key] + a.delta(module, device=device).to(dtype))
            h = model.model(input_ids=ids).last_hidden_state.float().mean(1)
            pooled.append(h)
        states = torch.stack(pooled).cpu().numpy()
    sim = equations.hiddensim(hidden.distance_matrix(states))
    equations.mds(sim)
    sync(device)
    return time.perf_counter() - t, sum(p.numel() for p in model.parameters())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="toy sizes (hidden 256, 2 layers): a CPU smoke run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-forward", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    layers, hidden_size, kv = (2, 256, 128) if args.tiny else (32, 4096, 1024)
    probes, tokens = (8, 16) if args.tiny else (40, 128)
    print(
        f"# GPU bench — {time.strftime('%Y-%m-%d')} — device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
        + f" — {layers} layers, hidden {hidden_size}, kv {kv}, 8 adapters r=16 on q,k,v"
    )
    aset = make_adapters(8, layers, hidden_size, kv, 16, device)
    ours, ref, diff = bench_ties(aset, device, args.repeat)
    print(
        f"TIES whole model: mergelab {ours:.3f} s, mergekit ties (argsort) {ref:.3f} s, "
        f"ratio {ref / ours:.1f}x, max |diff| {diff:.1e}"
    )
    if not args.skip_forward:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        took, n = bench_hiddensim(aset, layers, hidden_size, kv, device, probes, tokens, dtype)
        print(f"HiddenSim 8 adapters on {probes} probes x {tokens} tokens ({n / 1e9:.2f} B params): {took:.3f} s")


if __name__ == "__main__":
    main()
