"""The one training loop."""

from recpress.training.config import TrainConfig
from recpress.training.objective import TrainingObjective
from recpress.training.optim import DenseAdam, LazyAdam, make_optimizer
from recpress.training.trainer import FitResult, Trainer, resolve_device

__all__ = [
    "DenseAdam",
    "FitResult",
    "LazyAdam",
    "TrainConfig",
    "Trainer",
    "TrainingObjective",
    "make_optimizer",
    "resolve_device",
]
