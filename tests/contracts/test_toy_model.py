"""A new model gets the contract by registering: a score-only toy defined here.

The toy touches only its own class and one registration line (the ``monkeypatch.setitem`` in the
fixture, which stands for ``register(ItemPopUserBias)`` in ``recpress/models/__init__.py``).
"""

from __future__ import annotations

from typing import Annotated

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recpress.data.types import Split
from recpress.models import MODELS, Recommender, TripletBatch
from tests.contracts.models import RecommenderContract, built


class ItemPopUserBias(Recommender):
    """Score-only toy: s_ui = b_u + c · b_i, trained with the BPR loss on s_ui − s_uj."""

    name = "toy-bias"
    has_embeddings = False

    def __init__(self, init_std: Annotated[float, Field(gt=0)] = 0.1, scale: float = 1.0):
        super().__init__()
        self.init_std, self.scale = float(init_std), float(scale)

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        self.user_bias = nn.Parameter(torch.empty(split.n_users))
        self.item_bias = nn.Parameter(torch.empty(split.n_items))
        with torch.no_grad():
            self.user_bias.normal_(0.0, self.init_std, generator=generator)
            self.item_bias.normal_(0.0, self.init_std, generator=generator)

    def forward(self, batch: TripletBatch) -> torch.Tensor:
        diff = self.scale * (self.item_bias[batch.pos] - self.item_bias[batch.neg])
        return F.softplus(-diff)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_bias[users, None] + self.scale * self.item_bias[None, :]

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user_bias[users, None] + self.scale * self.item_bias[items]


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(MODELS, ItemPopUserBias.name, ItemPopUserBias)  # the registration line
    return ItemPopUserBias.name


class TestToyModel(RecommenderContract):
    @pytest.fixture
    def model_name(self, registered):
        return registered


def test_representation_methods_refuse_a_score_only_student(registered):
    from recpress.distill import make_distillers
    from recpress.distill.registry import check_student
    from recpress.errors import ConfigError

    student = built(registered)
    for method in ("de", "ftd", "htd"):
        with pytest.raises(ConfigError, match="score-only") as err:
            check_student(make_distillers(method), student)
        assert repr(method) in str(err.value) and "embeddings" in str(err.value)
    check_student(make_distillers("rd"), student)  # response-based: fine
    check_student(make_distillers("de"), built("bpr"))


def test_unknown_toy_key_lists_its_parameters(registered):
    from recpress.errors import ConfigError
    from recpress.experiments.config import RunConfig, parse_config

    with pytest.raises(ConfigError, match=r"init_std=0\.1, scale=1\.0"):
        parse_config(RunConfig, {"model": {"name": registered, "embedding_dim": 8}})
