"""DE — Distillation Experts (DE-RRD, CIKM 2020; methods.md §4.4).

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
from recpress.distill.experts import ExpertBank, annealed_tau, gumbel_softmax
from recpress.distill.registry import register
from recpress.errors import ConfigError

#: pairs (entity, expert) with z < SPARSE_EPS · max_m z are dropped by the sparse path
SPARSE_EPS = 1e-7
#: the sparse path is used when at most this fraction of the (n, M) pairs is kept
SPARSE_MAX_FILL = 0.25


def _mixture_dense(bank: ExpertBank, student: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Σ_m z_m E_m(e^s) for all pairs as two GEMMs, never building the (n, M, d_t) tensor:

    hidden = ReLU(e^s @ [W1_1 … W1_M] + b1)                        (n, M·h)
    mixed  = [z_1 hidden_1, …, z_M hidden_M] @ vstack(W2_m) + z @ b2   (n, d_t)
    """
    n = student.shape[0]
    m, d_s, h = bank.w1.shape
    w1 = bank.w1.permute(1, 0, 2).reshape(d_s, m * h)
    hidden = torch.relu(torch.addmm(bank.b1.reshape(1, m * h), student, w1))
    zh = (hidden.view(n, m, h) * z.unsqueeze(2)).view(n, m * h)
    return torch.addmm(z @ bank.b2, zh, bank.w2.reshape(m * h, -1))


def _mixture_sparse(
    bank: ExpertBank, student: torch.Tensor, z: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Σ_m z_m E_m(e^s) over the kept (entity, expert) pairs only: one GEMM pair per expert
    on the entities routed to it, results scattered back with one index_add."""
    ent, exp = keep.nonzero(as_tuple=True)  # row-major: sorted by entity
    order = torch.argsort(exp, stable=True)
    ent, exp = ent[order], exp[order]
    counts = torch.bincount(exp, minlength=bank.n_experts).tolist()
    zs = z[ent, exp].unsqueeze(1)
    x = student.index_select(0, ent)
    outs = []
    start = 0
    for m, c in enumerate(counts):
        if c == 0:
            continue
        xm = x[start : start + c]
        hm = torch.relu(torch.addmm(bank.b1[m], xm, bank.w1[m]))
        outs.append(torch.addmm(bank.b2[m], hm, bank.w2[m]))
        start += c
    contrib = torch.cat(outs) * zs
    out = torch.zeros(
        student.shape[0], bank.teacher_dim, dtype=contrib.dtype, device=contrib.device
    )
    return out.index_add(0, ent, contrib)


def expert_mixture(
    bank: ExpertBank, student: torch.Tensor, z: torch.Tensor, sparse: bool | None = None
) -> torch.Tensor:
    """Σ_m z_m E_m(e^s): (n, d_t). ``sparse=None`` picks the sparse path when few pairs carry
    weight ≥ SPARSE_EPS · max (dropping the others changes the result by < 1e-7 relative);
    ``True``/``False`` force a path (``False`` is exact)."""
    z = z.to(student.dtype)
    if sparse is False or z.numel() == 0:
        return _mixture_dense(bank, student, z)
    with torch.no_grad():
        keep = z >= SPARSE_EPS * z.amax(1, keepdim=True)
        fill = float(keep.sum()) / z.numel()
    if sparse is None and fill > SPARSE_MAX_FILL:
        return _mixture_dense(bank, student, z)
    return _mixture_sparse(bank, student, z, keep)


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
    the τ schedule (1000), reduction "sum" | "mean"."""

    name = "de"
    requires = frozenset({"embeddings"})
    default_weight = 0.01

    def __init__(
        self,
        n_experts: int = 30,
        hidden_dim: int | None = None,
        max_epochs: int = 1000,
        reduction: str = "sum",
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
        self.student_dim: int | None = None
        self._seed = 0
        self._gen: torch.Generator | None = None
        self.user_experts: ExpertBank | None = None
        self.item_experts: ExpertBank | None = None

    def get_params(self) -> dict[str, object]:
        return {
            "n_experts": self.n_experts,
            "hidden_dim": self.hidden_dim,
            "max_epochs": self.max_epochs,
            "reduction": self.reduction,
        }

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
        self.user_experts = ExpertBank(self.n_experts, self.student_dim, d_t, self.hidden_dim, g)
        self.item_experts = ExpertBank(self.n_experts, self.student_dim, d_t, self.hidden_dim, g)

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
