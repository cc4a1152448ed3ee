"""Expert projectors with a teacher-driven selection network (DE, HTD's group experts, PCKD)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gumbel_softmax(
    log_alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gumbel-softmax relaxation, computed in fp32: softmax((log α + g) / τ), g ~ Gumbel(0, 1).

    log_alpha: (n, M) log selection probabilities → (n, M) soft one-hot weights.
    """
    log_alpha = log_alpha.float()
    u = torch.rand(log_alpha.shape, generator=generator, device="cpu").to(log_alpha.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)).clamp_min(1e-20))
    return torch.softmax((log_alpha + gumbel) / tau, dim=-1)


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
