"""ModelConfig: generic over the registered models, old stored configs unchanged."""

from __future__ import annotations

import pytest

from recpress.errors import ConfigError
from recpress.experiments.config import RunConfig, normalise_run_yaml, parse_config
from recpress.models import BPRMF, ModelConfig, build_model
from tests.conftest import random_split

OLD_RUN_YAML = """data:
  dataset: citeulike-t-td
  path: null
  protocol: null
  split_seed: 0
  min_rating: null
  kcore: 0
  interactions: null
  train: null
  valid: null
  test: null
  format: null
  columns: null
model:
  name: bpr
  embedding_dim: 20
  init_std: 0.01
"""


def test_old_model_section_normalises_to_the_same_yaml():
    text = normalise_run_yaml(OLD_RUN_YAML)
    model_part = text.split("model:\n", 1)[1].split("train:", 1)[0]
    assert model_part == "  name: bpr\n  embedding_dim: 20\n  init_std: 0.01\n"


def test_defaults_and_order():
    assert ModelConfig().model_dump() == {"name": "bpr", "embedding_dim": 200, "init_std": 0.01}
    assert list(ModelConfig(init_std=0.5, embedding_dim=3).model_dump()) == [
        "name",
        "embedding_dim",
        "init_std",
    ]
    assert ModelConfig(embedding_dim="7").params == {"embedding_dim": 7, "init_std": 0.01}


@pytest.mark.parametrize(
    "model, expected",
    [
        ({"embedding_dim": 0}, "model.embedding_dim"),
        ({"init_std": 0}, "model.init_std"),
        ({"dim": 8}, "model.dim: unknown key for model 'bpr'; its parameters: embedding_dim=200"),
        ({"name": "svdpp"}, "unknown model 'svdpp'"),
    ],
)
def test_bad_model_sections(model, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(RunConfig, {"model": model})
    assert expected in str(err.value)


def test_build_model_draws_as_before():
    import torch

    split = random_split(10, 12, per_user=3)
    a = build_model(ModelConfig(embedding_dim=4), split, torch.Generator().manual_seed(0))
    b = BPRMF(embedding_dim=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        b.build(split)
        b.user_emb.weight.normal_(0.0, 0.01, generator=g)
        b.item_emb.weight.normal_(0.0, 0.01, generator=g)
    assert torch.equal(a.user_emb.weight, b.user_emb.weight)
    assert torch.equal(a.item_emb.weight, b.item_emb.weight)
