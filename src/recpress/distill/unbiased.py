"""UnKD: Unbiased Knowledge Distillation (Chen et al., WSDM 2023; docs/methods.md §4.11)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.collaborative import draw_ranks, rank_cdf
from recpress.distill.common import (
    batch_rows,
    check_choice,
    mask_train_,
    no_knowledge,
    reduce_terms,
)
from recpress.distill.registry import register
from recpress.models.base import Recommender, TripletBatch

__all__ = ["UnKD", "popularity_groups", "group_sample_counts"]

_CHUNK = 1024


def popularity_groups(popularity: np.ndarray, n_groups: int) -> np.ndarray:
    """Group id (n_items,) per item: equal-total-interaction cut of the popularity order.

    Items sorted by popularity (descending, ties by id) are added in order; when the running
    count would exceed c̄ = total/G the group is closed before the current item (after it, if
    the group would otherwise be empty). A final remainder under c̄/2 joins the last group.
    One loop step per group (cumsum + searchsorted), never per item. Group 0 is the most popular.
    """
    pop = np.asarray(popularity, dtype=np.int64)
    order = np.argsort(-pop, kind="stable")
    cum = np.concatenate([[0], np.cumsum(pop[order])])  # cum[j] = count of the first j items
    n = pop.size
    target = cum[-1] / n_groups
    bounds = [0]  # group g = order[bounds[g]:bounds[g+1]]
    start = 0
    while start < n:
        # first j (exclusive end) with cum[j] - cum[start] > target, i.e. item j-1 overflows
        j = int(np.searchsorted(cum, cum[start] + target, side="right"))
        if j > n:  # the rest fits: final group
            end = n
        else:
            end = j - 1 if j - 1 > start else j  # close before the overflowing item
        bounds.append(end)
        start = end
    if len(bounds) > 2 and cum[bounds[-1]] - cum[bounds[-2]] < target / 2:
        bounds.pop(-2)
    gid = np.empty(n, dtype=np.int64)
    for g in range(len(bounds) - 1):
        gid[order[bounds[g] : bounds[g + 1]]] = g
    return gid


def group_sample_counts(n_distill: int, rho: np.ndarray, lambda_p: float) -> list[int]:
    """n_g = round(n_distill·ρ_g^λp / Σ ρ^λp) (half up); λp = 0 gives equal counts."""
    w = np.power(np.asarray(rho, dtype=np.float64), lambda_p)
    return [int(np.floor(x + 0.5)) for x in n_distill * w / w.sum()]


@register
class UnKD(Distiller):
    """Unbiased KD: teacher-ranked pairwise distillation within popularity groups
    (docs/methods.md §4.11).

    Items are cut into G popularity groups of about equal total interactions. For each user
    and group, the user's unobserved items of the group ranked by teacher score, truncated to
    ``n_candidates`` (a (U, G, C) list with a validity mask), are precomputed. Every epoch each
    (user, group) gets n_g pairs: positions r₁ ≠ r₂ ~ p(r) ∝ exp(−r/``rank_temperature``)
    (with replacement; equal positions are redrawn), i⁺ = the better-ranked item. All draws
    are one vectorised inverse-CDF draw per round (same law as a multinomial over the
    (U·G, C) weight matrix, without materialising it).

    ℓ(u) = (1/n_pairs)·Σ −log σ(s_{u i⁺} − s_{u i⁻}), averaged over batch rows (mean/mean, as
    the reference; its base loss is also a mean with explicit L2 — set that in the trainer).

    Args:
        n_groups: G (4). A tail cut can leave G+1 groups; ``n_groups_`` holds the actual count.
        n_distill: total pairs per user and epoch (30 → 8 per group with G = 4).
        lambda_p: exponent of the group popularity ρ_g (0: equal counts). ρ_g is taken as the
            group's mean item popularity (the reference transform is not documented).
        n_candidates: C, per-group list length (1000).
        rank_temperature: 20.
        reduction: "mean" (reference) or "sum"; user_weighting: "rows" (reference) or "unique".

    Reference λ = 1.
    """

    name = "unkd"
    epoch_cost = 8.5
    requires = frozenset({"scores"})
    default_weight = 1.0

    def __init__(
        self,
        n_groups: int = 4,
        n_distill: int = 30,
        lambda_p: float = 0.0,
        n_candidates: int = 1000,
        rank_temperature: float = 20.0,
        reduction: str = "mean",
        user_weighting: str = "rows",
    ) -> None:
        super().__init__()
        if int(n_groups) <= 0 or int(n_distill) <= 0 or int(n_candidates) < 2:
            raise ValueError("n_groups, n_distill must be positive and n_candidates >= 2")
        if not float(rank_temperature) > 0:
            raise ValueError(f"rank_temperature must be > 0, got {rank_temperature}")
        self.n_groups = int(n_groups)
        self.n_distill = int(n_distill)
        self.lambda_p = float(lambda_p)
        self.n_candidates = int(n_candidates)
        self.rank_temperature = float(rank_temperature)
        self.reduction = check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        self.register_buffer("item_group", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "candidates", torch.zeros(0, 0, 0, dtype=torch.int64), persistent=False
        )
        self.register_buffer("n_valid", torch.zeros(0, 0, dtype=torch.int64), persistent=False)
        # per-epoch pairs (n_users, Σ n_g, 2) items and their validity (n_users, Σ n_g)
        self.register_buffer("pairs", torch.zeros(0, 0, 2, dtype=torch.int64), persistent=True)
        self.register_buffer("pair_valid", torch.zeros(0, 0, dtype=torch.bool), persistent=True)
        self.counts: list[int] = []
        self.n_groups_ = 0

    @property
    def candidate_valid(self) -> torch.Tensor:
        """(U, G, C) bool validity mask of ``candidates``."""
        c = torch.arange(self.candidates.shape[2], device=self.candidates.device)
        return c < self.n_valid.unsqueeze(-1)

    @torch.no_grad()
    def prepare(self, teacher: Recommender, split: Split, knowledge: Any = None) -> None:
        if knowledge is None:
            raise no_knowledge("UnKD")
        pop = np.asarray(split.train.getnnz(axis=0), dtype=np.int64)
        gid = popularity_groups(pop, self.n_groups)
        g = int(gid.max()) + 1
        self.n_groups_ = g
        sizes = np.bincount(gid, minlength=g)
        rho = np.bincount(gid, weights=pop, minlength=g) / np.maximum(sizes, 1)
        self.counts = group_sample_counts(self.n_distill, rho, self.lambda_p)
        self.item_group = torch.as_tensor(gid)
        # padded (G, max size) item table of each group, in item-id order
        width = int(sizes.max())
        order = np.argsort(gid, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        slot = np.arange(order.size) - np.repeat(starts, sizes)
        table = torch.full((g, width), -1, dtype=torch.int64)
        table[torch.as_tensor(gid[order]), torch.as_tensor(slot)] = torch.as_tensor(order)
        c = min(self.n_candidates, width)
        indptr, indices = split.train_tensors("cpu")
        n_users, n_items = split.n_users, split.n_items
        cands, valid = [], []
        all_items = torch.arange(n_items)
        flat = table.clamp(min=0).reshape(-1)
        for s in range(0, n_users, _CHUNK):
            users = torch.arange(s, min(s + _CHUNK, n_users))
            sc = knowledge.score_items(users, all_items.expand(users.numel(), -1)).float().cpu()
            mask_train_(sc, users, indptr, indices)
            gsc = sc[:, flat].view(-1, g, width)
            gsc = torch.where(table >= 0, gsc, torch.full_like(gsc, -float("inf")))
            v, pos = torch.topk(gsc, c, dim=2)
            cands.append(torch.gather(table.expand(users.numel(), -1, -1), 2, pos))
            valid.append((~torch.isneginf(v)).sum(2))
        self.candidates = torch.cat(cands)
        self.n_valid = torch.cat(valid)
        self.pairs = torch.zeros(n_users, sum(self.counts), 2, dtype=torch.int64)
        self.pair_valid = torch.zeros(n_users, sum(self.counts), dtype=torch.bool)

    @torch.no_grad()
    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        if self.candidates.numel() == 0:
            raise no_knowledge("UnKD")
        dev = self.candidates.device
        n_users, g, c = self.candidates.shape
        m = max(self.counts) if self.counts else 0
        cdf = rank_cdf(c, self.rank_temperature)
        nv = self.n_valid.reshape(-1).cpu()  # (U·G,)
        r1 = draw_ranks(cdf, nv, (nv.numel(), m), generator)
        r2 = draw_ranks(cdf, nv, (nv.numel(), m), generator)
        ok = nv >= 2
        for _ in range(1000):  # rounds over tied draws, never over users
            tie = (r1 == r2) & ok.unsqueeze(1)
            if not bool(tie.any()):
                break
            rows = tie.nonzero()[:, 0]
            r2[tie] = draw_ranks(cdf, nv[rows], (rows.numel(), 1), generator)[:, 0]
        lo, hi = torch.minimum(r1, r2), torch.maximum(r1, r2)
        cand = self.candidates.reshape(n_users * g, c).cpu()
        pos_items = torch.gather(cand, 1, lo).view(n_users, g, m)
        neg_items = torch.gather(cand, 1, hi).view(n_users, g, m)
        valid = ok.view(n_users, g, 1).expand(-1, -1, m)
        # keep the first n_g draws of group g
        keep = torch.arange(m).unsqueeze(0) < torch.tensor(self.counts).unsqueeze(1)  # (G, m)
        pairs = torch.stack([pos_items, neg_items], -1)[:, keep]  # (U, Σ n_g, 2)
        self.pairs = pairs.clamp(min=0).to(dev)  # invalid pairs (masked) point at item 0
        self.pair_valid = valid[:, keep].to(dev)

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = batch_rows(batch.users, self.user_weighting).to(self.pairs.device)
        pairs = self.pairs[users]  # (B, P, 2)
        valid = self.pair_valid[users].to(torch.float32)
        p = pairs.shape[1]
        s = student.score_items(users, pairs.reshape(users.numel(), 2 * p)).view(-1, p, 2)
        per_pair = F.softplus(-(s[..., 0] - s[..., 1])) * valid
        per_row = per_pair.sum(1) / valid.sum(1).clamp(min=1.0)
        return reduce_terms(per_row, self.reduction)
