"""LoRA-native merges (issue 15) beside TIES and TA on the same 8 adapters, and against the
reference implementations' maths (ported in tests/test_lora_native.py) on the same modules.

    .venv/bin/python bench/bench_lora_native.py [--repeat 3] [--device cpu|cuda]

Cases: the MiniLM demo (8 trained adapters, r=8 on query/value, 12 modules) and a tiny Llama
(hidden 512, 4 layers, 8 random adapters, r=16 on q/k/v, 12 modules). Each method runs at its
declared defaults. "ours" is `merge.merge` (in adapter space: SVDs of the stacked factors, never
of a dense d×d matrix where the maths allows it); "reference" runs the ported reference code
module by module on the dense ΔWᵢ = Bᵢ·Aᵢ·scale (or on the factors, for core space) in float64,
the dtype the ported code is written for (its TIES counts are float64, as in the exactness tests),
so its times are an upper bound for the reference in float32; `max_abs_diff` compares the two
merged task vectors. Each time is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_merge import best_of, minilm_demo, tiny_llama  # noqa: E402
from test_lora_native import ref_core_ties, ref_core_tsv, ref_iso_c, ref_iso_cts, ref_knots_ties, ref_tsv  # noqa: E402

from mergelab.io.adapters import load_adapter_set  # noqa: E402
from mergelab.merging import merge  # noqa: E402

# method → the reference's call on one module (dense task vectors, or factors), at our defaults
REFERENCE = {
    "knots": lambda dense, factors: ref_knots_ties(dense, topK=100, scaling=1.0),
    "tsv": lambda dense, factors: ref_tsv(dense),
    "iso_c": lambda dense, factors: ref_iso_c(dense),
    "iso_cts": lambda dense, factors: ref_iso_cts(dense, common_space_fraction=0.8),
    "core_ties": lambda dense, factors: ref_core_ties(factors, topK=10, scaling=1.0),
    "core_tsv": lambda dense, factors: ref_core_tsv(factors, scaling=1.0),
}
BASELINES = {"TIES": "ties", "TA": "task_arithmetic"}


def module_inputs(aset, device):
    """Per module: the dense ΔWᵢ and the (B·scale, A) factors, float64, on ``device``."""
    out = {}
    for module, key in aset.module_keys.items():
        factors = [
            (a.lora_b[module].to(device, torch.float64) * a.scale(module), a.lora_a[module].to(device, torch.float64))
            for a in aset.adapters
        ]
        out[key] = ([b @ a for b, a in factors], factors)
    return out


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mergelab-bench-native-"))
    print(
        f"# LoRA-native merge benchmark — {time.strftime('%Y-%m-%d')} — "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {args.device}"
    )
    print("case,method,ours_s,x_vs_TIES,reference_s,x_vs_reference,max_abs_diff_vs_reference")
    for case, (base, adapters) in [("minilm-demo", minilm_demo()), ("tiny-llama", tiny_llama(work))]:
        aset = load_adapter_set(base, adapters)
        inputs = module_inputs(aset, args.device)
        times = {}
        for label, method in BASELINES.items():
            times[label] = best_of(lambda m=method, a=aset: merge.merge(a, m, {}, device=args.device), args.repeat)[0]
            print(f"{case},{label},{times[label]:.4f},{times['TIES'] / times[label]:.2f},—,—,—", flush=True)
        for method, ref in REFERENCE.items():
            t_ours, ours = best_of(lambda m=method, a=aset: merge.merge(a, m, {}, device=args.device), args.repeat)

            def reference(r=ref, i=inputs):
                out = {key: r(dense, factors) for key, (dense, factors) in i.items()}
                sync(args.device)
                return out

            t_ref, theirs = best_of(reference, args.repeat)
            diff = max((ours.deltas[k] - theirs[k].float().cpu()).abs().max().item() for k in theirs)
            print(
                f"{case},{method},{t_ours:.4f},{times['TIES'] / t_ours:.2f},{t_ref:.4f},{t_ref / t_ours:.2f},"
                f"{diff:.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
