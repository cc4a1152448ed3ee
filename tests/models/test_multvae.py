"""Mult-VAE: loss and scores vs a dense reference, the β schedule, dot_form, training."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from recpress.models import MultVAE, UserBatch
from tests.conftest import random_split
from tests.models.clustered import fit_beats_random


def built(seed: int = 0, **params) -> MultVAE:
    model = MultVAE(**{"hidden_dim": 8, "latent_dim": 3, **params})
    return model.build(
        random_split(12, 15, per_user=4, seed=1), torch.Generator().manual_seed(seed)
    )


def dense_rows(model: MultVAE, users: torch.Tensor) -> torch.Tensor:
    x = torch.zeros(len(users), model.n_items)
    for b, u in enumerate(users.tolist()):
        x[b, model.indices[model.indptr[u] : model.indptr[u + 1]]] = 1.0
    return x


def reference(model: MultVAE, x: torch.Tensor, keep: torch.Tensor, eps: torch.Tensor, beta):
    """The per-user loss written densely: x (B, I) binary, keep (B, I) dropout factors."""
    x_in = x / x.norm(dim=1, keepdim=True) * keep
    h = torch.tanh(x_in @ model.encoder.weight + model.encoder_bias)
    stats = model.to_latent(h)
    mu, logvar = stats[:, :3], stats[:, 3:]
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = model.decoder_out(torch.tanh(model.decoder_hidden(z)))
    nll = -(F.log_softmax(logits, dim=1) * x).sum(1)
    kl = 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(1)
    return nll + beta * kl


def test_loss_matches_a_dense_reference():
    model = built(anneal_steps=4, anneal_cap=0.3)
    model.steps.fill_(2)  # β = min(0.3, 2/4) = 0.3
    users = torch.tensor([3, 0, 11, 3])
    x = dense_rows(model, users)
    # the draws forward makes: U(0,1) per observed entry in row order, then ε
    g = torch.Generator()
    g.set_state(model.rng_state.clone())
    u = torch.rand(int(x.sum()), generator=g)
    eps = torch.randn(4, 3, generator=g)
    keep = torch.zeros_like(x)
    keep[x.nonzero(as_tuple=True)] = (u >= 0.5).float() / 0.5
    with torch.no_grad():
        expected = reference(model, x, keep, eps, 0.3)
        got = model(UserBatch(users))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.rng_state, g.get_state())  # the model's stream advanced as ours


def test_beta_schedule_follows_the_updates():
    model = built(anneal_steps=10, anneal_cap=0.2)
    batch = UserBatch(torch.tensor([0, 1]))
    assert model.beta == 0.0
    for _ in range(3):
        model.post_step(batch)
    model.post_step(None)  # the optimiser's catch-up is not an update
    assert int(model.steps) == 3 and abs(model.beta - 0.2) < 1e-12  # min(0.2, 3/10)
    slow = built(anneal_steps=100)
    slow.steps.fill_(7)
    assert abs(slow.beta - 0.07) < 1e-12
    assert built(anneal_steps=0, anneal_cap=0.4).beta == 0.4
    assert "steps" in model.state_dict() and "rng_state" in model.state_dict()


def test_scores_use_mu_without_noise_and_dot_form_equals_them():
    model = built()
    users = torch.arange(12)
    with torch.no_grad():
        x = dense_rows(model, users)
        h = torch.tanh(x / x.norm(dim=1, keepdim=True) @ model.encoder.weight + model.encoder_bias)
        mu = model.to_latent(h)[:, :3]
        expected = model.decoder_out(torch.tanh(model.decoder_hidden(mu)))
        state = model.rng_state.clone()
        torch.testing.assert_close(model.score(users), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(model.rng_state, state)  # scoring draws nothing
        u_vec, i_vec = model.dot_form()
        assert u_vec.shape == (12, 9) and i_vec.shape == (15, 9)
        torch.testing.assert_close(u_vec @ i_vec.T, expected, rtol=1e-5, atol=1e-5)


def test_forward_is_deterministic_given_the_state():
    model = built()
    twin = copy.deepcopy(model)
    batch = UserBatch(torch.tensor([1, 2, 5]))
    first = model(batch)
    assert torch.equal(twin(batch), first)
    assert not torch.equal(model(batch), first)  # the stream moved on


def test_fit_beats_random():
    fit_beats_random(MultVAE(hidden_dim=32, latent_dim=8, anneal_steps=50), epochs=20)
