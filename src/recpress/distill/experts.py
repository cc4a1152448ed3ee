"""Expert projectors with a teacher-driven selection network (DE, HTD's group experts, PCKD)."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from recpress.distill.common import check_choice


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


#: compute precisions of the expert GEMMs (`ExpertBank.precision`)
EXPERT_PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 GEMMs natively: a CUDA device with bf16 support, or a
    CPU with AVX512-BF16 / AMX (oneDNN's check). Elsewhere bf16 is emulated and slow."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return _cpu_bf16()
    return False


@functools.cache
def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether expert GEMMs of `precision` run in bf16 on `device` ("auto": where native)."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


class ExpertBank(nn.Module):
    """M experts E_m: Linear(d_s → h) → ReLU → Linear(h → d_t), plus a selection network.

    Weights are stacked as (M, d_s, h) and (M, h, d_t) so all experts run in one einsum.
    Selection α = softmax(W_sel · e^t + b) ∈ Δ^M is computed from the *teacher* embedding.

    Args:
        n_experts: M.
        student_dim: d_s; teacher_dim: d_t; hidden_dim: h (default ⌊(d_t + d_s)/2⌋).
        precision: "fp32" (default, exact) or "bf16": the dense mixture's GEMMs run under
            bfloat16 autocast (parameters and outputs stay fp32; ~0.4% relative error in the
            mixture); "auto": bf16 where the device runs it natively (`native_bf16`), else
            fp32. Speed depends on bf16 hardware: bench/README.md, section "KD: expert
            mixtures (DE, HTD)".
    Parameter count: M·(d_s·h + h + h·d_t + d_t) + (d_t·M + M).
    """

    def __init__(
        self,
        n_experts: int,
        student_dim: int,
        teacher_dim: int,
        hidden_dim: int | None = None,
        generator: torch.Generator | None = None,
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.precision = check_choice("precision", precision, EXPERT_PRECISIONS)
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
    the M expert outputs (no (n, M, d_t) tensor); autograd differentiates the two GEMMs.
    With ``bank.precision == "bf16"`` (or "auto" on a device with native bf16) the
    GEMMs run under bfloat16 autocast and the result is cast back to ``x.dtype``.
    """
    n_m, d_s, h = bank.w1.shape
    w = w.to(x.dtype)
    low = uses_bf16(bank.precision, x.device)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=low):
        hidden = torch.relu(
            torch.addmm(bank.b1.reshape(-1), x, bank.w1.permute(1, 0, 2).reshape(d_s, n_m * h))
        )
        weighted = (hidden.view(-1, n_m, h) * w.unsqueeze(2).to(hidden.dtype)).view(-1, n_m * h)
        out = torch.addmm(w @ bank.b2, weighted, bank.w2.reshape(n_m * h, -1))
    return out.to(x.dtype)


#: `mix_experts` runs the dense GEMMs when more than this share of (entity, expert) pairs is kept
DENSE_ABOVE = 0.7


def mix_experts(
    bank: ExpertBank,
    student: torch.Tensor,
    weights: torch.Tensor,
    threshold: float = 0.0,
    dense_above: float = DENSE_ABOVE,
) -> torch.Tensor:
    """Σ_m w_m·E_m(e^s) for every entity: student (n, d_s), weights (n, M) → (n, d_t).

    ``threshold`` > 0 skips the (entity, expert) pairs with weight ≤ threshold and runs each
    expert only on the entities that use it (sparse dispatch: pairs sorted by expert, one gather,
    one addmm pair per expert in a loop, scatter-add back). Gumbel-softmax weights become one-hot
    as τ anneals, so most pairs are skipped; the result differs from the dense mixture by at most
    Σ_skipped w_m·‖E_m(e^s)‖. ``threshold=0`` is the exact dense mixture (`dense_mixture`). When
    more than ``dense_above`` of the pairs are kept, the dense GEMMs (with the skipped weights
    zeroed) are used instead; ``dense_above=0`` always takes them, without reading the kept count
    on the host (no device sync). Why these choices: bench/README.md, section "KD: expert
    mixtures (DE, HTD)".
    Gradients reach ``student``, ``weights`` and the bank's expert parameters.
    """
    weights = weights.to(student.dtype)
    if threshold <= 0:
        return dense_mixture(bank, student, weights)
    keep = weights > threshold
    # dense_above <= 0 short-circuits before the kept count is read (a device sync)
    if dense_above <= 0 or int(keep.sum()) > dense_above * keep.numel():
        return dense_mixture(bank, student, weights * keep)
    # (entity, expert) pairs sorted by expert: one gather, contiguous per-expert chunks
    experts, rows = torch.nonzero(keep.T, as_tuple=True)
    counts = torch.bincount(experts, minlength=bank.n_experts).tolist()
    y = _GroupedExperts.apply(student[rows], experts, counts, bank.w1, bank.b1, bank.w2, bank.b2)
    y = y * weights[rows, experts].unsqueeze(1)
    return student.new_zeros(student.shape[0], bank.teacher_dim).index_add(0, rows, y)


def padded_groups(
    group: torch.Tensor, counts: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Zero-padded block layout of rows by group, groups bucketed by size (powers of two).

    group: (n,) group id of each row in [0, G); counts: (G,) rows per group (zeros allowed).
    Returns, per size bucket: (its groups (B,), its rows (R,) sorted by group, their slots in a
    (B·m, ·) buffer viewed as (B, m, ·), m = the bucket's largest group). Padding costs at most
    2x the rows (4x the pairs of a same-group pair matrix), and there are at most log2(n)
    buckets: one batched GEMM each instead of one per group.
    """
    device = group.device
    order = torch.argsort(group, stable=True)
    sorted_group = group[order]
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(group.shape[0], device=device) - starts[sorted_group]
    used = counts > 0
    bucket = torch.floor(torch.log2(counts.clamp_min(1).double())).long()
    blocks = []
    for b in torch.unique(bucket[used]).tolist():
        members = torch.nonzero(used & (bucket == b)).flatten()
        local = torch.full_like(counts, -1)
        local[members] = torch.arange(members.numel(), device=device)
        sel = local[sorted_group] >= 0
        width = int(counts[members].max())
        slots = local[sorted_group[sel]] * width + pos[sel]
        blocks.append((members, order[sel], slots, width))
    return blocks


def _pad(values: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, n: int, width: int):
    """Rows `rows` of `values` (·, k) placed at `slots` of a zero (n, width, k) buffer."""
    out = values.new_zeros(n * width, values.shape[1])
    return out.index_copy_(0, slots, values.index_select(0, rows)).view(n, width, -1)


class _GroupedExperts(torch.autograd.Function):
    """Row r of x (rows grouped by expert, ``counts[m]`` rows for expert m) → E_{expert[r]}(x_r).

    Forward and backward by hand. Experts with similar row counts (same power of two) share one
    zero-padded batched GEMM per layer (`padded_groups`), so a step costs a handful of
    ``baddbmm``/``bmm`` calls instead of two per expert; padded rows carry zero input gradients,
    so they add nothing to any gradient. Bias gradients are sums over each expert's rows.
    """

    @staticmethod
    def forward(ctx, x, experts, counts, w1, b1, w2, b2):  # noqa: D102 - see the class docstring
        y = x.new_empty(x.shape[0], w2.shape[2])
        saved = []
        counts_t = torch.tensor(counts, device=x.device)
        for ids, rows, slots, width in padded_groups(experts, counts_t):
            xb = _pad(x, rows, slots, ids.numel(), width)  # (E, m, d_s)
            hidden = torch.baddbmm(b1[ids].unsqueeze(1), xb, w1[ids]).relu_()
            yb = torch.baddbmm(b2[ids].unsqueeze(1), hidden, w2[ids])
            y.index_copy_(0, rows, yb.view(-1, yb.shape[2]).index_select(0, slots))
            saved.append((ids, rows, slots, width, xb, hidden))
        ctx.saved = saved
        ctx.save_for_backward(w1, w2)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, gy):  # noqa: D102
        w1, w2 = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], any(ctx.needs_input_grad[3:])
        gx = gy.new_empty(ctx.x_shape) if need_x else None
        gw1 = gb1 = gw2 = gb2 = None
        if need_w:  # unused experts get zero gradients; used ones are overwritten below
            gw1, gw2 = torch.zeros_like(w1), torch.zeros_like(w2)
            gb1 = w1.new_zeros(w1.shape[0], w1.shape[2])
            gb2 = w2.new_zeros(w2.shape[0], w2.shape[2])
        gy = gy.contiguous()
        for ids, rows, slots, width, xb, hidden in ctx.saved:
            gyb = _pad(gy, rows, slots, ids.numel(), width)  # zero on padded rows
            gh = torch.bmm(gyb, w2[ids].transpose(1, 2)).masked_fill_(hidden <= 0, 0.0)
            if need_w:
                gw2[ids] = torch.bmm(hidden.transpose(1, 2), gyb)
                gb2[ids] = gyb.sum(1)
                gw1[ids] = torch.bmm(xb.transpose(1, 2), gh)
                gb1[ids] = gh.sum(1)
            if need_x:
                gxb = torch.bmm(gh, w1[ids].transpose(1, 2))
                gx.index_copy_(0, rows, gxb.view(-1, gxb.shape[2]).index_select(0, slots))
        return gx, None, None, gw1, gb1, gw2, gb2
