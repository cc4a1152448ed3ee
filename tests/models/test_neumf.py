"""NeuMF: scores vs a per-pair loop, both losses, chunked scoring, representations, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpress.errors import ConfigError
from recpress.models import ModelConfig, NeuMF, TripletBatch, build_model
from recpress.models import neumf as neumf_module
from tests.conftest import shape_split
from tests.models.clustered import fit_beats_random


def built(n_users: int = 4, n_items: int = 7, seed: int = 0, **params) -> NeuMF:
    model = NeuMF(**{"embedding_dim": 4, "init_std": 0.5, **params})
    return model.build(shape_split(n_users, n_items), generator=torch.Generator().manual_seed(seed))


def pair_score(model: NeuMF, u: int, i: int) -> float:
    """hᵀ[p^G ⊙ q^G ; MLP([p^M ; q^M])] + b for one pair, written out plainly."""
    with torch.no_grad():
        gmf = model.gmf_user.weight[u] * model.gmf_item.weight[i]
        x = torch.cat([model.mlp_user.weight[u], model.mlp_item.weight[i]])
        for layer in model.mlp:
            x = torch.relu(layer.weight @ x + layer.bias)
        z = torch.cat([gmf, x])
        return float(model.head.weight[0] @ z + model.head.bias[0])


@pytest.mark.parametrize("layers", [1, 3])
def test_scores_match_a_per_pair_loop(layers):
    model = built(embedding_dim=8, layers=layers)
    assert [m.out_features for m in model.mlp] == [(16 >> k) for k in range(1, layers + 1)]
    users = torch.tensor([2, 0, 3])
    with torch.no_grad():
        full = model.score(users)
    assert full.shape == (3, 7)
    expected = [[pair_score(model, u, i) for i in range(7)] for u in users.tolist()]
    np.testing.assert_allclose(full.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    items = torch.tensor([[0, 6, 2], [5, 2, 2], [1, 4, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model.score_items(users, items), full.gather(1, items))


def test_score_chunks_give_the_same_scores(monkeypatch):
    model = built(n_items=23)
    users = torch.arange(4)
    with torch.no_grad():
        whole = model.score(users)
        monkeypatch.setattr(neumf_module, "SCORE_CHUNK_ELEMENTS", 4 * 8 * 3)  # 3 items a chunk
        torch.testing.assert_close(model.score(users), whole)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_loss_per_triple(loss):
    model = built(loss=loss)
    batch = TripletBatch(torch.tensor([0, 3, 1]), torch.tensor([3, 4, 2]), torch.tensor([6, 1, 0]))
    expected = []
    for u, i, j in zip(batch.users.tolist(), batch.pos.tolist(), batch.neg.tolist(), strict=True):
        s_i, s_j = pair_score(model, u, i), pair_score(model, u, j)
        if loss == "bce":  # -log σ(s_i) - log(1 - σ(s_j))
            expected.append(np.log1p(np.exp(-s_i)) + np.log1p(np.exp(s_j)))
        else:
            expected.append(np.log1p(np.exp(-(s_i - s_j))))
    out = model(batch)
    assert out.shape == (3,)
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert torch.isfinite(grad).all(), name
        if not (loss == "bpr" and name == "head.bias"):  # b cancels in s_ui - s_uj
            assert grad.abs().sum() > 0, name


def test_representations():
    gmf, mlp, concat = (built(representation=r) for r in ("gmf", "mlp", "concat"))
    assert gmf.embedding_dim == 4 and concat.embedding_dim == 8
    torch.testing.assert_close(gmf.user_embeddings(), gmf.gmf_user.weight)
    torch.testing.assert_close(mlp.item_embeddings(torch.tensor([1])), mlp.mlp_item.weight[[1]])
    both = concat.item_embeddings(torch.tensor([2, 5]))
    assert both.shape == (2, 8)
    torch.testing.assert_close(both[:, 4:], concat.mlp_item.weight[[2, 5]])
    assert concat.get_params()["embedding_dim"] == 4


def test_config_validation_and_state_dict_round_trip():
    config = ModelConfig.model_validate({"name": "neumf", "embedding_dim": 6, "layers": 2})
    assert config.model_dump() == {
        "name": "neumf",
        "embedding_dim": 6,
        "layers": 2,
        "init_std": 0.01,
        "loss": "bce",
        "representation": "gmf",
    }
    split = shape_split(4, 7)
    model = build_model(config, split, torch.Generator().manual_seed(0))
    assert model.get_params() == config.params
    other = build_model(config, split, torch.Generator().manual_seed(1))
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.score(torch.arange(4)), model.score(torch.arange(4)))
    with pytest.raises(Exception, match="loss"):
        ModelConfig.model_validate({"name": "neumf", "loss": "mse"})
    with pytest.raises(ConfigError, match="layers"):
        NeuMF(embedding_dim=2, layers=3)


def test_training_beats_random():
    fit_beats_random(NeuMF(embedding_dim=16, init_std=0.1), epochs=10, lr=1e-2)


def test_build_draws_only_from_the_generator():
    state = torch.get_rng_state()
    a, b = built(seed=5), built(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert a.dot_form() is None  # no MF-form export


def test_artifact_is_in_model_form():
    from recpress.serving.artifact import Artifact

    model = built()
    art = Artifact.from_model(model, shape_split(4, 7))  # no MF form: the model itself
    assert art.form == "model" and art.model is model and art.user_emb is None
    assert art.manifest["model_params"] == model.get_params()
