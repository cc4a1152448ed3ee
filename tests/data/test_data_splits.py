"""Split protocols: invariants, seeding, per-protocol counts, on generated data and ml-100k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recpress.data import Interactions, Split, build_interactions, load_dataset, split
from recpress.errors import ConfigError, DataError


def gen_interactions(n_users=200, n_items=300, seed=0, with_time=True) -> Interactions:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, min(40, n_items), n_users)
    users = np.repeat(np.arange(n_users), counts)
    items = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts])
    frame = pd.DataFrame({"user": users, "item": items})
    if with_time:
        frame["timestamp"] = rng.integers(0, 1000, len(users))
    return build_interactions(frame, "gen")


def check_invariants(s: Split, inter: Interactions, exact_union: bool = True) -> None:
    parts = [s.train, s.valid, s.test]
    for m in parts:
        assert m.shape == (inter.n_users, inter.n_items)
        assert m.has_sorted_indices
    for a in range(3):
        for b in range(a + 1, 3):
            assert parts[a].multiply(parts[b]).nnz == 0
    union = (s.train + s.valid + s.test).tocsr()
    if exact_union:
        assert union.nnz == len(inter)
        assert (union != inter.to_csr()).nnz == 0
    else:
        assert (union - union.multiply(inter.to_csr())).nnz == 0


def rowcount(m: sp.csr_matrix) -> np.ndarray:
    return np.diff(m.indptr)


@pytest.mark.parametrize("protocol", ["loo", "ratio", "temporal", "ordered-811", "loo-full"])
def test_invariants_and_seeds(protocol):
    inter = gen_interactions()
    a = split(inter, protocol, seed=1)
    check_invariants(a, inter)
    assert a.protocol == protocol and a.dataset == "gen"
    b = split(inter, protocol, seed=1)
    assert a.fingerprint() == b.fingerprint()
    if protocol in ("loo", "ratio", "loo-full"):
        assert split(inter, protocol, seed=2).fingerprint() != a.fingerprint()


def test_loo_counts():
    inter = gen_interactions()
    s = split(inter, "loo", seed=0)
    n = np.bincount(inter.users, minlength=inter.n_users)
    eligible = n >= 3
    assert (rowcount(s.valid)[eligible] == 1).all() and (rowcount(s.test)[eligible] == 1).all()
    assert (rowcount(s.valid)[~eligible] == 0).all() and (rowcount(s.test)[~eligible] == 0).all()
    assert (rowcount(s.train)[~eligible] == n[~eligible]).all()


def test_ratio_floors():
    inter = gen_interactions()
    s = split(inter, "ratio", seed=0, fractions=(0.6, 0.2, 0.2))
    n = np.bincount(inter.users, minlength=inter.n_users)
    assert (rowcount(s.test) == np.floor(0.2 * n + 1e-9)).all()
    assert (rowcount(s.valid) == np.floor(0.2 * n + 1e-9)).all()
    h = split(inter, "ratio-hetcomp", seed=0)
    check_invariants(h, inter, exact_union=False)
    warm = rowcount(h.train.T.tocsr()) > 0
    assert warm[h.valid.indices].all() and warm[h.test.indices].all()
    assert ((rowcount(h.valid) > 0) == (rowcount(h.test) > 0)).all()


def test_temporal_takes_latest():
    inter = gen_interactions()
    s = split(inter, "temporal")
    ts = sp.csr_matrix(
        (inter.timestamps.astype(np.float64) + 1, (inter.users, inter.items)),
        shape=(inter.n_users, inter.n_items),
    )
    for u in range(0, inter.n_users, 17):  # spot check, not a hot path
        if rowcount(s.test)[u]:
            t_test = ts[u, s.test.indices[s.test.indptr[u]]]
            t_train = ts[u, s.train.indices[s.train.indptr[u] : s.train.indptr[u + 1]]].toarray()
            assert (t_train <= t_test).all()
    with pytest.raises(ConfigError, match="timestamps"):
        split(gen_interactions(with_time=False), "temporal")
    fr = split(inter, "temporal", fractions=(0.8, 0.1, 0.1))
    check_invariants(fr, inter)
    n = np.bincount(inter.users, minlength=inter.n_users)
    assert (rowcount(fr.train) == np.maximum(np.floor(0.8 * n + 1e-9), 1)).all()


def test_fixed_from_parts_and_errors():
    inter = gen_interactions(50, 60)
    s = split(inter, "loo", seed=3)

    def frame(m):
        c = m.tocoo()
        return pd.DataFrame({"user": inter.user_ids[c.row], "item": inter.item_ids[c.col]})

    f = split(inter, "fixed", parts=(frame(s.train), frame(s.valid), frame(s.test)))
    assert f.fingerprint() == s.fingerprint()
    with pytest.raises(DataError, match="no part"):
        split(inter, "fixed", parts=(frame(s.train), frame(s.valid), frame(s.valid)[:0]))
    with pytest.raises(DataError, match="overlap"):
        split(inter, "fixed", parts=(frame(s.train), frame(s.valid), frame(s.train)))


def test_unknown_protocol_and_option():
    inter = gen_interactions(20, 30)
    with pytest.raises(ConfigError, match="loo") as ei:
        split(inter, "bogus")
    assert "ratio" in str(ei.value) and "temporal" in str(ei.value)
    with pytest.raises(ConfigError, match="frobnicate"):
        split(inter, "loo", frobnicate=1)


def test_ml100k_splits(shared_data):
    inter = load_dataset("ml-100k")
    assert (inter.n_users, inter.n_items, len(inter)) == (943, 1682, 100_000)
    assert len(load_dataset("ml-100k", min_rating=4)) == 55_375
    for protocol in ("loo", "temporal", "ratio"):
        s = split(inter, protocol, seed=0)
        check_invariants(s, inter)
    s = split(inter, "loo", seed=0)
    assert s.valid.nnz == 943 and s.test.nnz == 943
    assert split(inter, "loo", seed=0).fingerprint() == s.fingerprint()
    assert split(inter, "loo", seed=1).fingerprint() != s.fingerprint()
