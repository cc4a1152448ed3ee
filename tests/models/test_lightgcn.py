"""LightGCN: propagation vs a dense numpy computation, the loss, caching, training, round-trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from recpress.data.types import Split, to_csr
from recpress.models import LightGCN, ModelConfig, TripletBatch, build_model
from recpress.models.lightgcn import symmetric_sparse_mm
from tests.models.clustered import fit_beats_random


def tiny_split() -> Split:
    """5 users x 7 items; user 4 and item 6 have no training interaction."""
    rows = np.array([0, 0, 1, 1, 1, 2, 3, 3, 0])
    cols = np.array([0, 3, 1, 2, 3, 5, 4, 0, 2])
    train = to_csr(rows, cols, 5, 7)
    empty = to_csr(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 5, 7)
    return Split(train, empty, empty, np.arange(5), np.arange(7))


def dense_final(split: Split, model: LightGCN) -> tuple[np.ndarray, np.ndarray]:
    r = split.train.toarray().astype(np.float64)
    u, i = r.shape
    a = np.zeros((u + i, u + i))
    a[:u, u:] = r
    a[u:, :u] = r.T
    deg = a.sum(1)
    inv = np.array([d**-0.5 if d > 0 else 0.0 for d in deg])
    a_hat = inv[:, None] * a * inv[None, :]
    e = np.concatenate(
        [model.user_emb.weight.detach().double().numpy(), model.item_emb.weight.detach().double()]
    )
    layers = [e]
    for _ in range(model.n_layers):
        layers.append(a_hat @ layers[-1])
    final = sum(layers) / (model.n_layers + 1)
    return final[:u], final[u:]


def built(split: Split, seed: int = 0, **params) -> LightGCN:
    model = LightGCN(**{"embedding_dim": 4, **params})
    return model.build(split, generator=torch.Generator().manual_seed(seed))


def test_propagation_matches_dense_reference():
    split = tiny_split()
    model = built(split, n_layers=3)
    assert model.adjacency.layout == torch.sparse_csr
    assert model.adjacency.col_indices().dtype == torch.int32
    assert model.adjacency.values().numel() == 2 * split.train.nnz
    users, items = model.propagate()
    ref_u, ref_i = dense_final(split, model)
    np.testing.assert_allclose(users.detach().double().numpy(), ref_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items.detach().double().numpy(), ref_i, rtol=1e-5, atol=1e-6)
    # zero-degree nodes keep only their ego embedding / (L + 1)
    ego_u4 = model.user_emb.weight[4].detach()
    torch.testing.assert_close(users[4].detach(), ego_u4 / 4)


def test_propagation_gradient_matches_autograd_on_the_dense_matrix():
    # the symmetric product's hand-written backward against autograd through a dense Â, fp64
    split = tiny_split()
    model = built(split, n_layers=2).to(torch.float64)
    a_dense = model.adjacency.to_dense()
    torch.testing.assert_close(a_dense, a_dense.T)
    weights = torch.randn(12, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    users, items = model.propagate()
    (torch.cat([users, items]) * weights).sum().backward()
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().requires_grad_()
    total, layer = ego, ego
    for _ in range(2):
        layer = a_dense @ layer
        total = total + layer
    ((total / 3) * weights).sum().backward()
    torch.testing.assert_close(model.user_emb.weight.grad, ego.grad[:5])
    torch.testing.assert_close(model.item_emb.weight.grad, ego.grad[5:])
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: symmetric_sparse_mm(model.adjacency, t), (x,))


def test_loss_is_bpr_on_final_embeddings_plus_ego_l2():
    split = tiny_split()
    model = built(split, n_layers=2, l2=0.3)
    batch = TripletBatch(torch.tensor([0, 3, 1]), torch.tensor([3, 4, 2]), torch.tensor([6, 1, 0]))
    ref_u, ref_i = dense_final(split, model)
    ego_u = model.user_emb.weight.detach().double().numpy()
    ego_i = model.item_emb.weight.detach().double().numpy()
    expected = []
    for u, i, j in zip(batch.users.tolist(), batch.pos.tolist(), batch.neg.tolist(), strict=True):
        x = ref_u[u] @ ref_i[i] - ref_u[u] @ ref_i[j]
        reg = (ego_u[u] ** 2).sum() + (ego_i[i] ** 2).sum() + (ego_i[j] ** 2).sum()
        expected.append(np.log1p(np.exp(-x)) + 0.15 * reg)
    loss = model(batch)
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)
    loss.sum().backward()
    assert model.user_emb.weight.grad is not None and model.item_emb.weight.grad is not None
    assert not model.user_emb.weight.grad.is_sparse
    assert torch.isfinite(model.item_emb.weight.grad).all()
    assert model.item_emb.weight.grad.abs().sum() > 0


def test_scores_agree_and_cache_follows_parameters():
    split = tiny_split()
    model = built(split)
    model.eval()
    users = torch.tensor([3, 0, 4])
    with torch.no_grad():
        full = model.score(users)
        assert full.shape == (3, 7)
        items = torch.tensor([[0, 6], [5, 2], [1, 1]])
        torch.testing.assert_close(model.score_items(users, items), full.gather(1, items))
        ref_u, ref_i = dense_final(split, model)
        np.testing.assert_allclose(full.double().numpy(), ref_u[[3, 0, 4]] @ ref_i.T, atol=1e-6)
        first = model.materialise()
        assert model.materialise()[0] is first[0]  # cached
        model.user_emb.weight.mul_(2.0)  # a parameter update invalidates the cache
        assert model.materialise()[0] is not first[0]
        torch.testing.assert_close(model.materialise()[0], model.propagate()[0])
    u, i = model.dot_form()
    assert u.shape == (5, 4) and i.shape == (7, 4)
    torch.testing.assert_close(u[users] @ i.T, model.score(users).detach())


def test_representation_final_or_ego():
    split = tiny_split()
    final = built(split)
    ego = built(split, representation="ego")
    with torch.no_grad():
        torch.testing.assert_close(final.user_embeddings(), final.propagate()[0])
        torch.testing.assert_close(ego.item_embeddings(), ego.item_emb.weight)
        torch.testing.assert_close(ego.user_embeddings(torch.tensor([2])), ego.user_emb.weight[[2]])
    # with gradients enabled, the final embeddings carry them back to the ego table
    final.user_embeddings(torch.tensor([0, 1])).sum().backward()
    assert final.item_emb.weight.grad.abs().sum() > 0
    assert final.embedding_dim == 4 and final.has_embeddings


def test_config_and_state_dict_round_trip(tmp_path):
    config = ModelConfig.model_validate({"name": "lightgcn", "embedding_dim": 8, "n_layers": 2})
    assert config.model_dump() == {
        "name": "lightgcn",
        "embedding_dim": 8,
        "n_layers": 2,
        "init_std": 0.1,
        "l2": 0.0,
        "representation": "final",
    }
    split = tiny_split()
    model = build_model(config, split, torch.Generator().manual_seed(3))
    state = model.state_dict()
    assert set(state) == {"user_emb.weight", "item_emb.weight"}  # no adjacency
    from safetensors.torch import load_file, save_file

    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "m.safetensors")
    other = build_model(config, split, torch.Generator().manual_seed(99))
    other.load_state_dict(load_file(tmp_path / "m.safetensors"))
    other.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(other.score(torch.arange(5)), model.score(torch.arange(5)))
    moved = other.to(torch.float64)
    assert moved.adjacency.dtype == torch.float64 and moved.adjacency.layout == torch.sparse_csr
    assert moved.adjacency.col_indices().dtype == torch.int32  # indices are not cast
    twin = copy.deepcopy(moved)  # a sparse CSR buffer would have no storage to copy
    assert twin.adjacency_values.data_ptr() != moved.adjacency_values.data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(twin.score(torch.arange(5)), moved.score(torch.arange(5)))
    with pytest.raises(Exception, match="representation"):
        ModelConfig.model_validate({"name": "lightgcn", "representation": "bogus"})


def test_training_beats_random():
    fit_beats_random(LightGCN(embedding_dim=16, n_layers=2))


def test_build_draws_only_from_the_generator():
    state = torch.get_rng_state()
    a, b = built(tiny_split(), seed=5), built(tiny_split(), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a.item_emb.weight, b.item_emb.weight, rtol=0, atol=0)


def test_artifact_holds_the_propagated_embeddings():
    from recpress.serving.artifact import Artifact

    split = tiny_split()
    model = built(split, representation="ego").eval()
    art = Artifact.from_model(model, split)
    assert art.user_emb.shape == (5, 4)  # MF-sized
    users = torch.arange(5)
    torch.testing.assert_close(art.user_emb @ art.item_emb.T, model.score(users).detach())
