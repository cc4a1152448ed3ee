"""The one training loop."""

from recpress.training.config import TrainConfig
from recpress.training.optim import DenseAdam, LazyAdam, make_optimizer
from recpress.training.trainer import FitResult, Trainer, resolve_device

__all__ = [
    "DenseAdam",
    "FitResult",
    "LazyAdam",
    "TrainConfig",
    "Trainer",
    "make_optimizer",
    "resolve_device",
]
