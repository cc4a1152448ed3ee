"""The training objective: the student and its weighted distillers as one module."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recpress.models.base import Recommender, TripletBatch


class TrainingObjective(nn.Module):
    """The loss of one batch, as one module.

    loss(batch, epoch) = reduce(student(batch)) + Σ_m λ_m · distiller_m.loss(student, batch, epoch);
    reduce is the sum (``reduction="sum"``) or the mean over the B triples of the (B,) base
    loss; the first term is left out when a distiller's ``keeps_base_loss`` is False (HetComp
    with ``bpr=False``: the original release's objective); the terms are added in the
    distillers' order. The student and the distillers are registered sub-modules, so
    ``parameters()`` is the student's parameters followed by each distiller's auxiliary ones
    (the teacher is never a sub-module) and a wrapper such as DistributedDataParallel can wrap
    the objective.
    """

    def __init__(
        self,
        student: Recommender,
        distillers: Sequence[tuple[nn.Module, float]] = (),
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.student = student
        self.distillers = nn.ModuleList([d for d, _ in distillers])
        self.weights = [w for _, w in distillers]
        self.reduction = reduction
        self.base_loss = all(getattr(d, "keeps_base_loss", True) for d, _ in distillers)

    def forward(self, batch: TripletBatch, epoch: int) -> torch.Tensor:
        """Scalar loss of one batch."""
        if self.base_loss:
            per_triple = self.student(batch)
            loss = per_triple.sum() if self.reduction == "sum" else per_triple.mean()
        else:
            loss = torch.zeros((), device=batch.users.device)
        for d, weight in zip(self.distillers, self.weights, strict=True):
            loss = loss + weight * d.loss(self.student, batch, epoch)
        return loss
