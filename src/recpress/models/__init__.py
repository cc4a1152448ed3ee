"""Base recommenders, one file each, behind the `Recommender` contract.

Adding a model: write its class (a `Recommender` subclass, hyperparameters as constructor
arguments) in its own file and register it with the one line ``MODELS`` entry below.
"""

from __future__ import annotations

import torch

from recpress.data.types import Split
from recpress.models.base import Recommender, TripletBatch, UserBatch
from recpress.models.bpr import BPRMF
from recpress.models.cdae import CDAE
from recpress.models.cml import CML
from recpress.models.config import ModelConfig
from recpress.models.lightgcn import LightGCN
from recpress.models.multvae import MultVAE
from recpress.models.neumf import NeuMF
from recpress.models.registry import MODELS, make_model, model_class, register

register(BPRMF)
register(LightGCN)
register(NeuMF)
register(CML)
register(MultVAE)
register(CDAE)


def build_model(
    config: ModelConfig, split: Split, generator: torch.Generator | None = None
) -> Recommender:
    """The model a config names, with its parameters created for the training `split`."""
    return make_model(config.name, **config.params).build(split, generator=generator)


__all__ = [
    "BPRMF",
    "CDAE",
    "CML",
    "MODELS",
    "LightGCN",
    "ModelConfig",
    "MultVAE",
    "NeuMF",
    "Recommender",
    "TripletBatch",
    "UserBatch",
    "build_model",
    "make_model",
    "model_class",
    "register",
]
