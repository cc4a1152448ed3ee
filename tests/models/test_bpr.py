"""BPR-MF: the loss formula, the contract, and that it learns real preferences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpress.evaluation import evaluate
from recpress.models import BPRMF, TripletBatch, make_model
from recpress.training import TrainConfig, Trainer
from tests.conftest import shape_split


def test_loss_is_bpr_per_triple():
    model = BPRMF(embedding_dim=4).build(
        shape_split(3, 5), generator=torch.Generator().manual_seed(0)
    )
    batch = TripletBatch(torch.tensor([0, 2]), torch.tensor([1, 4]), torch.tensor([3, 0]))
    p, q = model.user_emb.weight.detach(), model.item_emb.weight.detach()
    expected = [
        -np.log(1 / (1 + np.exp(-float(p[u] @ q[i] - p[u] @ q[j]))))
        for u, i, j in [(0, 1, 3), (2, 4, 0)]
    ]
    torch.testing.assert_close(
        model.loss(batch).detach().double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-6,
    )


def test_scores_agree_and_shapes():
    model = BPRMF(embedding_dim=6).build(
        shape_split(4, 7), generator=torch.Generator().manual_seed(1)
    )
    users = torch.tensor([3, 1])
    full = model.score(users)
    assert full.shape == (2, 7)
    items = torch.tensor([[0, 6], [5, 2]])
    torch.testing.assert_close(model.score_items(users, items), full.gather(1, items))
    assert model.num_parameters() == (4 + 7) * 6
    assert model.user_embeddings().shape == (4, 6)


def test_constructor_stores_hyperparameters_only():
    model = make_model("bpr", embedding_dim=12)
    assert not model.is_built and list(model.parameters()) == []
    assert model.get_params() == {"embedding_dim": 12, "init_std": 0.01}
    with pytest.raises(ValueError):
        BPRMF(embedding_dim=0)


def test_bpr_beats_popularity_on_real_data(ml100k_split):
    split = ml100k_split
    config = TrainConfig(
        epochs=15,
        lr=5e-3,
        weight_decay=0.0,
        batch_size=1024,
        eval_every=5,
        patience=None,
        ks=[20],
        selection_metric="recall@20",
        device="cpu",
    )
    model = BPRMF(embedding_dim=32)
    Trainer(config).fit(model, split, progress=False)
    popularity = torch.as_tensor(np.asarray(split.train.sum(axis=0)).ravel())
    pop = evaluate(lambda users: popularity.expand(len(users), -1).clone(), split, ks=[20])
    bpr = evaluate(model, split, ks=[20])
    assert bpr.n_users == pop.n_users
    assert bpr.metrics["recall@20"] > pop.metrics["recall@20"] * 1.1, (bpr.metrics, pop.metrics)


def test_large_lookups_go_through_distinct_rows_with_the_same_values_and_gradients():
    """Above DEDUP_MIN indices, score_items looks each distinct row up once: same scores, same
    gradients, and a sparse gradient with at most one row per embedding row."""
    from recpress.models.bpr import DEDUP_MIN

    torch.manual_seed(0)
    a, b = BPRMF(embedding_dim=4), BPRMF(embedding_dim=4)
    a.build(shape_split(30, 50), torch.Generator().manual_seed(1))
    b.build(shape_split(30, 50), torch.Generator().manual_seed(1))
    users = torch.randint(0, 30, (DEDUP_MIN // 10 + 7,))
    items = torch.randint(0, 50, (users.numel(), 12))  # > DEDUP_MIN lookups, many duplicates
    weights = torch.randn(items.shape)
    (a.score_items(users, items) * weights).sum().backward()
    direct = torch.einsum("bd,bkd->bk", b.user_emb(users), b.item_emb(items))
    (direct * weights).sum().backward()
    assert torch.allclose(a.score_items(users, items), direct.detach(), atol=1e-6)
    for ea, eb in ((a.user_emb, b.user_emb), (a.item_emb, b.item_emb)):
        ga, gb = ea.weight.grad.coalesce(), eb.weight.grad.coalesce()
        assert torch.allclose(ga.to_dense(), gb.to_dense(), atol=1e-5)
    # the item lookups (> DEDUP_MIN) give one gradient row per distinct item, not per lookup
    assert a.item_emb.weight.grad._nnz() <= 50 < b.item_emb.weight.grad._nnz()
