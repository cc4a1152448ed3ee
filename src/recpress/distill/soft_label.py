"""KD: Hinton-style soft-label cross-entropy on a top-K list (methods.md §4.1).

Also holds the small helpers shared by the list-based distillers of this package (training-item
masking of score chunks, the student's top-N per user, per-row reduction with user weighting).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.registry import register
from recpress.models.base import Recommender, TripletBatch

__all__ = ["KD", "mask_train_", "student_topk", "reduce_terms", "batch_rows", "no_knowledge"]

_CHUNK = 2048  # users scored at once when ranking the whole catalogue


def no_knowledge(method: str) -> ValueError:
    return ValueError(
        f"{method} needs the teacher knowledge cache: call prepare(teacher, split, knowledge)"
        " with a recpress.distill.knowledge object"
    )


def mask_train_(
    scores: torch.Tensor, users: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """Set the training items of `users` to -inf in `scores` (len(users), n_items), in place."""
    users = users.to(indptr.device)
    start, end = indptr[users], indptr[users + 1]
    deg = end - start
    if int(deg.sum()) == 0:
        return scores
    rows = torch.repeat_interleave(torch.arange(users.numel(), device=indptr.device), deg)
    offs = torch.arange(rows.numel(), device=indptr.device) - torch.repeat_interleave(
        torch.cumsum(deg, 0) - deg, deg
    )
    cols = indices[torch.repeat_interleave(start, deg) + offs]
    scores[rows.to(scores.device), cols.to(scores.device)] = -float("inf")
    return scores


@torch.no_grad()
def student_topk(
    student: Recommender,
    n: int,
    split_tensors: tuple[torch.Tensor, torch.Tensor] | None,
    device: torch.device,
    chunk: int = _CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's top-`n` items of every user (chunks of users, no per-user loop).

    With `split_tensors` = (indptr, indices), training items are excluded (set to -inf).
    Returns (items (n_users, n) int64, scores (n_users, n) float32) on `device`; a slot
    holding -inf marks a user with fewer than `n` unobserved items.
    """
    was_training = student.training
    student.eval()
    items, vals = [], []
    for s in range(0, student.n_users, chunk):
        users = torch.arange(s, min(s + chunk, student.n_users), device=device)
        sc = student.score(users).float()
        if split_tensors is not None:
            mask_train_(sc, users, *split_tensors)
        v, i = torch.topk(sc, n, dim=1)
        items.append(i.to(device))
        vals.append(v.to(device))
    student.train(was_training)
    return torch.cat(items), torch.cat(vals)


def batch_rows(users: torch.Tensor, user_weighting: str) -> torch.Tensor:
    """Rows a user-level KD term is computed on: the raw batch rows ("rows", a user counts once
    per sampled interaction) or the unique users of the batch ("unique")."""
    if user_weighting == "rows":
        return users
    if user_weighting == "unique":
        return torch.unique(users)
    raise ValueError(f"user_weighting must be 'rows' or 'unique', got {user_weighting!r}")


def reduce_terms(per_term: torch.Tensor, reduction: str) -> torch.Tensor:
    """Sum or mean of the per-row KD terms; an empty batch gives 0."""
    if reduction == "sum":
        return per_term.sum()
    if reduction == "mean":
        return per_term.mean() if per_term.numel() else per_term.sum()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


@register
class KD(Distiller):
    """Soft-label cross-entropy on a top-K list Λ_u (methods.md §4.1).

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
        self.guide = _check_choice("guide", guide, ("student", "teacher"))
        self.tau_sq = bool(tau_sq)
        self.mask_train = bool(mask_train)
        self.reduction = _check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = _check_choice("user_weighting", user_weighting, ("rows", "unique"))
        # Λ (n_users, K): teacher guide → fixed after prepare; student guide → per epoch
        self.register_buffer("lists", torch.zeros(0, 0, dtype=torch.int64), persistent=True)
        # teacher scores on Λ for the teacher guide (recomputed by prepare, not checkpointed)
        self.register_buffer("teacher_scores", torch.zeros(0, 0), persistent=False)
        self._knowledge: Any = None
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None

    def get_params(self) -> dict[str, object]:
        return {
            "k": self.k,
            "tau": self.tau,
            "guide": self.guide,
            "tau_sq": self.tau_sq,
            "mask_train": self.mask_train,
            "reduction": self.reduction,
            "user_weighting": self.user_weighting,
        }

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise no_knowledge("KD")
        object.__setattr__(self, "_knowledge", knowledge)  # never a sub-module
        self._train = split.train_tensors("cpu")
        k = min(self.k, split.n_items)
        self.k_eff = k
        if self.guide == "teacher":
            lists = knowledge.user_topk(k, mask_train=self.mask_train).to(torch.int64)
            self.lists = lists
            t = []
            for s in range(0, lists.shape[0], _CHUNK):
                u = torch.arange(s, min(s + _CHUNK, lists.shape[0]))
                t.append(knowledge.score_items(u, lists[s : s + _CHUNK]).float())
            self.teacher_scores = torch.cat(t)
        else:
            self.lists = torch.zeros(split.n_users, k, dtype=torch.int64)

    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        if self.guide != "student":
            return
        dev = self.lists.device
        train = None
        if self.mask_train and self._train is not None:
            train = tuple(t.to(dev) for t in self._train)
        items, _ = student_topk(student, self.lists.shape[1], train, dev)
        self.lists = items

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = batch_rows(batch.users, self.user_weighting)
        users = users.to(self.lists.device)
        items = self.lists[users]
        if self.guide == "teacher":
            t = self.teacher_scores[users]
        else:
            with torch.no_grad():
                t = self._knowledge.score_items(users, items).float().to(items.device)
        s = student.score_items(users, items)
        p_t = torch.softmax(t.detach() / self.tau, dim=-1)
        log_p_s = F.log_softmax(s / self.tau, dim=-1)
        per_row = -(p_t * log_p_s).sum(-1)
        if self.tau_sq:
            per_row = per_row * self.tau**2
        return reduce_terms(per_row, self.reduction)
