"""CDAE: loss and scores vs a dense reference, negatives, dot_form, training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recpress.data.sampling import sample_negatives
from recpress.models import CDAE, UserBatch
from tests.conftest import random_split
from tests.models.clustered import fit_beats_random


def built(seed: int = 0, **params) -> CDAE:
    model = CDAE(**{"hidden_dim": 6, "init_std": 0.3, **params})
    split = random_split(12, 15, per_user=4, seed=1)
    return model.build(split, torch.Generator().manual_seed(seed))


def dense_rows(model: CDAE, users: torch.Tensor) -> torch.Tensor:
    x = torch.zeros(len(users), model.n_items)
    for b, u in enumerate(users.tolist()):
        x[b, model.indices[model.indptr[u] : model.indptr[u + 1]]] = 1.0
    return x


def hidden(model: CDAE, users: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    return torch.relu(x_in @ model.encoder.weight + model.encoder_bias + model.user_node(users))


def test_loss_matches_a_dense_reference():
    model = built(corruption=0.4, n_negatives=3)
    users = torch.tensor([5, 0, 5, 9])
    x = dense_rows(model, users)
    rows, cols = x.nonzero(as_tuple=True)  # row-major: the order forward reads the entries
    g = torch.Generator()
    g.set_state(model.rng_state.clone())
    keep = torch.zeros_like(x)
    keep[rows, cols] = (torch.rand(rows.numel(), generator=g) >= 0.4).float() / 0.6
    neg = sample_negatives(model.indptr, model.indices, users[rows], 15, g, 3)
    assert not (x[rows[:, None].expand_as(neg), neg] > 0).any()  # negatives are unobserved
    with torch.no_grad():
        scores = model.decoder(hidden(model, users, x * keep))  # (B, I)
        expected = torch.zeros(4)
        for e in range(rows.numel()):  # slow and plain: one observed entry at a time
            b = int(rows[e])
            expected[b] += F.softplus(-scores[b, cols[e]])
            expected[b] += F.softplus(scores[b, neg[e]]).sum()
        got = model(UserBatch(users))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.rng_state, g.get_state())


def test_scores_encode_the_full_row_and_dot_form_equals_them():
    model = built()
    users = torch.arange(12)
    with torch.no_grad():
        expected = model.decoder(hidden(model, users, dense_rows(model, users)))
        state = model.rng_state.clone()
        torch.testing.assert_close(model.score(users), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(model.rng_state, state)  # scoring draws nothing
        u_vec, i_vec = model.dot_form()
        assert u_vec.shape == (12, 7) and i_vec.shape == (15, 7)
        torch.testing.assert_close(u_vec @ i_vec.T, expected, rtol=1e-5, atol=1e-5)


def test_fit_beats_random():
    fit_beats_random(CDAE(hidden_dim=16), epochs=20)
