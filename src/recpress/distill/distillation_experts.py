"""DE — Distillation Experts (DE-RRD, CIKM 2020; docs/methods.md §4.4).

Separate user and item expert banks (M experts d_s → h → d_t and a selection network driven by
the teacher embedding). Per batch, with z = Gumbel-softmax(log(α + 1e-10), τ) drawn fresh per
entity and step:

    L_DE = Σ_{u ∈ U_b} ‖e^t_u − Σ_m z_m E_m(e^s_u)‖²
           + ½ [Σ_{i ∈ uniq(pos)} ‖…‖² + Σ_{j ∈ uniq(neg)} ‖…‖²]

reduced by sum (reference; λ_DE = 0.01) or mean (divided by the number of terms). τ follows
:func:`annealed_tau` with E_max = ``max_epochs`` (1000). Gumbel noise is drawn from the
trainer's generator, so a resumed run continues exactly.
"""

from __future__ import annotations

import torch

from recpress.distill.base import Distiller
from recpress.distill.common import check_choice
from recpress.distill.experts import (
    DENSE_ABOVE,
    EXPERT_PRECISIONS,
    ExpertBank,
    annealed_tau,
    dense_mixture,
    gumbel_softmax,
    mix_experts,
)
from recpress.distill.registry import register
from recpress.errors import ConfigError

#: (entity, expert) pairs with z < SPARSE_EPS · max_m z are skipped by the sparse dispatch
#: (applied as the absolute threshold SPARSE_EPS / M ≤ SPARSE_EPS · max_m z, since max_m z ≥ 1/M)
SPARSE_EPS = 1e-7


def expert_mixture(
    bank: ExpertBank, student: torch.Tensor, z: torch.Tensor, sparse: bool | None = None
) -> torch.Tensor:
    """Σ_m z_m E_m(e^s): (n, d_t), via ``experts.mix_experts``.

    ``sparse=None``: experts run only on the pairs with z > SPARSE_EPS / M when few pairs are
    kept (τ annealed), the dense two-GEMM mixture otherwise; the skipped weights change the
    result by < 1e-7 relative. ``True`` forces the sparse dispatch, ``False`` the exact dense
    mixture (no (n, M, d_t) tensor in either).
    """
    if sparse is False:
        return dense_mixture(bank, student, z)
    thr = SPARSE_EPS / bank.n_experts
    return mix_experts(bank, student, z, threshold=thr, dense_above=1.0 if sparse else DENSE_ABOVE)


def expert_error(
    bank: ExpertBank,
    student: torch.Tensor,
    teacher: torch.Tensor,
    tau: float,
    generator: torch.Generator | None,
    sparse: bool | None = None,
) -> torch.Tensor:
    """Per-entity ‖e^t − Σ_m z_m E_m(e^s)‖², z = Gumbel-softmax(log(α + 1e-10), τ): (n,)."""
    z = gumbel_softmax(torch.log(bank.selection(teacher) + 1e-10), tau, generator)
    mixed = expert_mixture(bank, student, z, sparse)
    return ((teacher - mixed) ** 2).sum(-1)


@register
class DistillationExperts(Distiller):
    """DE. Args: n_experts M (30), hidden_dim h (None: ⌊(d_t + d_s)/2⌋), max_epochs E_max of
    the τ schedule (1000), reduction "sum" | "mean", expert_precision "fp32" | "bf16" | "auto"
    (the expert GEMMs under bfloat16 autocast; auto: where native; see `ExpertBank`)."""

    name = "de"
    epoch_cost = 110.0
    requires = frozenset({"embeddings"})
    default_weight = 0.01

    def __init__(
        self,
        n_experts: int = 30,
        hidden_dim: int | None = None,
        max_epochs: int = 1000,
        reduction: str = "sum",
        expert_precision: str = "fp32",
    ) -> None:
        super().__init__()
        if int(n_experts) <= 0:
            raise ValueError(f"n_experts must be positive, got {n_experts}")
        if hidden_dim is not None and int(hidden_dim) <= 0:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        if int(max_epochs) <= 0:
            raise ValueError(f"max_epochs must be positive, got {max_epochs}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
        self.n_experts = int(n_experts)
        self.hidden_dim = None if hidden_dim is None else int(hidden_dim)
        self.max_epochs = int(max_epochs)
        self.reduction = reduction
        self.expert_precision = check_choice(
            "expert_precision", expert_precision, EXPERT_PRECISIONS
        )
        self.student_dim: int | None = None
        self._seed = 0
        self._gen: torch.Generator | None = None
        self.user_experts: ExpertBank | None = None
        self.item_experts: ExpertBank | None = None

    def bind_student(self, student, seed: int = 0) -> None:
        dim = student.embedding_dim
        if dim is None:
            raise ConfigError(
                f"method 'de' needs a student with embeddings; {type(student).__name__} has none"
            )
        self.student_dim, self._seed = int(dim), int(seed)

    def prepare(self, teacher, split, knowledge=None) -> None:
        if knowledge is None:
            raise ConfigError("method 'de' needs teacher Knowledge (embeddings)")
        if self.student_dim is None:
            raise ConfigError("method 'de': call bind_student(student) before prepare")
        tu = knowledge.user_embeddings(needed_by=self.name)
        ti = knowledge.item_embeddings(needed_by=self.name)
        if tu is None or ti is None:
            raise ConfigError("method 'de' needs teacher embeddings; this teacher has none")
        self.register_buffer("t_user", tu.detach().float().clone(), persistent=False)
        self.register_buffer("t_item", ti.detach().float().clone(), persistent=False)
        g = torch.Generator().manual_seed(self._seed)
        d_t = int(tu.shape[1])
        self.user_experts, self.item_experts = (
            ExpertBank(
                self.n_experts, self.student_dim, d_t, self.hidden_dim, g, self.expert_precision
            )
            for _ in range(2)
        )

    def on_epoch_start(self, student, epoch: int, generator: torch.Generator) -> None:
        self._gen = generator

    def tau(self, epoch: int) -> float:
        return annealed_tau(epoch, self.max_epochs)

    def loss(self, student, batch, epoch: int) -> torch.Tensor:
        tau = self.tau(epoch)
        users = torch.unique(batch.users)
        pos, neg = torch.unique(batch.pos), torch.unique(batch.neg)
        items = torch.cat([pos, neg])
        err_u = expert_error(
            self.user_experts, student.user_embeddings(users), self.t_user[users], tau, self._gen
        )
        err_i = expert_error(
            self.item_experts, student.item_embeddings(items), self.t_item[items], tau, self._gen
        )
        total = err_u.sum() + 0.5 * err_i.sum()
        if self.reduction == "mean":
            total = total / (users.numel() + 0.5 * items.numel())
        return total
