"""PCKD: DE plus a preference-consistency regulariser on the projectors (docs/methods.md §4.14).

The DE term (`distillation_experts`) is unchanged. Every epoch start, Q items per user are drawn
from the teacher's top-mxK (unmasked unless ``mask_train``) at ranks r = 1..mxK without
replacement with P(r) ∝ exp(−r/T), kept in teacher order: (n_users, Q).

Per batch row b (user u, list items q = 1..Q), with sg the stop-gradient and z, z' the
Gumbel-softmax selections of the user and the item (as in DE):

    pre_uq  = ⟨sg(e^s_u), sg(e^s_q)⟩
    post_uq = ⟨Σ_m z_m E^U_m(sg(e^s_u)), Σ_m z'_m E^I_m(sg(e^s_q))⟩
    Reg (list) = Σ_b −Σ_q softmax_q(pre/τ_ce) · log_softmax_q(post/τ_ce)
    Reg (pair) = Σ_b Σ_{q<q'} −log σ((post_uq − post_uq')·(pre_uq − pre_uq'))
    L_PCKD = L_DE + α·Reg

so the regulariser's gradient reaches only the experts and the selection networks. The users'
z are the ones drawn for the DE term of the same step; the list items' z' are drawn after them
(one draw per unique list item), so with α = 0 the loss and the random draws equal DE's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recpress.distill.common import batch_rows, check_choice
from recpress.distill.distillation_experts import DistillationExperts, expert_mixture
from recpress.distill.experts import gumbel_softmax
from recpress.distill.rce_kd import masked_soft_ce
from recpress.distill.registry import register
from recpress.distill.relaxed_ranking import rank_sample
from recpress.errors import ConfigError

__all__ = ["PCKD", "consistency_loss"]


def consistency_loss(
    pre: torch.Tensor, post: torch.Tensor, tau: float, variant: str = "list"
) -> torch.Tensor:
    """Per-row regulariser: pre, post (B, Q) scores → (B,).

    "list": −Σ_q softmax(pre/τ)_q · log_softmax(post/τ)_q (pre detached);
    "pair": Σ_{q<q'} −log σ((post_q − post_q')·(pre_q − pre_q')) over all pairs of the row.
    """
    pre = pre.detach()
    if variant == "list":
        return masked_soft_ce(pre, post, tau)
    dq = pre.shape[1]
    a, b = torch.triu_indices(dq, dq, offset=1, device=pre.device)
    margin = (post[:, a] - post[:, b]) * (pre[:, a] - pre[:, b])
    return -F.logsigmoid(margin).sum(1)


@register
class PCKD(DistillationExperts):
    """PCKD (docs/methods.md §4.14): DE's expert banks + the regulariser of the module docstring.

    Args (DE's first): n_experts M (30), hidden_dim h (None: ⌊(d_t + d_s)/2⌋), max_epochs
    E_max of the τ schedule (1000), reduction "sum" | "mean" (both terms), expert_precision
    "fp32" | "bf16" | "auto"; then alpha α (0.1), T rank temperature of the list sample (10), mxK
    teacher list length (100), Q items per user (5), tau_ce τ_ce (0.1), variant "list" |
    "pair", mask_train (exclude training items from the teacher list; reference False),
    user_weighting of the regulariser "rows" (batch rows) | "unique" users (the DE term always
    uses unique users). mxK and Q are capped at the number of items.

    Reference λ = 0.05 (``default_weight``), wd 1e-4, batch 2048.
    """

    name = "pckd"
    # rough: a quick d=20 timing on citeulike-t-td (random d=200 teacher, 1 thread, loaded
    # machine, epoch 0) gave 2.7x DE's epoch (the Q list items of every row are projected too)
    epoch_cost = 300.0
    requires = frozenset({"embeddings", "topk"})
    default_weight = 0.05

    def __init__(
        self,
        n_experts: int = 30,
        hidden_dim: int | None = None,
        max_epochs: int = 1000,
        reduction: str = "sum",
        expert_precision: str = "fp32",
        alpha: float = 0.1,
        T: float = 10.0,  # noqa: N803 (paper symbols)
        mxK: int = 100,  # noqa: N803
        Q: int = 5,  # noqa: N803
        tau_ce: float = 0.1,
        variant: str = "list",
        mask_train: bool = False,
        user_weighting: str = "rows",
    ) -> None:
        super().__init__(n_experts, hidden_dim, max_epochs, reduction, expert_precision)
        self.alpha, self.T, self.tau_ce = float(alpha), float(T), float(tau_ce)
        self.mxK, self.Q = int(mxK), int(Q)
        if min(self.mxK, self.Q) <= 0 or self.T <= 0 or self.tau_ce <= 0:
            raise ValueError(
                f"mxK, Q, T and tau_ce must be positive, got {mxK}, {Q}, {T}, {tau_ce}"
            )
        if self.Q > self.mxK:
            raise ValueError(f"Q ({Q}) cannot exceed mxK ({mxK})")
        self.variant = check_choice("variant", variant, ("list", "pair"))
        if self.variant == "pair" and self.Q < 2:
            raise ValueError("the pair variant needs Q >= 2")
        self.mask_train = bool(mask_train)
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        self._mxk, self._q = self.mxK, self.Q  # effective, set by prepare
        # per-epoch list sample (checkpointed); the teacher list is recomputed by prepare
        self.register_buffer("list_items", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer(
            "teacher_lists", torch.zeros(0, 0, dtype=torch.int64), persistent=False
        )

    def bind_student(self, student, seed: int = 0) -> None:
        if student.embedding_dim is None:
            raise ConfigError(
                f"method 'pckd' needs a student with embeddings; {type(student).__name__} has none"
            )
        super().bind_student(student, seed)

    def prepare(self, teacher, split, knowledge=None) -> None:
        super().prepare(teacher, split, knowledge)
        # list lengths capped at the catalogue (as KD's k)
        self._mxk = min(self.mxK, split.n_items)
        self._q = min(self.Q, self._mxk)
        lists = knowledge.user_topk(self._mxk, mask_train=self.mask_train, needed_by=self.name)
        if bool((lists < 0).any()):
            raise ConfigError(
                f"method 'pckd': some users have fewer than mxK={self._mxk} unobserved items; "
                "lower mxK or set mask_train: false",
                field="distill.params.pckd",
            )
        self.teacher_lists = lists.to(torch.int64)
        self.list_items = torch.zeros(split.n_users, self._q, dtype=torch.int64)

    def on_epoch_start(self, student, epoch: int, generator: torch.Generator) -> None:
        super().on_epoch_start(student, epoch, generator)
        self.list_items.copy_(rank_sample(self.teacher_lists, self._q, self.T, generator))

    def loss(self, student, batch, epoch: int) -> torch.Tensor:
        tau = self.tau(epoch)
        users, inverse = torch.unique(batch.users, return_inverse=True)
        pos, neg = torch.unique(batch.pos), torch.unique(batch.neg)
        items = torch.cat([pos, neg])
        ue, ie = self.user_experts, self.item_experts
        su, si = student.user_embeddings(users), student.item_embeddings(items)
        tu, ti = self.t_user[users], self.t_item[items]
        z_u = gumbel_softmax(torch.log(ue.selection(tu) + 1e-10), tau, self._gen)
        z_i = gumbel_softmax(torch.log(ie.selection(ti) + 1e-10), tau, self._gen)
        err_u = ((tu - expert_mixture(ue, su, z_u)) ** 2).sum(-1)
        err_i = ((ti - expert_mixture(ie, si, z_i)) ** 2).sum(-1)
        de = err_u.sum() + 0.5 * err_i.sum()
        if self.reduction == "mean":
            de = de / (users.numel() + 0.5 * items.numel())
        if self.alpha == 0.0:
            return de
        # regulariser rows: batch rows (index into the unique users) or the unique users
        rows = inverse if self.user_weighting == "rows" else torch.arange(users.numel())
        rows = rows.to(users.device)
        q_items = self.list_items[batch_rows(batch.users, self.user_weighting)]  # (R, Q)
        q_uniq, q_inv = torch.unique(q_items, return_inverse=True)
        sq = student.item_embeddings(q_uniq).detach()
        z_q = gumbel_softmax(torch.log(ie.selection(self.t_item[q_uniq]) + 1e-10), tau, self._gen)
        post_q = expert_mixture(ie, sq, z_q)  # (n_q, d_t)
        su_sg = su.detach()
        post_u = expert_mixture(ue, su_sg, z_u)  # (n_u, d_t)
        pre = torch.einsum("rd,rqd->rq", su_sg[rows], sq[q_inv])
        post = torch.einsum("rt,rqt->rq", post_u[rows], post_q[q_inv])
        reg = consistency_loss(pre, post, self.tau_ce, self.variant)
        reg = reg.sum() if self.reduction == "sum" else reg.mean()
        return de + self.alpha * reg

    def extra_state_tensors(self) -> dict[str, torch.Tensor]:
        return {"list_items": self.list_items}

    def load_extra_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        if "list_items" in state:
            self.list_items = state["list_items"].to(self.list_items.device).clone()
