"""Small helpers shared by the list-based distillers: training-item masking of score chunks,
the student's top-N per user, user weighting and reduction of per-row KD terms."""

from __future__ import annotations

import torch

from recpress.evaluation.ranking import chunk_rows
from recpress.models.base import Recommender

__all__ = [
    "batch_rows",
    "check_choice",
    "mask_train_",
    "no_knowledge",
    "reduce_terms",
    "student_topk",
]

CHUNK = 2048  # users scored at once when ranking the whole catalogue
#: memory budget (MiB) that caps CHUNK on large catalogues (2048 users up to ~32k items)
STUDENT_TOPK_BUDGET_MB = 512.0


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
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's top-`n` items of every user (chunks of users, no per-user loop).

    With `split_tensors` = (indptr, indices), training items are excluded (set to -inf).
    Returns (items (n_users, n) int64, scores (n_users, n) float32) on `device`; a slot
    holding -inf marks a user with fewer than `n` unobserved items.
    """
    was_training = student.training
    student.eval()
    # at most STUDENT_TOPK_BUDGET_MB of scores (+ top-k temporaries) per chunk on large catalogues
    chunk = min(chunk, chunk_rows(student.n_items, STUDENT_TOPK_BUDGET_MB))
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


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
