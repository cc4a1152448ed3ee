"""The synthetic generator: exact counts, distinct pairs, power-law popularity, learnable
latent structure, determinism; its registry names (synthetic-gowalla, synthetic:UxIxN[:seed])."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpress.data import list_datasets, load_split
from recpress.data.synthetic import parse_synthetic_name, synthetic_interactions
from recpress.errors import ConfigError
from recpress.evaluation import evaluate
from recpress.models import BPRMF
from recpress.training import TrainConfig, Trainer


def test_exact_counts_distinct_pairs_and_minimum_per_user():
    inter = synthetic_interactions(400, 900, 20_000, min_per_user=7, seed=1)
    assert len(inter) == 20_000
    assert (inter.n_users, inter.n_items) == (400, 900)
    keys = inter.users * inter.n_items + inter.items
    assert len(np.unique(keys)) == len(keys)
    counts = np.bincount(inter.users, minlength=400)
    assert counts.min() >= 7 and counts.max() <= 450
    assert inter.items.min() >= 0 and inter.items.max() < 900


def test_heavy_users_hit_the_cap_and_still_get_distinct_items():
    # 60 items, cap 30 per user; 20 users x 25 on average: many users at the cap
    inter = synthetic_interactions(20, 60, 500, min_per_user=5, seed=0, activity_sigma=2.0)
    counts = np.bincount(inter.users, minlength=20)
    assert counts.sum() == 500 and counts.max() == 30
    keys = inter.users * 60 + inter.items
    assert len(np.unique(keys)) == 500


def test_popularity_follows_a_power_law():
    inter = synthetic_interactions(3000, 4000, 100_000, popularity_exponent=0.8, seed=2)
    pop = np.sort(np.bincount(inter.items, minlength=4000))[::-1].astype(float)
    rank = np.arange(1, len(pop) + 1)
    keep = (rank >= 10) & (rank <= 400)
    slope = np.polyfit(np.log(rank[keep]), np.log(pop[keep]), 1)[0]
    assert -1.2 < slope < -0.45, slope
    flat = synthetic_interactions(3000, 4000, 100_000, popularity_exponent=0.0, seed=2)
    pop0 = np.sort(np.bincount(flat.items, minlength=4000))[::-1].astype(float)
    assert pop0[:40].sum() / pop0.sum() < pop[:40].sum() / pop.sum() / 1.5


def test_deterministic_by_seed():
    a = synthetic_interactions(200, 300, 5000, seed=5)
    b = synthetic_interactions(200, 300, 5000, seed=5)
    c = synthetic_interactions(200, 300, 5000, seed=6)
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.items, c.items)


def test_latent_structure_is_learnable_bpr_beats_popularity():
    split = load_split("synthetic:2000x3000x40000:0")
    config = TrainConfig(
        epochs=5,
        lr=1e-2,
        weight_decay=0.0,
        batch_size=512,
        eval_every=5,
        patience=None,
        ks=[20],
        selection_metric="recall@20",
        selection="fixed_epochs",
        device="cpu",
    )
    model = BPRMF(embedding_dim=16)
    Trainer(config).fit(model, split, progress=False)
    popularity = torch.as_tensor(np.asarray(split.train.sum(axis=0)).ravel())
    pop = evaluate(lambda users: popularity.expand(len(users), -1).clone(), split, ks=[20])
    bpr = evaluate(model, split, ks=[20])
    assert bpr.metrics["recall@20"] > pop.metrics["recall@20"] * 1.5, (bpr.metrics, pop.metrics)


def test_registry_names():
    assert parse_synthetic_name("synthetic:10x20x100:3") == {
        "n_users": 10,
        "n_items": 20,
        "n_interactions": 100,
        "seed": 3,
    }
    assert parse_synthetic_name("ml-100k") is None
    with pytest.raises(ConfigError, match="synthetic:USERSxITEMSxINTERACTIONS"):
        load_split("synthetic:10x20")
    with pytest.raises(ConfigError, match="do not fit"):
        load_split("synthetic:10x20x5000")
    with pytest.raises(ConfigError, match="reads no files"):
        load_split("synthetic:10x20x60", path="/tmp")
    split = load_split("synthetic:50x80x600:1")
    assert split.protocol == "ratio" and split.dataset == "synthetic:50x80x600:1"
    assert split.train.nnz + split.valid.nnz + split.test.nnz == 600
    assert split.fingerprint() == load_split("synthetic:50x80x600:1").fingerprint()
    row = next(r for r in list_datasets() if r["name"] == "synthetic-gowalla")
    assert (row["users"], row["items"], row["interactions"]) == (29_858, 40_981, 1_027_370)
    assert 0.0008 < row["density"] < 0.0009
