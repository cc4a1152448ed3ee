"""The registry of base models: name -> `Recommender` subclass."""

from __future__ import annotations

from recpress.errors import unknown_name
from recpress.models.base import Recommender

MODELS: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make a model available by its ``name`` (configs, CLI, contract tests)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> type[Recommender]:
    """The registered class called `name`; ConfigError listing the known names otherwise."""
    if name not in MODELS:
        raise unknown_name("model", name, list(MODELS), field="model.name")
    return MODELS[name]


def make_model(name: str, **params) -> Recommender:
    """Instantiate a registered model by name (hyperparameters only; call ``build`` next)."""
    return model_class(name)(**params)
