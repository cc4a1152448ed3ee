"""Base recommenders, one file each, behind the `Recommender` contract."""

from __future__ import annotations

from recpress.errors import unknown_name
from recpress.models.base import Recommender, TripletBatch
from recpress.models.bpr import BPRMF

MODELS: dict[str, type[Recommender]] = {BPRMF.name: BPRMF}


def make_model(name: str, **params) -> Recommender:
    """Instantiate a registered model by name (hyperparameters only; call ``build`` next)."""
    if name not in MODELS:
        raise unknown_name("model", name, list(MODELS), field="model.name")
    return MODELS[name](**params)


__all__ = ["BPRMF", "MODELS", "Recommender", "TripletBatch", "make_model"]
