"""RD: Ranking Distillation (Tang & Wang, KDD 2018; docs/methods.md §4.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recpress.data.sampling import sample_negatives
from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.common import batch_rows, check_choice, no_knowledge, reduce_terms
from recpress.distill.registry import register
from recpress.models.base import Recommender, TripletBatch

__all__ = ["RD", "position_weights", "rd_weights"]


def position_weights(k: int, lambda_a: float) -> torch.Tensor:
    """w^a_r = exp(−r/λ_a) / Σ_{r'=1..K} exp(−r'/λ_a), r = 1..K → (K,)."""
    r = torch.arange(1, k + 1, dtype=torch.float64)
    return torch.softmax(-r / lambda_a, dim=0).float()


def rd_weights(
    s_list: torch.Tensor,
    s_dyn: torch.Tensor,
    n_items: int,
    w_a: torch.Tensor,
    mu: float,
    hybrid: bool,
    renormalize: bool,
) -> torch.Tensor:
    """Detached RD weights (B, K) from student scores on the list (B, K) and on D_u (B, n_dyn).

    r̂_{u,r} = ⌊(n_I − 1)·#{j ∈ D_u : s_uj > s_{u,π_r}} / n_dyn⌋ (0-based estimated rank),
    w^b = tanh(max(μ·(r̂ − (r − 1)), 0)); hybrid w = w^a·w^b, renormalised over r when asked
    (a row whose w^b are all 0 gets all-zero weights). Without `hybrid`, w = w^a.
    """
    s_list, s_dyn = s_list.detach(), s_dyn.detach()
    k = s_list.shape[1]
    w_a = w_a.to(s_list.device)
    if not hybrid:
        return w_a.expand(s_list.shape[0], k).clone()
    n_dyn = s_dyn.shape[1]
    above = (s_dyn.unsqueeze(1) > s_list.unsqueeze(2)).sum(-1)  # (B, K)
    r_hat = torch.div((n_items - 1) * above, n_dyn, rounding_mode="floor").to(s_list.dtype)
    r0 = torch.arange(k, device=s_list.device, dtype=s_list.dtype)
    w_b = torch.tanh(torch.clamp(mu * (r_hat - r0), min=0.0))
    w = w_a * w_b
    if renormalize:
        z = w.sum(1, keepdim=True)
        w = torch.where(z > 0, w / torch.where(z > 0, z, torch.ones_like(z)), torch.zeros_like(w))
    return w


@register
class RD(Distiller):
    """Ranking Distillation: weighted pointwise log-loss on the teacher's top-K
    (docs/methods.md §4.2).

    ℓ(u) = Σ_{r=1..K} w_{u,r}·(−log σ(s_{u,π_{u,r}})), with position weights w^a and, from
    ``start_epoch`` on (0-based trainer epochs, ``epoch >= start_epoch``), the hybrid weights
    w^a·w^b whose discrepancy part uses a dynamic rank estimate from n_dyn items D_u drawn
    uniformly from I \\ O_u (with replacement) at every epoch start. Weights are detached.

    Args:
        k: list length K (reference 10).
        lambda_a: position-weight temperature λ_a (reference 1).
        mu: discrepancy slope μ (reference 0.1).
        n_dyn: sampled items per user and epoch for rank estimation (reference 100).
        start_epoch: first epoch that uses the hybrid weights (reference 10).
        renormalize: renormalise the hybrid weights over the list (paper; RecPress default
            True; the official code does not). All-zero rows give a zero loss.
        reduction: "mean" over instances (reference) or "sum".
        user_weighting: "rows" (reference) or "unique".

    λ: the reference uses α = 1 without a (1−α) factor on the base loss, so ``default_weight``
    is 1.
    """

    name = "rd"
    epoch_cost = 5.0
    requires = frozenset({"topk"})
    default_weight = 1.0

    def __init__(
        self,
        k: int = 10,
        lambda_a: float = 1.0,
        mu: float = 0.1,
        n_dyn: int = 100,
        start_epoch: int = 10,
        renormalize: bool = True,
        reduction: str = "mean",
        user_weighting: str = "rows",
    ) -> None:
        super().__init__()
        if int(k) <= 0 or int(n_dyn) <= 0:
            raise ValueError(f"k and n_dyn must be positive integers, got {k}, {n_dyn}")
        if not float(lambda_a) > 0:
            raise ValueError(f"lambda_a must be > 0, got {lambda_a}")
        self.k = int(k)
        self.lambda_a = float(lambda_a)
        self.mu = float(mu)
        self.n_dyn = int(n_dyn)
        self.start_epoch = int(start_epoch)
        self.renormalize = bool(renormalize)
        self.reduction = check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        self.n_items = 0
        self.register_buffer("lists", torch.zeros(0, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("w_a", position_weights(self.k, self.lambda_a), persistent=False)
        # D (n_users, n_dyn), redrawn at every epoch start
        self.register_buffer("dynamic", torch.zeros(0, 0, dtype=torch.int64), persistent=True)
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise no_knowledge("RD")
        k = min(self.k, split.n_items)
        self.lists = knowledge.user_topk(k, mask_train=True).to(torch.int64).cpu()
        self.w_a = position_weights(k, self.lambda_a)
        self.n_items = split.n_items
        self._train = split.train_tensors("cpu")
        self.dynamic = torch.zeros(split.n_users, self.n_dyn, dtype=torch.int64)

    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        if self._train is None:
            raise no_knowledge("RD")
        indptr, indices = self._train
        users = torch.arange(indptr.numel() - 1)
        d = sample_negatives(indptr, indices, users, self.n_items, generator, self.n_dyn)
        self.dynamic = d.to(self.dynamic.device)

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = batch_rows(batch.users, self.user_weighting).to(self.lists.device)
        items = self.lists[users]
        valid = items >= 0  # knowledge pads short lists with -1
        items = items.clamp(min=0)
        s = student.score_items(users, items)
        hybrid = epoch >= self.start_epoch
        if hybrid:
            with torch.no_grad():
                s_dyn = student.score_items(users, self.dynamic[users])
        else:
            s_dyn = s.new_zeros(s.shape[0], 1)
        w = rd_weights(s, s_dyn, self.n_items, self.w_a, self.mu, hybrid, self.renormalize)
        w = w * valid
        per_row = (w * F.softplus(-s)).sum(-1)
        return reduce_terms(per_row, self.reduction)
