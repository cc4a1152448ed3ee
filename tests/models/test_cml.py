"""CML: score and hinge vs explicit loops, norm clipping, the dot form, training, round-trip."""

from __future__ import annotations

import numpy as np
import torch

from recpress.models import CML, ModelConfig, TripletBatch, build_model
from tests.conftest import shape_split
from tests.models.clustered import fit_beats_random


def built(n_users: int = 4, n_items: int = 7, seed: int = 0, **params) -> CML:
    model = CML(**{"embedding_dim": 5, **params})
    return model.build(shape_split(n_users, n_items), generator=torch.Generator().manual_seed(seed))


def test_score_and_hinge_match_loops():
    model = built(margin=0.5)
    p = model.user_emb.weight.detach().double().numpy()
    q = model.item_emb.weight.detach().double().numpy()
    users = torch.tensor([2, 0, 3])
    full = model.score(users).detach().double().numpy()
    for b, u in enumerate(users.tolist()):
        for i in range(7):
            expected = -sum((p[u, k] - q[i, k]) ** 2 for k in range(5))
            assert abs(full[b, i] - expected) < 1e-5
    items = torch.tensor([[0, 6, 2], [5, 2, 2], [1, 4, 3]])
    torch.testing.assert_close(model.score_items(users, items), model.score(users).gather(1, items))

    batch = TripletBatch(torch.tensor([0, 3, 1]), torch.tensor([3, 4, 2]), torch.tensor([6, 1, 0]))
    expected = []
    for u, i, j in zip(batch.users.tolist(), batch.pos.tolist(), batch.neg.tolist(), strict=True):
        d_i = sum((p[u, k] - q[i, k]) ** 2 for k in range(5))
        d_j = sum((p[u, k] - q[j, k]) ** 2 for k in range(5))
        expected.append(max(0.0, 0.5 + d_i - d_j))
    loss = model(batch)
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_embeddings():
    model = built(margin=10.0)  # every triple inside the margin
    batch = TripletBatch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    model(batch).sum().backward()
    grad = model.user_emb.weight.grad
    assert grad is not None and grad.is_sparse
    assert torch.isfinite(grad.to_dense()).all() and grad.to_dense()[:2].abs().sum() > 0
    assert model.item_emb.weight.grad.to_dense()[2:6].abs().sum() > 0


def test_init_and_post_step_clip_norms():
    model = built(n_users=50, n_items=60, embedding_dim=64)
    std = model.user_emb.weight.detach().std().item()
    assert abs(std - 1 / 8) < 0.02  # N(0, 1/d)
    with torch.no_grad():
        model.user_emb.weight.mul_(3.0)
        model.item_emb.weight.mul_(3.0)
    batch = TripletBatch(torch.tensor([0, 1, 1]), torch.tensor([2, 3, 3]), torch.tensor([4, 5, 2]))
    before = model.user_emb.weight.detach().clone()
    model.post_step(batch)
    norms_u = model.user_emb.weight.detach().norm(dim=1)
    norms_i = model.item_emb.weight.detach().norm(dim=1)
    assert (norms_u[:2] <= 1 + 1e-6).all() and (norms_i[[2, 3, 4, 5]] <= 1 + 1e-6).all()
    torch.testing.assert_close(model.user_emb.weight.detach()[2:], before[2:])  # rows untouched
    direction = before[0] / before[0].norm()
    torch.testing.assert_close(model.user_emb.weight.detach()[0], direction)
    model.post_step()
    assert (model.user_emb.weight.detach().norm(dim=1) <= 1 + 1e-6).all()
    assert (model.item_emb.weight.detach().norm(dim=1) <= 1 + 1e-6).all()
    small = built(embedding_dim=64)
    with torch.no_grad():
        small.user_emb.weight.mul_(0.01)
    kept = small.user_emb.weight.detach().clone()
    small.post_step()
    torch.testing.assert_close(small.user_emb.weight.detach(), kept)  # inside the ball: unchanged


def test_dot_form_ranks_items_as_the_score_does():
    model = built(n_users=20, n_items=50, embedding_dim=8, seed=4)
    users_f, items_f = model.dot_form()
    assert users_f.shape == (20, 9) and items_f.shape == (50, 9)
    users = torch.arange(20)
    with torch.no_grad():
        score = model.score(users)
        dot = users_f @ items_f.T
        norms = model.user_emb.weight.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(dot - norms, score, rtol=1e-5, atol=1e-5)
    top_score = score.topk(10, dim=1).indices
    top_dot = dot.topk(10, dim=1).indices
    assert torch.equal(top_score, top_dot)


def test_config_and_state_dict_round_trip():
    config = ModelConfig.model_validate({"name": "cml", "embedding_dim": 6})
    assert config.model_dump() == {
        "name": "cml",
        "embedding_dim": 6,
        "margin": 1.0,
        "max_norm": 1.0,
    }
    split = shape_split(4, 7)
    model = build_model(config, split, torch.Generator().manual_seed(0))
    assert model.get_params() == {"embedding_dim": 6, "margin": 1.0, "max_norm": 1.0}
    other = build_model(config, split, torch.Generator().manual_seed(1))
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.score(torch.arange(4)), model.score(torch.arange(4)))
    assert model.has_embeddings and model.user_embeddings().shape == (4, 6)


def test_training_beats_random():
    fit_beats_random(CML(embedding_dim=16), epochs=10, lr=5e-2)


def test_build_draws_only_from_the_generator():
    state = torch.get_rng_state()
    a, b = built(seed=5), built(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a.user_emb.weight, b.user_emb.weight, rtol=0, atol=0)


def test_artifact_serves_the_dot_form():
    from recpress.serving.artifact import Artifact

    model = built(n_users=20, n_items=50, embedding_dim=8, seed=2)
    art = Artifact.from_model(model, shape_split(20, 50))
    assert art.item_emb.shape == (50, 9)
    with torch.no_grad():
        expected = model.score(torch.arange(20)).topk(10, dim=1).indices
    assert torch.equal((art.user_emb @ art.item_emb.T).topk(10, dim=1).indices, expected)


def test_training_with_the_projection_after_each_step(monkeypatch):
    """What the trainer's post_step call does: every step followed by the norm clipping."""
    import recpress.training.trainer as trainer_module

    model = CML(embedding_dim=16)
    make = trainer_module.make_optimizer

    def make_clipping(*args, **kwargs):
        optimizer = make(*args, **kwargs)
        step = optimizer.step

        def step_then_clip(*a, **k):
            out = step(*a, **k)
            model.post_step()
            return out

        optimizer.step = step_then_clip
        return optimizer

    monkeypatch.setattr(trainer_module, "make_optimizer", make_clipping)
    fit_beats_random(model, epochs=10, lr=5e-2)
    model.post_step()  # after the lazy optimiser's final flush
    assert (model.user_emb.weight.detach().norm(dim=1) <= 1 + 1e-5).all()
