"""LoRA-native merges against their reference implementations, ported here (in float64, on dense
task vectors, as the references compute them) from:

* KnOTS — gstoica27/KnOTS: task_merger.SVDMerger.apply_svd / merge, masking_ops.ties_masking,
  topk_values_mask, resolve_sign, masked_merge;
* TSV-M — AntoAndGar/task_singular_vectors: src/utils/TSVM_utils.compute_and_sum_svd_mem_reduction;
* Iso-C / Iso-CTS — danielm1405/iso-merging: src/utils/iso.iso_c, iso_cts;
* Core space — apanariello4/core-space-merging: task_merger.get_core_matrices, _process_ties
  (merging_functions.ties_merging), get_tsv_delta_w.

Each is run on the same small random LoRA factors as MergeLab's adapter-space implementation and
must agree to ≤ 1e-5 where the implementations are equal by construction; where MergeLab's
low-rank path equals the reference only at full rank, both regimes are tested.
"""

from __future__ import annotations

import math

import pytest
import torch

from mergelab.merging import lora_native as ln
from mergelab.merging import registry
from mergelab.merging.method import ModuleContext

TOL = 1e-5


def _factors(n=4, out=24, inp=20, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(out, r, generator=g, dtype=torch.float64) * 0.3,
            torch.randn(r, inp, generator=g, dtype=torch.float64) * 0.3,
        )
        for _ in range(n)
    ]


def _dense(factors):
    return [b @ a for b, a in factors]


# --- ported reference code -----------------------------------------------------------------------
def ref_topk_values_mask(M, K=0.7):
    if K > 1:
        K /= 100
    if K >= 1:
        return M, torch.ones_like(M), torch.ones_like(M).mean(dim=-1)
    _, d = M.shape
    k = int(d * K)
    k = d - k
    kth_values, _ = M.abs().kthvalue(k, dim=1, keepdim=True)
    mask = M.abs() >= kth_values
    return M * mask, mask, mask.float().mean(dim=-1)


def ref_resolve_sign(T):
    sign_to_mult = torch.sign(T.sum(dim=0))
    majority_sign = torch.sign(sign_to_mult.sum())
    sign_to_mult[sign_to_mult == 0] = majority_sign
    return sign_to_mult


def ref_ties_masking(vectors, topK=100):
    stacked = torch.vstack(vectors).clone()
    pruned, prune_mask, _ = ref_topk_values_mask(stacked, K=topK)
    signs = ref_resolve_sign(pruned)
    sign_mask = torch.where(signs.unsqueeze(0) > 0, pruned > 0, pruned < 0)
    return sign_mask * prune_mask


def ref_masked_merge_mean(vectors, weights):
    for v in vectors:
        v *= weights[0]
    total = vectors.sum(0)
    counts = (vectors != 0).sum(0)
    out = total / torch.clamp(counts.double(), min=1)
    out[counts == 0] = 0
    return out


def ref_knots_ties(dense, topK=100, scaling=0.5):
    """One module: KnOTS' apply_svd (concat across output) and merge (ties mask, 'mean')."""
    val = torch.cat(dense, dim=1)
    U, s, V = torch.linalg.svd(val, full_matrices=False)
    U, V, s = U[:, s > 1e-5], V[s > 1e-5], s[s > 1e-5]
    width = V.shape[1] // len(dense)
    sVs = [torch.diag(s) @ Vi for Vi in torch.split(V, width, dim=1)]
    reps = [x.reshape(-1) for x in sVs]
    masks = ref_ties_masking(reps, topK=topK)
    masked = torch.vstack(reps).clone() * masks
    merged = ref_masked_merge_mean(masked, [scaling])
    return U @ merged.reshape(sVs[0].shape)


def ref_tsv(dense):
    sv_reduction = 1 / len(dense)
    for i, vec in enumerate(dense):
        u, s, v = torch.linalg.svd(vec, full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        k = int(s.shape[0] * sv_reduction)
        sum_u[:, i * k : (i + 1) * k] = u[:, :k]
        sum_s[i * k : (i + 1) * k] = s[:k]
        sum_v[i * k : (i + 1) * k, :] = v[:k, :]
    u_u, _, v_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, _, v_v = torch.linalg.svd(sum_v, full_matrices=False)
    return torch.linalg.multi_dot((u_u, v_u, torch.diag(sum_s), u_v, v_v))


def ref_iso_c(dense):
    w = sum(dense) / len(dense) * len(dense)
    U, S, V = torch.linalg.svd(w, full_matrices=False)
    return torch.linalg.multi_dot((U, torch.diag(torch.ones_like(S) * S.mean()), V))


def ref_iso_cts(dense, common_space_fraction=0.8):
    shape_ = dense[0].shape
    n = len(dense)
    combined_w = sum(dense)
    common = int(min(shape_) * common_space_fraction)
    specific_total = round((min(shape_) - common) / n) * n
    common = min(shape_) - specific_total
    u, s, v = torch.linalg.svd(combined_w, full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], v[:common, :]
    per = int((min(shape_) - common) / n)
    for i, w in enumerate(dense):
        w_ts = w - cu @ cu.T @ w
        u_ts, s_ts, v_ts = torch.linalg.svd(w_ts, full_matrices=False)
        if i == 0:
            U, S, V = torch.zeros_like(u_ts), torch.zeros_like(s_ts), torch.zeros_like(v_ts)
        U[:, i * per : (i + 1) * per] = u_ts[:, :per]
        S[i * per : (i + 1) * per] = s_ts[:per]
        V[i * per : (i + 1) * per, :] = v_ts[:per, :]
    U[:, n * per : n * per + common] = cu
    S[n * per : n * per + common] = cs
    V[n * per : n * per + common, :] = cv
    a, _, b = torch.linalg.svd(U, full_matrices=False)
    c, _, d = torch.linalg.svd(V, full_matrices=False)
    S = torch.ones_like(S) * S.mean()
    return torch.linalg.multi_dot((a @ b, torch.diag(S), c @ d))


def ref_core(factors):
    A_list, B_list = [a for _, a in factors], [b for b, _ in factors]
    Vh_A_ref = torch.linalg.svd(torch.cat(A_list, 0), full_matrices=False)[2]
    U_B_ref = torch.linalg.svd(torch.cat(B_list, 1), full_matrices=False)[0]
    M_list = []
    for A, B in zip(A_list, B_list):
        U_A, S_A, Vh_A = torch.linalg.svd(A, full_matrices=False)
        U_B, S_B, Vh_B = torch.linalg.svd(B, full_matrices=False)
        M = torch.diag(S_B) @ (Vh_B @ U_A) @ torch.diag(S_A)
        M_list.append((U_B_ref.T @ U_B) @ M @ (Vh_A @ Vh_A_ref.T))
    return M_list, U_B_ref, Vh_A_ref


def ref_core_ties(factors, topK=10, scaling=1.0):
    M_list, U, Vh = ref_core(factors)
    stacked = torch.vstack([m.flatten() for m in M_list])
    pruned, _, _ = ref_topk_values_mask(stacked, K=topK)
    signs = ref_resolve_sign(pruned)
    keep = torch.where(signs.unsqueeze(0) > 0, pruned > 0, pruned < 0)
    selected = pruned * keep
    counts = (selected != 0).sum(0).double()
    merged = (selected.sum(0) / torch.clamp(counts, min=1)).reshape(M_list[0].shape)
    return scaling * U @ merged @ Vh


def ref_core_tsv(factors, scaling=1.0):
    M_list, U, Vh = ref_core(factors)
    return scaling * U @ ref_tsv(M_list) @ Vh


# --- the comparisons ------------------------------------------------------------------------------------
def _close(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item()), (a - b).abs().max().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knots_equals_the_reference(seed):
    f = _factors(seed=seed)
    _close(ln.knots(f, density=1.0, lam=0.5), ref_knots_ties(_dense(f), topK=100, scaling=0.5))
    # trimmed: KnOTS trims over the whole model; one module is the whole model here
    _close(ln.knots(f, density=0.3, lam=0.5), ref_knots_ties(_dense(f), topK=30, scaling=0.5))


@pytest.mark.parametrize("shape", [(12, 10, 3, 4), (32, 32, 8, 4), (16, 40, 5, 3)])
def test_tsv_equals_the_reference_when_each_task_keeps_its_rank(shape):
    out, inp, r, n = shape
    assert min(out, inp) // n <= r  # the regime where the reference keeps no zero-singular direction
    f = _factors(n=n, out=out, inp=inp, r=r, seed=out)
    _close(ln.tsv(f), ref_tsv(_dense(f)))


def test_tsv_below_the_references_per_task_rank_keeps_only_real_directions():
    """LoRA rank 2 while the reference keeps ⌊20/4⌋ = 5 directions per task: the reference then
    includes zero-singular directions; ours keeps each task's 2, and still reconstructs a merge whose
    column space is inside the tasks' own."""
    f = _factors(n=4, out=24, inp=20, r=2, seed=9)
    ours = ln.tsv(f)
    span = torch.linalg.qr(torch.cat([b for b, _ in f], 1))[0]
    assert torch.allclose(span @ (span.T @ ours), ours, atol=1e-10)
    assert torch.linalg.matrix_rank(ours) == 8


def test_iso_c_equals_the_reference_at_full_rank_and_stays_in_the_span_below_it():
    f = _factors(n=4, out=12, inp=10, r=3, seed=3)  # Σr = 12 ≥ min(12, 10): the sum is full rank
    _close(ln.iso_c(f), ref_iso_c(_dense(f)))
    low = _factors(n=2, out=24, inp=20, r=3, seed=4)  # Σr = 6 < 20
    ours = ln.iso_c(low)
    s = torch.linalg.svdvals(ours)
    assert torch.linalg.matrix_rank(ours) == 6 and torch.allclose(s[:6], s[:6].mean().expand(6))
    ref_s = torch.linalg.svdvals(ref_iso_c(_dense(low)))
    assert torch.linalg.matrix_rank(ref_iso_c(_dense(low))) == 20  # the reference fills the null space
    assert ref_s[0] == pytest.approx(torch.linalg.svdvals(sum(_dense(low))).sum().item() / 20)


def test_iso_cts_equals_the_reference_at_full_rank():
    f = _factors(n=4, out=12, inp=10, r=3, seed=5)
    _close(ln.iso_cts(f, common_fraction=0.8), ref_iso_cts(_dense(f), 0.8))
    _close(ln.iso_cts(f, common_fraction=0.5), ref_iso_cts(_dense(f), 0.5))


@pytest.mark.parametrize("seed", [0, 1])
def test_core_space_equals_the_reference(seed):
    f = _factors(seed=seed)
    u_b, cores, v_a = ln.core_space(f)
    for (b, a), m in zip(f, cores):
        assert torch.allclose(u_b @ m @ v_a, b @ a, atol=1e-12)  # exact reconstruction
    _close(ln.core_ties(f, density=0.1), ref_core_ties(f, topK=10))
    _close(ln.core_ties(f, density=1.0, lam=0.2), ref_core_ties(f, topK=100, scaling=0.2))
    _close(ln.core_tsv(f, lam=0.2), ref_core_tsv(f, scaling=0.2))


def test_registered_methods_merge_lora_adapters_and_full_checkpoints(tmp_path):
    """Through the registry, on PEFT adapter folders (factor path) and on their dense ΔW (the path
    full fine-tunes take): the same merge."""
    from mergelab.io.adapters import load_adapter_set
    from mergelab.merging.merge import merge

    from tinymodels import make_causal_base, make_lora

    base = make_causal_base(tmp_path / "base")
    folders = {f"a{i}": make_lora(base, tmp_path / f"a{i}", i, r=4) for i in range(3)}
    aset = load_adapter_set(base, folders)
    for name in ("knots", "tsv", "iso_c", "iso_cts", "core_ties", "core_tsv"):
        method = registry.get(name)
        assert method.mergekit is None and method.lora is not None
        result = merge(aset, name)
        module, key = next(iter(aset.module_keys.items()))
        dense = [a.delta(module).double() for a in aset.adapters]
        values = method.resolve(3)
        via_dense = method.merge(dense, values, ModuleContext(key)).float()
        assert torch.isfinite(result.deltas[key]).all()
        if name == "knots":  # depends on the ΔW alone; the others on the factorisation (core) or the rank
            assert torch.allclose(result.deltas[key], via_dense, atol=1e-5), name
        assert math.isfinite(float(result.deltas[key].norm()))


# --- a mergekit YAML users already have ---------------------------------------------------------------
def test_a_mergekit_yaml_round_trips_through_export_and_import(tmp_path):
    from mergelab.merging.mergekit_bridge import from_mergekit, mergekit_yaml

    base, adapters = "/m/base", ["/m/a", "/m/b", "/m/c"]
    for method, params in [
        ("ties", {"density": [0.3, 0.4, 0.5], "lambda": 0.7}),
        ("linear", {"weight": [1, 2, 3]}),
        ("task_arithmetic", {"lambda": 0.5}),
        ("dare_ties", {"density": [0.2, 0.2, 0.2]}),
        ("della", {"epsilon": [0.1, 0.1, 0.1]}),
        ("slerp", {}),
    ]:
        back = from_mergekit(mergekit_yaml(base, adapters, method, params))
        assert back["base"] == base and back["adapters"] == adapters and back["method"] == method
        want = registry.get(method).resolve(3, params)
        assert registry.get(method).resolve(3, back["params"]) == want
    two = from_mergekit(mergekit_yaml(base, adapters[:2], "slerp", {"t": 0.3}))
    assert two["adapters"] == adapters[:2] and two["params"] == {"t": 0.3}


@pytest.mark.parametrize(
    "text, message",
    [
        ("merge_method: passthrough\nslices: []\n", "slices"),
        ("merge_method: model_stock\nmodels: [{model: b+a}, {model: b+c}]\n", "model_stock"),
        ("merge_method: ties\nbase_model: x\nmodels: [{model: x+a}, {model: y+b}]\n", "different bases"),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{model: b+a, parameters: "
            "{density: [{filter: mlp, value: 0.5}, 0.2]}}, {model: b+c}]\n",
            "varies by tensor",
        ),
        (
            "merge_method: ties\nbase_model: b\nparameters: {frobnicate: 1}\nmodels: [{model: b+a}, {model: b+c}]\n",
            "frobnicate",
        ),
        ("models: [{model: b+a}]\n", "no merge_method"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: b+a}]\n", "at least 2 adapters"),
    ],
)
def test_what_mergelab_cannot_express_is_one_clear_line(text, message, tmp_path, capsys):
    from mergelab import cli

    path = tmp_path / "merge.yaml"
    path.write_text(text)
    code = cli.main(["merge", "--from-mergekit", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_merge_from_a_mergekit_yaml_equals_the_same_merge_by_flags(tmp_path):
    from mergelab import cli
    from mergelab.merging.merge import read_folder
    from mergelab.merging.mergekit_bridge import mergekit_yaml

    from tinymodels import make_causal_base, make_lora

    base = make_causal_base(tmp_path / "base")
    adapters = [str(make_lora(base, tmp_path / f"a{i}", i)) for i in range(3)]
    (tmp_path / "m.yaml").write_text(mergekit_yaml(str(base), adapters, "ties", {"density": 0.4}))
    assert (
        cli.main(
            ["merge", "--from-mergekit", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "x"), "--device", "cpu"]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "merge",
                "--base",
                str(base),
                "--adapters",
                *adapters,
                "--method",
                "ties",
                "--density",
                "0.4",
                "--out",
                str(tmp_path / "y"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    x, y = read_folder(tmp_path / "x"), read_folder(tmp_path / "y")
    assert all(torch.equal(x[k], y[k]) for k in y)
