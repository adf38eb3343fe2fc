"""Data-free merges built for low-rank updates, computed on the LoRA factors (adapter space).

Each function takes one module's adapters as factors — ΔWᵢ = Bᵢ·Aᵢ with the LoRA scale folded into
Bᵢ — and returns the merged ΔW (out × in). A full fine-tuned checkpoint enters through its SVD
(Bᵢ = U·S, Aᵢ = Vᵀ, full rank). Every SVD of a low-rank product is taken through QR of its factors,
so nothing of size out × in is decomposed. The choices of each reference implementation are pinned
here and in the tests that port it (``tests/test_lora_native.py``):

* **KnOTS** (Stoica et al., ICLR 2025; gstoica27/KnOTS ``SVDMerger``): SVD of the concatenated
  [ΔW₁ … ΔWₙ] (out × n·in), float64, directions with s > 1e-5 kept; task i is sV_i = diag(s)·V_iᵀ,
  its block of the right factor. TIES on the sV_i — magnitude trim to ``density`` per task (the
  reference's topK / 100), sign elected by the sum of values (a zero sum takes the majority sign),
  agreeing entries kept — then the disjoint mean (or, with ``ties`` off, the trimmed sum), times λ;
  ΔW = U·merged. The reference trims over the whole model at once, MergeLab per module: equal at
  density 1 (the reference's LLaMA setting, topK 100) and for a single module.
* **TSV-M** (Gargiulo et al., CVPR 2025; AntoAndGar/task_singular_vectors
  ``compute_and_sum_svd_mem_reduction``): each task keeps its top ⌊min(out, in)/n⌋ singular
  triples; the stacked Us and Vs are orthogonalised by their polar factor (U·Vᵀ of their own SVD);
  ΔW = λ·U⊥·diag(s)·V⊥ᵀ. For a LoRA of rank r below ⌊min/n⌋ the reference also keeps r..⌊min/n⌋
  zero-singular directions, whose basis is whatever the SVD library completes, and they shape the
  orthogonalisation; MergeLab keeps each task's meaningful directions: equal to the reference
  whenever ⌊min/n⌋ ≤ rank (tested), a well-defined variant otherwise.
* **Iso-C** (Marczak et al., ICML 2025; danielm1405/iso-merging ``iso_c``): the sum Σ ΔWᵢ with its
  singular values replaced by their mean; ΔW = λ·U·mean(s)·Vᵀ. The reference averages over all
  min(out, in) singular values, zeros included, and fills the sum's null space with the SVD's
  arbitrary completion; MergeLab flattens the spectrum on the sum's support (s > 1e-8·max s):
  equal to the reference at full rank (tested), the rank-preserving variant below it.
* **Iso-CTS** (same repository, ``iso_cts``): a common space — the sum's top ⌊f·d⌋ directions, with
  d − common made divisible by n — plus each task's top (d − common)/n directions after removing
  the common space; the stacked bases orthogonalised by their polar factors; singular values
  flattened to their mean. The reference takes d = min(out, in); MergeLab d = min(out, in, Σ rank):
  equal at full rank (tested).
* **Core space** (Panariello et al., NeurIPS 2025; apanariello4/core-space-merging
  ``get_core_matrices``): reference bases U_B (left singular vectors of [B₁ … Bₙ]) and V_A (right
  singular vectors of [A₁; …; Aₙ]); each task's core Mᵢ = U_Bᵀ·Bᵢ·Aᵢ·V_Aᵀ (Σr × Σr) reconstructs
  ΔWᵢ exactly; the cores are merged — TIES (top ``density``, sum-of-values sign, disjoint mean) or
  TSV — and ΔW = λ·U_B·M·V_A.
"""

from __future__ import annotations

import torch

Factors = list[tuple[torch.Tensor, torch.Tensor]]  # (B with the scale folded in, A): ΔW = B @ A

KEEP = 1e-5  # KnOTS keeps singular directions with s above this (its own threshold)


# --- small linear algebra ---------------------------------------------------------------------------
def svd_of_product(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, s, Vh of B·A through QR of the factors: (out × k), (k,), (k × in), k = rank of the factors."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    return qb @ u, s, vh @ qa.T


def polar(x: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor U·Vᵀ of x (its closest matrix with orthonormal columns)."""
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def factors_of(deltas: list[torch.Tensor]) -> Factors:
    """Dense task vectors (full fine-tunes) as factors, through their SVD (full rank)."""
    out = []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d.double(), full_matrices=False)
        out.append((u * s, vh))
    return out


def _support(s: torch.Tensor) -> torch.Tensor:
    return s > 1e-8 * s.max() if s.numel() and s.max() > 0 else torch.zeros_like(s, dtype=torch.bool)


# --- TIES on stacked vectors (KnOTS' and core space's own TIES) --------------------------------------
def _topk_mask(m: torch.Tensor, density: float) -> torch.Tensor:
    """Per row, keep entries whose magnitude is at or above the k-th largest (k = ⌊density·d⌋ kept),
    as the references' ``topk_values_mask`` (kthvalue of the d − k smallest)."""
    if density >= 1:
        return torch.ones_like(m, dtype=torch.bool)
    d = m.shape[1]
    k = d - int(d * density)
    kth = m.abs().kthvalue(k, dim=1, keepdim=True).values if d > 1 else m.abs()
    return m.abs() >= kth


def _elect(m: torch.Tensor) -> torch.Tensor:
    sign = torch.sign(m.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())  # zero: the majority sign
    return sign


def ties_merge(vectors: torch.Tensor, density: float, mean: bool = True) -> torch.Tensor:
    """TIES on rows of ``vectors`` (tasks × entries): trim, elect, keep agreeing, disjoint mean."""
    pruned = vectors * _topk_mask(vectors, density)
    sign = _elect(pruned)
    kept = pruned * torch.where(sign.unsqueeze(0) > 0, pruned > 0, pruned < 0)
    if not mean:
        return kept.sum(0)
    return kept.sum(0) / (kept != 0).sum(0).clamp(min=1)


# --- the methods ------------------------------------------------------------------------------------
def knots(factors: Factors, density: float = 1.0, lam: float = 1.0, ties: bool = True) -> torch.Tensor:
    b_cat = torch.cat([b.double() for b, _ in factors], dim=1)  # out × Σr
    qb, rb = torch.linalg.qr(b_cat)
    qs, rs = zip(*(torch.linalg.qr(a.double().T) for _, a in factors))  # Aᵢᵀ = Qᵢ Rᵢ: [ΔW…] = B_cat·blockdiag(A)
    u, s, vh = torch.linalg.svd(rb @ torch.block_diag(*rs).T, full_matrices=False)
    keep = s > KEEP
    u, s, vh = qb @ u[:, keep], s[keep], vh[keep]
    offsets = [0, *torch.cumsum(torch.tensor([q.shape[1] for q in qs]), 0).tolist()]
    reps = torch.stack(
        [(s[:, None] * (vh[:, offsets[i] : offsets[i + 1]] @ qs[i].T)).reshape(-1) for i in range(len(factors))]
    )  # sV_i = diag(s)·V_iᵀ, flattened
    if ties:
        merged = ties_merge(reps, density, mean=True)
    else:
        merged = (reps * _topk_mask(reps, density)).sum(0)
    return lam * (u @ merged.reshape(s.numel(), -1))


def tsv(factors: Factors, lam: float = 1.0) -> torch.Tensor:
    out_dim, in_dim = factors[0][0].shape[0], factors[0][1].shape[1]
    per_task = min(out_dim, in_dim) // len(factors)
    us, ss, vs = [], [], []
    for b, a in factors:
        u, s, vh = svd_of_product(b, a)
        k = min(per_task, s.numel())
        us.append(u[:, :k])
        ss.append(s[:k])
        vs.append(vh[:k])
    u_orth = polar(torch.cat(us, 1))
    v_orth = polar(torch.cat(vs, 0).T)
    return lam * (u_orth * torch.cat(ss)) @ v_orth.T


def _sum_svd(factors: Factors):
    b = torch.cat([b.double() for b, _ in factors], 1)
    a = torch.cat([a.double() for _, a in factors], 0)
    return svd_of_product(b, a)


def iso_c(factors: Factors, lam: float = 1.0) -> torch.Tensor:
    u, s, vh = _sum_svd(factors)
    on = _support(s)
    u, s, vh = u[:, on], s[on], vh[on]
    return lam * s.mean() * (u @ vh) if s.numel() else torch.zeros(u.shape[0], vh.shape[1], dtype=torch.float64)


def iso_cts(factors: Factors, common_fraction: float = 0.8, lam: float = 1.0) -> torch.Tensor:
    n = len(factors)
    out_dim, in_dim = factors[0][0].shape[0], factors[0][1].shape[1]
    d = min(out_dim, in_dim, sum(b.shape[1] for b, _ in factors))
    common = int(d * common_fraction)
    specific_total = round((d - common) / n) * n
    common = d - specific_total
    per_task = (d - common) // n
    u, s, vh = _sum_svd(factors)
    uc, sc, vc = u[:, :common], s[:common], vh[:common]
    us, ss, vs = [], [], []
    for b, a in factors:
        b = b.double()
        b_ts = b - uc @ (uc.T @ b)  # w − U_c U_cᵀ w, on the factor
        ut, st, vt = svd_of_product(b_ts, a)
        us.append(ut[:, :per_task])
        ss.append(st[:per_task])
        vs.append(vt[:per_task])
    u_all = polar(torch.cat([*us, uc], 1))
    v_all = polar(torch.cat([*vs, vc], 0).T)
    s_all = torch.cat([*ss, sc])
    return lam * s_all.mean() * (u_all @ v_all.T)


def core_space(factors: Factors):
    """Reference bases and each task's core matrix: ΔWᵢ = U_B·Mᵢ·V_A exactly."""
    b_stack = torch.cat([b.double() for b, _ in factors], 1)
    a_stack = torch.cat([a.double() for _, a in factors], 0)
    u_b = torch.linalg.svd(b_stack, full_matrices=False)[0]
    v_a = torch.linalg.svd(a_stack, full_matrices=False)[2]
    cores = [u_b.T @ b.double() @ a.double() @ v_a.T for b, a in factors]
    return u_b, cores, v_a


def core_ties(factors: Factors, density: float = 0.1, lam: float = 1.0) -> torch.Tensor:
    u_b, cores, v_a = core_space(factors)
    merged = ties_merge(torch.stack([c.reshape(-1) for c in cores]), density).reshape(cores[0].shape)
    return lam * (u_b @ merged @ v_a)


def core_tsv(factors: Factors, lam: float = 1.0) -> torch.Tensor:
    u_b, cores, v_a = core_space(factors)
    merged = tsv([(c, torch.eye(c.shape[1], dtype=c.dtype)) for c in cores])
    return lam * (u_b @ merged @ v_a)
