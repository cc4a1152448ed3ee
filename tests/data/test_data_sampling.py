"""Negative sampling: never a positive, shapes, seeding, errors, epoch triples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recpress.data import (
    Split,
    epoch_triples,
    load_split,
    sample_excluding,
    sample_negatives,
    to_csr,
)
from recpress.errors import DataError


def dense_csr(n_users=60, n_items=40, density=0.8, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = False  # room for a negative
    u, i = np.nonzero(mask)
    return to_csr(u, i, n_users, n_items)


def tensors(m: sp.csr_matrix):
    return torch.as_tensor(m.indptr, dtype=torch.int64), torch.as_tensor(
        m.indices, dtype=torch.int64
    )


def test_never_a_positive_dense():
    m = dense_csr()
    indptr, indices = tensors(m)
    g = torch.Generator().manual_seed(0)
    users = torch.arange(m.shape[0]).repeat(50)
    neg = sample_negatives(indptr, indices, users, m.shape[1], g, n_per_user=20)
    assert neg.shape == (len(users), 20) and neg.dtype == torch.int64
    dense = torch.as_tensor(m.toarray() > 0)
    assert not dense[users.unsqueeze(1).expand_as(neg), neg].any()
    assert neg.min() >= 0 and neg.max() < m.shape[1]
    # every allowed item turns up (uniform over I \ O_u, not a fixed subset)
    seen = torch.zeros_like(dense)
    seen[users.unsqueeze(1).expand_as(neg), neg] = True
    assert torch.equal(seen, ~dense)


def test_seeded_and_full_user_error():
    m = dense_csr()
    indptr, indices = tensors(m)
    users = torch.arange(m.shape[0])
    a = sample_negatives(indptr, indices, users, m.shape[1], torch.Generator().manual_seed(5))
    b = sample_negatives(indptr, indices, users, m.shape[1], torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    full = to_csr(np.zeros(5, np.int64), np.arange(5), 2, 5)
    ip, ix = tensors(full)
    with pytest.raises(DataError, match="user 0"):
        sample_negatives(ip, ix, torch.tensor([1, 0]), 5, torch.Generator())
    assert sample_negatives(ip, ix, torch.tensor([1]), 5, torch.Generator()).shape == (1, 1)


def test_sample_excluding_without_replacement():
    m = dense_csr(30, 50, density=0.5, seed=1)
    indptr, indices = tensors(m)
    rows = torch.arange(30)
    g = torch.Generator().manual_seed(0)
    dense = torch.as_tensor(m.toarray() > 0)
    allowed = (~dense).sum(1)
    extra = torch.full((30, 3), -1, dtype=torch.int64)
    for r in range(30):  # test setup only: three allowed columns per row become forbidden
        extra[r] = torch.nonzero(~dense[r])[:3, 0]
    k = int((allowed - 3).min())
    out = sample_excluding(
        indptr, indices, rows, 50, k, g, extra_forbidden=extra, replacement=False
    )
    assert out.shape == (30, k)
    assert not dense[rows.unsqueeze(1).expand_as(out), out].any()
    assert not (out.unsqueeze(2) == extra.unsqueeze(1)).any()
    srt = out.sort(1).values
    assert (srt[:, 1:] != srt[:, :-1]).all()
    with pytest.raises(DataError):
        sample_excluding(
            indptr, indices, rows, 50, k + 1, g, extra_forbidden=extra, replacement=False
        )


def test_epoch_triples_generated():
    m = dense_csr(80, 100, density=0.3)
    empty = sp.csr_matrix(m.shape, dtype=np.float32)
    s = Split(m, empty, empty.copy(), np.arange(80), np.arange(100))
    u, p, n = epoch_triples(s, torch.Generator().manual_seed(0), "cpu")
    assert len(u) == len(p) == len(n) == m.nnz
    got = np.sort(u.numpy() * 100 + p.numpy())
    coo = m.tocoo()
    assert np.array_equal(got, np.sort(coo.row * 100 + coo.col))  # every pair exactly once
    assert not (u.numpy()[:-1] <= u.numpy()[1:]).all()  # shuffled
    assert m[u.numpy().copy(), n.numpy().copy()].sum() == 0
    u2, _, _ = epoch_triples(s, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(u, u2)


def test_epoch_triples_td(shared_data):
    s = load_split("citeulike-t-td")
    u, p, n = epoch_triples(s, torch.Generator().manual_seed(0), "cpu")
    assert len(u) == 115_142
    assert s.train[u.numpy().copy(), n.numpy().copy()].sum() == 0
    assert s.train[u.numpy().copy(), p.numpy().copy()].sum() == 115_142


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling():
    m = dense_csr()
    indptr, indices = (t.cuda() for t in tensors(m))
    users = torch.arange(m.shape[0], device="cuda").repeat(20)
    g = torch.Generator(device="cuda").manual_seed(0)
    neg = sample_negatives(indptr, indices, users, m.shape[1], g, n_per_user=10)
    assert neg.is_cuda
    dense = torch.as_tensor(m.toarray() > 0, device="cuda")
    assert not dense[users.unsqueeze(1).expand_as(neg), neg].any()
    empty = sp.csr_matrix(m.shape, dtype=np.float32)
    s = Split(m, empty, empty.copy(), np.arange(m.shape[0]), np.arange(m.shape[1]))
    u, p, n = epoch_triples(s, torch.Generator().manual_seed(0), "cuda")  # CPU generator too
    assert u.is_cuda and not dense[u, n].any() and dense[u, p].all()


def test_sample_excluding_extra_lists_sorted_or_not_and_repeated_rows():
    m = dense_csr(40, 60, density=0.3, seed=2)
    indptr, indices = tensors(m)
    dense = torch.as_tensor(m.toarray() > 0)
    gen = torch.Generator().manual_seed(3)
    rows = torch.randint(40, (25,), generator=gen)  # repeats allowed
    extra = torch.full((25, 8), -1, dtype=torch.int64)
    for p, r in enumerate(rows.tolist()):  # up to 8 allowed columns, shuffled, −1 padded
        free = torch.nonzero(~dense[r])[:, 0]
        pick = free[torch.randperm(free.numel(), generator=gen)[: (p % 9)]]
        extra[p, : pick.numel()] = pick
    outs = []
    for is_sorted in (False, True):
        ex = torch.sort(extra, 1).values if is_sorted else extra
        g = torch.Generator().manual_seed(0)
        outs.append(
            sample_excluding(
                indptr, indices, rows, 60, 5, g, ex, replacement=False, extra_sorted=is_sorted
            )
        )
    assert torch.equal(outs[0], outs[1])  # same draws, same decisions
    out = outs[0]
    assert not dense[rows.unsqueeze(1).expand_as(out), out].any()
    assert not ((out.unsqueeze(2) == extra.unsqueeze(1)) & (extra.unsqueeze(1) >= 0)).any()
    srt = out.sort(1).values
    assert (srt[:, 1:] != srt[:, :-1]).all()
