"""Mult-VAE and CDAE served: the exported dot form recommends what the model's scores rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recpress.models import make_model
from recpress.serving import TopKRecommender
from recpress.serving.artifact import Artifact
from tests.topk_checks import assert_same_topk


@pytest.mark.parametrize(
    "name, params", [("multvae", {"hidden_dim": 16, "latent_dim": 4}), ("cdae", {})]
)
def test_served_top_k_is_the_models(name, params, small_split, tmp_path: Path):
    model = make_model(name, **params).build(small_split, torch.Generator().manual_seed(0))
    model.eval()
    art = Artifact.from_model(model, small_split).save(tmp_path / "art")
    rec = TopKRecommender.load(art, selector="torch")
    users = torch.arange(small_split.n_users)
    with torch.no_grad():
        scores = model.score(users).double()
    for u in range(small_split.n_users):
        scores[u, small_split.train[u].indices] = -torch.inf
    expected = torch.topk(scores, 10, dim=1)
    values, items = rec.recommend_all(k=10)
    assert_same_topk(values, items, expected.values, expected.indices, scores=scores)
    recs = rec.recommend(list(small_split.user_ids[:2]), k=3)
    assert not recs.fallback.any()
    assert list(recs.items[0]) == list(small_split.item_ids[items[0, :3].numpy()])
