"""The `Distiller` contract: how a KD method plugs into the one training loop."""

from __future__ import annotations

import inspect
from typing import ClassVar

import torch
from torch import nn

from recpress.data.types import Split
from recpress.models.base import Recommender, TripletBatch


class Distiller(nn.Module):
    """Base class of knowledge-distillation methods.

    Lifecycle (driven by the Trainer):
        1. ``prepare(teacher, split, knowledge)`` once, before training: precompute what the
           method needs from the frozen teacher (top-N lists, embeddings, ...) and create the
           auxiliary modules (experts, assignment networks) as sub-modules of ``self``.
        2. ``on_epoch_start(student, epoch, generator)`` at the start of every epoch: per-epoch
           sampling (interesting/uninteresting items, ...).
        3. ``loss(student, batch, epoch) -> scalar`` per batch, already reduced with the method's
           reduction (``reduction``; "sum" reproduces the references, see docs/methods.md §1.5).
        4. ``on_epoch_end(epoch)``: schedules (temperature annealing).

    Auxiliary parameters are ``self.parameters()``: they are trained with the student by the
    same optimiser (coupled weight decay) and dropped at inference. The teacher is frozen and is
    never registered as a sub-module.
    """

    #: registry name, e.g. "rrd"
    name: ClassVar[str] = ""
    #: what the method needs from the teacher: subset of {"embeddings", "scores", "topk"}
    requires: ClassVar[frozenset[str]] = frozenset()
    #: what the method needs from the student beyond scores: subset of {"embeddings"} (a method
    #: whose ``requires`` holds "embeddings" needs student embeddings too)
    student_requires: ClassVar[frozenset[str]] = frozenset()
    #: default KD weight λ of the method (docs/methods.md §4.0)
    default_weight: ClassVar[float] = 1.0
    #: True for a method learning from several teachers at once (HetComp): its ``prepare``
    #: gets ``knowledge`` = a list of `Knowledge`, one per teacher in config order, and
    #: ``teacher`` = None
    multi_teacher: ClassVar[bool] = False
    #: rough training time per epoch relative to the no-KD student (bench/results/method_speed.md,
    #: d=20, averaged over the schedule); only orders a parallel sweep, costliest runs first
    epoch_cost: ClassVar[float] = 1.0

    def __init__(self) -> None:
        super().__init__()

    def get_params(self) -> dict[str, object]:
        """Hyperparameters as given to the constructor (scikit-learn style: each constructor
        argument is stored under its own name)."""
        names = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n in names if n != "self"}

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        """Precompute teacher knowledge; create auxiliary modules."""

    def check_teachers(self, knowledge) -> None:
        """Raise ConfigError if the teacher(s) cannot serve this method (called before the run
        directory exists, after the ``requires`` check); default: nothing more to check."""

    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        """Per-epoch sampling; default: nothing."""

    def on_epoch_end(self, epoch: int) -> None:
        """Per-epoch schedules; default: nothing."""

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        """Scalar KD loss for this batch (already reduced)."""
        raise NotImplementedError

    def num_aux_parameters(self) -> int:
        """Training-only parameters owned by this method."""
        return int(sum(p.numel() for p in self.parameters()))

    def extra_state_tensors(self) -> dict[str, torch.Tensor]:
        """Per-epoch state (samples, schedules) to checkpoint for an exact resume; default none."""
        return {}

    def load_extra_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``extra_state_tensors`` returned."""
