"""KD: Hinton-style soft-label cross-entropy on a top-K list (docs/methods.md §4.1)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.common import (  # noqa: E402
    CHUNK,
    batch_rows,
    check_choice,
    no_knowledge,
    reduce_terms,
    student_topk,
)
from recpress.distill.registry import register
from recpress.models.base import Recommender, TripletBatch

__all__ = ["KD"]


@register
class KD(Distiller):
    """Soft-label cross-entropy on a top-K list Λ_u (docs/methods.md §4.1).

    p^T = softmax_{i∈Λ_u}(t_ui/τ) (no gradient), log p^S = log_softmax_{i∈Λ_u}(s_ui/τ),
    ℓ(u) = −Σ_{i∈Λ_u} p^T_ui · log p^S_ui  (× τ² when ``tau_sq``), summed over the batch rows.

    Args:
        k: list length K (reference 50).
        tau: temperature τ (reference 1).
        guide: "student" (the student's top-K, recomputed at each epoch start; reference) or
            "teacher" (the teacher's top-K, computed once).
        tau_sq: multiply by Hinton's τ² (the reference does not).
        mask_train: exclude training items from Λ_u (``topk_mask_train``; the reference keeps
            them, so False).
        reduction: "sum" (reference) or "mean" over the KD rows.
        user_weighting: "rows" (reference: one term per batch row) or "unique" users.

    Reference λ = 1 (``default_weight``); lr / wd 1e-3 / 1e-7, batch 2048.
    """

    name = "kd"
    epoch_cost = 12.0
    requires = frozenset({"scores", "topk"})
    default_weight = 1.0

    def __init__(
        self,
        k: int = 50,
        tau: float = 1.0,
        guide: str = "student",
        tau_sq: bool = False,
        mask_train: bool = False,
        reduction: str = "sum",
        user_weighting: str = "rows",
    ) -> None:
        super().__init__()
        if int(k) <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        if not float(tau) > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.k = int(k)
        self.tau = float(tau)
        self.guide = check_choice("guide", guide, ("student", "teacher"))
        self.tau_sq = bool(tau_sq)
        self.mask_train = bool(mask_train)
        self.reduction = check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        # Λ (n_users, K): teacher guide → fixed after prepare; student guide → per epoch
        self.register_buffer("lists", torch.zeros(0, 0, dtype=torch.int64), persistent=True)
        # teacher scores on Λ (n_users, K): by prepare (teacher guide) or with the lists at each
        # epoch start (student guide); not checkpointed, recomputed from the lists
        self.register_buffer("teacher_scores", torch.zeros(0, 0), persistent=False)
        self._knowledge: Any = None
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise no_knowledge("KD")
        object.__setattr__(self, "_knowledge", knowledge)  # never a sub-module
        self._train = split.train_tensors("cpu")
        k = min(self.k, split.n_items)
        self.k_eff = k
        if self.guide == "teacher":
            self.lists = knowledge.user_topk(k, mask_train=self.mask_train).to(torch.int64)
            self._score_lists()
        else:
            self.lists = torch.zeros(split.n_users, k, dtype=torch.int64)

    @torch.no_grad()
    def _score_lists(self) -> None:
        """teacher_scores (n_users, K) = t_{u, Λ_u} for every user, in chunks of users."""
        lists, dev = self.lists, self.lists.device
        t = []
        for s in range(0, lists.shape[0], CHUNK):
            u = torch.arange(s, min(s + CHUNK, lists.shape[0]), device=dev)
            t.append(self._knowledge.score_items(u, lists[s : s + CHUNK]).float().to(dev))
        self.teacher_scores = torch.cat(t) if t else torch.zeros(0, lists.shape[1], device=dev)

    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        if self.guide != "student":
            return
        dev = self.lists.device
        train = None
        if self.mask_train and self._train is not None:
            train = tuple(t.to(dev) for t in self._train)
        items, _ = student_topk(student, self.lists.shape[1], train, dev)
        self.lists = items
        self._score_lists()  # once per epoch: a user's rows in the batches share them

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = batch_rows(batch.users, self.user_weighting)
        users = users.to(self.lists.device)
        if self.teacher_scores.shape != self.lists.shape:  # lists set without their scores
            self._score_lists()
        items = self.lists[users]
        t = self.teacher_scores[users]
        s = student.score_items(users, items)
        p_t = torch.softmax(t.detach() / self.tau, dim=-1)
        log_p_s = F.log_softmax(s / self.tau, dim=-1)
        per_row = -(p_t * log_p_s).sum(-1)
        if self.tau_sq:
            per_row = per_row * self.tau**2
        return reduce_terms(per_row, self.reduction)
