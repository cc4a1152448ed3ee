"""Expert projectors with a teacher-driven selection network (DE, HTD's group experts, PCKD)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gumbel_softmax(
    log_alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gumbel-softmax relaxation: softmax((log α + g) / τ), g = −log(−log U), U ~ Uniform(0, 1).

    U is drawn (fp32) on the CPU generator, so results are reproducible across devices; the
    softmax is computed in fp32 or wider (τ → 1e-10 overflows fp16).
    log_alpha: (n, M) log selection probabilities → (n, M) soft one-hot weights, in the dtype of
    ``log_alpha`` promoted to at least fp32.
    """
    dtype = torch.promote_types(log_alpha.dtype, torch.float32)
    u = torch.rand(log_alpha.shape, generator=generator, device="cpu").to(log_alpha.device, dtype)
    gumbel = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
    return torch.softmax((log_alpha.to(dtype) + gumbel) / tau, dim=-1)


class ExpertBank(nn.Module):
    """M experts E_m: Linear(d_s → h) → ReLU → Linear(h → d_t), plus a selection network.

    Weights are stacked as (M, d_s, h) and (M, h, d_t) so all experts run in one einsum.
    Selection α = softmax(W_sel · e^t + b) ∈ Δ^M is computed from the *teacher* embedding.

    Args:
        n_experts: M.
        student_dim: d_s; teacher_dim: d_t; hidden_dim: h (default ⌊(d_t + d_s)/2⌋).
    Parameter count: M·(d_s·h + h + h·d_t + d_t) + (d_t·M + M).
    """

    def __init__(
        self,
        n_experts: int,
        student_dim: int,
        teacher_dim: int,
        hidden_dim: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        h = hidden_dim if hidden_dim is not None else (teacher_dim + student_dim) // 2
        self.n_experts, self.student_dim, self.teacher_dim, self.hidden_dim = (
            n_experts,
            student_dim,
            teacher_dim,
            h,
        )
        self.w1 = nn.Parameter(torch.empty(n_experts, student_dim, h))
        self.b1 = nn.Parameter(torch.empty(n_experts, h))
        self.w2 = nn.Parameter(torch.empty(n_experts, h, teacher_dim))
        self.b2 = nn.Parameter(torch.empty(n_experts, teacher_dim))
        self.selector = nn.Linear(teacher_dim, n_experts)
        self._init(generator)

    @torch.no_grad()
    def _init(self, generator: torch.Generator | None) -> None:
        # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
        for w, b, fan_in in (
            (self.w1, self.b1, self.student_dim),
            (self.w2, self.b2, self.hidden_dim),
        ):
            bound = 1.0 / math.sqrt(fan_in)
            w.uniform_(-bound, bound, generator=generator)
            b.uniform_(-bound, bound, generator=generator)
        bound = 1.0 / math.sqrt(self.teacher_dim)
        self.selector.weight.uniform_(-bound, bound, generator=generator)
        self.selector.bias.uniform_(-bound, bound, generator=generator)

    def experts(self, student: torch.Tensor) -> torch.Tensor:
        """All expert outputs: student (n, d_s) → (n, M, d_t)."""
        hidden = F.relu(torch.einsum("nd,mdh->nmh", student, self.w1) + self.b1)
        return torch.einsum("nmh,mht->nmt", hidden, self.w2) + self.b2

    def selection(self, teacher: torch.Tensor) -> torch.Tensor:
        """Selection probabilities α: teacher (n, d_t) → (n, M)."""
        return torch.softmax(self.selector(teacher), dim=-1)

    def reconstruction_error(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        tau: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-entity ‖e^t − Σ_m z_m·E_m(e^s)‖², z = Gumbel-softmax(log(α + 1e-10), τ): (n,)."""
        z = gumbel_softmax(torch.log(self.selection(teacher) + 1e-10), tau, generator)
        mixed = torch.einsum("nm,nmt->nt", z.to(student.dtype), self.experts(student))
        return ((teacher - mixed) ** 2).sum(-1)


def annealed_tau(epoch: int, max_epochs: int, floor: float = 1e-10) -> float:
    """Reference τ schedule: 1 at epoch 0; epoch e ≥ 1 uses (1e-10)^((e−1)/E_max), floored."""
    if epoch <= 0:
        return 1.0
    return max(floor, 1e-10 ** ((epoch - 1) / max_epochs))


def dense_mixture(bank: ExpertBank, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_m w_m·(W2_mᵀ·relu(W1_mᵀ·x + b1_m) + b2_m) for every row: (n, d_s), (n, M) → (n, d_t).

    Two GEMMs over the stacked experts: Σ_m w_m·(W2_mᵀ h_m + b2_m) = Σ_m W2_mᵀ (w_m h_m) + w·b2,
    so the hidden units are scaled by the weights and one (n, M·h) × (M·h, d_t) product replaces
    the M expert outputs (no (n, M, d_t) tensor). The cost is the GEMMs (a hand-written backward
    reusing the (n, M·h) buffers measured no faster).
    """
    n_m, d_s, h = bank.w1.shape
    w = w.to(x.dtype)
    hidden = torch.relu(
        torch.addmm(bank.b1.reshape(-1), x, bank.w1.permute(1, 0, 2).reshape(d_s, n_m * h))
    )
    weighted = (hidden.view(-1, n_m, h) * w.unsqueeze(2)).view(-1, n_m * h)
    return torch.addmm(w @ bank.b2, weighted, bank.w2.reshape(n_m * h, -1))


def mix_experts(
    bank: ExpertBank,
    student: torch.Tensor,
    weights: torch.Tensor,
    threshold: float = 0.0,
    dense_above: float = 0.7,
) -> torch.Tensor:
    """Σ_m w_m·E_m(e^s) for every entity: student (n, d_s), weights (n, M) → (n, d_t).

    ``threshold`` > 0 skips the (entity, expert) pairs with weight ≤ threshold and runs each
    expert only on the entities that use it (sparse dispatch: pairs sorted by expert, one gather,
    one addmm pair per expert in a loop, scatter-add back). Gumbel-softmax weights become one-hot
    as τ anneals, so this cuts the expert cost up to M-fold; the result differs from the dense
    mixture by at most Σ_skipped w_m·‖E_m(e^s)‖. ``threshold=0`` is the exact dense mixture
    (`dense_mixture`). When more than ``dense_above`` of the pairs are kept, the dense GEMMs
    (with the skipped weights zeroed) are used instead, which is faster there.
    Gradients reach ``student``, ``weights`` and the bank's expert parameters.
    """
    weights = weights.to(student.dtype)
    if threshold <= 0:
        return dense_mixture(bank, student, weights)
    keep = weights > threshold
    n_kept = int(keep.sum())
    if n_kept > dense_above * keep.numel():
        return dense_mixture(bank, student, weights * keep)
    # (entity, expert) pairs sorted by expert: one gather, contiguous per-expert chunks
    experts, rows = torch.nonzero(keep.T, as_tuple=True)
    counts = torch.bincount(experts, minlength=bank.n_experts).tolist()
    y = _GroupedExperts.apply(student[rows], experts, counts, bank.w1, bank.b1, bank.w2, bank.b2)
    y = y * weights[rows, experts].unsqueeze(1)
    return student.new_zeros(student.shape[0], bank.teacher_dim).index_add(0, rows, y)


class _GroupedExperts(torch.autograd.Function):
    """Row r of x (rows grouped by expert, ``counts[m]`` rows for expert m) → E_{expert[r]}(x_r).

    Forward and backward by hand with one GEMM call per expert and layer, written into
    preallocated buffers (``out=``); bias gradients are one segment sum each, and the stacked
    weight gradients are filled per expert (no per-expert autograd nodes, no stacking).
    """

    @staticmethod
    def forward(ctx, x, experts, counts, w1, b1, w2, b2):  # noqa: D102 - see the class docstring
        n_rows = x.shape[0]
        hidden = x.new_empty(n_rows, w1.shape[2])
        y = x.new_empty(n_rows, w2.shape[2])
        spans = []
        start = 0
        for m, c in enumerate(counts):
            if c:
                spans.append((m, start, start + c))
                torch.addmm(b1[m], x[start : start + c], w1[m], out=hidden[start : start + c])
            start += c
        hidden.relu_()
        for m, lo, hi in spans:
            torch.addmm(b2[m], hidden[lo:hi], w2[m], out=y[lo:hi])
        ctx.spans = spans
        ctx.save_for_backward(x, experts, hidden, w1, w2)
        return y

    @staticmethod
    def backward(ctx, gy):  # noqa: D102
        x, experts, hidden, w1, w2 = ctx.saved_tensors
        gy = gy.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], any(ctx.needs_input_grad[3:])
        gh = torch.empty_like(hidden)
        gw1 = gw2 = None
        if need_w:  # every used expert's slice is overwritten below; zero only the unused ones
            gw1, gw2 = torch.empty_like(w1), torch.empty_like(w2)
            used = torch.zeros(w1.shape[0], dtype=torch.bool)
            used[[m for m, _, _ in ctx.spans]] = True
            unused = (~used).to(w1.device)
            gw1[unused] = 0.0
            gw2[unused] = 0.0
        for m, lo, hi in ctx.spans:
            if need_w:
                torch.mm(hidden[lo:hi].T, gy[lo:hi], out=gw2[m])
            torch.mm(gy[lo:hi], w2[m].T, out=gh[lo:hi])
        gh.masked_fill_(hidden <= 0, 0.0)
        gx = torch.empty_like(x) if need_x else None
        for m, lo, hi in ctx.spans:
            if need_w:
                torch.mm(x[lo:hi].T, gh[lo:hi], out=gw1[m])
            if need_x:
                torch.mm(gh[lo:hi], w1[m].T, out=gx[lo:hi])
        gb1 = gb2 = None
        if need_w:
            n_m = w1.shape[0]
            gb1 = gh.new_zeros(n_m, gh.shape[1]).index_add_(0, experts, gh)
            gb2 = gy.new_zeros(n_m, gy.shape[1]).index_add_(0, experts, gy)
        return gx, None, None, gw1, gb1, gw2, gb2
