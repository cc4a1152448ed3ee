"""TopKRecommender: seen items excluded, original ids, unknown-user policies, brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recpress.errors import ConfigError
from recpress.serving import TopKRecommender, UnknownUserError, recommender
from tests.topk_checks import assert_same_topk


def reference_scores(rec: TopKRecommender, users: torch.Tensor, exclude_seen: bool = True):
    """float64 scores of `users` (B, n_items) from the artifact's embeddings, seen items -inf."""
    art = rec.artifact
    scores = art.user_emb[users].double() @ art.item_emb.double().T
    if exclude_seen:
        for r, u in enumerate(users.tolist()):
            scores[r, art.seen_indices[art.seen_indptr[u] : art.seen_indptr[u + 1]]] = -torch.inf
    return scores


def brute_force(model, split, u: int, k: int) -> list[int]:
    scores = (model.user_emb.weight[u] @ model.item_emb.weight.T).detach().numpy().copy()
    scores[split.train[u].indices] = -np.inf
    return list(np.argsort(-scores, kind="stable")[:k])


@pytest.mark.parametrize("selector", ["numba", "torch"])
def test_matches_brute_force_and_excludes_seen(
    small_artifact: Path, small_model, small_split, selector: str
):
    rec = TopKRecommender.load(small_artifact, selector=selector)
    assert rec.selector == selector
    users = list(small_split.user_ids)
    items, scores = rec.recommend(users, k=10)
    assert items.shape == (40, 10) and scores.shape == (40, 10)
    assert items.dtype.kind == "U" and items[0, 0].startswith("i")
    for u in range(40):
        seen = set(small_split.item_ids[small_split.train[u].indices])
        assert not seen & set(items[u])
        assert list(items[u]) == list(
            small_split.item_ids[brute_force(small_model, small_split, u, 10)]
        )
        assert np.all(np.diff(scores[u]) <= 0)
    with_seen, _ = rec.recommend(users[:3], k=60, exclude_seen=False)
    assert all(len(set(row)) == 60 for row in with_seen)


def test_order_and_single_id(small_artifact: Path):
    rec = TopKRecommender.load(small_artifact)
    both = rec.recommend(["u5", "u2"], k=4)
    one = rec.recommend("u2", k=4)
    assert list(both.items[1]) == list(one.items[0]) and len(one) == 1
    assert both.rows()[0]["user"] == "u5"


@pytest.mark.parametrize("selector", ["numba", "torch"])
def test_k_beyond_unseen_items_pads_with_minus_inf(small_artifact: Path, selector: str):
    rec = TopKRecommender.load(small_artifact, selector=selector)
    res = rec.recommend(["u0"], k=1000)  # 60 items, 8 seen -> 52 real, 8 padding
    assert res.items.shape == (1, 60)
    assert np.isinf(res.scores[0]).sum() == 8
    assert len(res.rows()[0]["items"]) == 52


def test_unknown_user_popularity_fallback_is_flagged(small_artifact: Path, small_split):
    rec = TopKRecommender.load(small_artifact)
    res = rec.recommend(["u1", "nobody", 7], k=5)
    assert res.fallback.tolist() == [False, True, True]
    popular = np.argsort(-np.asarray(small_split.train.sum(0)).ravel(), kind="stable")[:5]
    assert list(res.items[1]) == list(small_split.item_ids[popular])
    assert res.rows()[1]["fallback"] is True


def test_unknown_user_error_policy(small_artifact: Path):
    rec = TopKRecommender.load(small_artifact, unknown="error")
    with pytest.raises(UnknownUserError, match="'nobody'"):
        rec.recommend(["u1", "nobody"], k=5)
    assert rec.recommend(["nobody"], k=5, unknown="popularity").fallback.all()
    with pytest.raises(ConfigError, match="policy"):
        TopKRecommender.load(small_artifact, unknown="ignore")


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k(small_artifact: Path, k):
    rec = TopKRecommender.load(small_artifact)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        rec.recommend(["u1"], k=k)


@pytest.mark.parametrize("selector", ["numba", "torch"])
def test_chunking_gives_the_same_answer(small_artifact: Path, selector: str):
    a = TopKRecommender.load(small_artifact, selector=selector)
    b = TopKRecommender.load(small_artifact, chunk_elements=60 * 3, selector=selector)
    assert b.chunk_users == 3  # an explicit chunk size is kept as given
    assert a.chunk_users >= a.artifact.dim  # the default: at least d users per chunk
    va, ta = a.recommend_all(k=7)
    vb, tb = b.recommend_all(k=7)
    assert_same_topk(va, ta, vb, tb, scores=reference_scores(a, torch.arange(a.n_users)))


@pytest.mark.parametrize("fanout", [0, 2, 3, 8])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_compiled_and_torch_selectors_agree(small_artifact: Path, fanout: int, exclude_seen: bool):
    torch_rec = TopKRecommender.load(small_artifact, selector="torch", fanout=0)
    compiled = TopKRecommender.load(small_artifact, selector="numba", fanout=fanout)
    users = torch.arange(torch_rec.n_users)
    scores = reference_scores(torch_rec, users, exclude_seen)
    for k in (1, 5, 13, 60):
        # the two products may round an ulp apart (BLAS kernels differ between CPUs)
        va, ta = torch_rec.topk_internal(users, k, exclude_seen=exclude_seen)
        vb, tb = compiled.topk_internal(users, k, exclude_seen=exclude_seen)
        assert_same_topk(va, ta, vb, tb, scores=scores)
        # one user alone (serial kernel; the 1-row matmul may round differently)
        one_v, one_t = compiled.topk_internal(users[3:4], k, exclude_seen=exclude_seen)
        assert_same_topk(one_v, one_t, vb[3:4], tb[3:4], scores=scores[3:4])


def test_tiles_and_rows_products_agree(small_artifact: Path, monkeypatch):
    """The "tiles" batch product (items in strips) returns what the "rows" one does, for every
    chunk size and k, including k above the strip width (then the rows path serves)."""
    rows = TopKRecommender.load(small_artifact, product="rows")
    assert rows.product == "rows" and rows._item_tiles is None
    auto = TopKRecommender.load(small_artifact)  # dim 8 <= TILED_MAX_DIM, 60 items
    assert auto.product == "tiles" and auto.chunk_users == max(1, 2**18 // auto.n_items)
    for limit, value in (("TILED_MAX_DIM", 7), ("TILED_MAX_ITEMS", 59)):
        with monkeypatch.context() as patch:
            patch.setattr(recommender, limit, value)
            assert TopKRecommender.load(small_artifact).product == "rows"
    width = auto._item_tiles.shape[2]
    users = torch.arange(rows.n_users)
    reference = {flag: reference_scores(rows, users, flag) for flag in (True, False)}
    for chunk in (1, 3, 64):
        tiles = TopKRecommender.load(small_artifact, product="tiles", chunk_elements=chunk * 60)
        for k in (1, 2, width, width + 1, 40):
            for exclude_seen in (True, False):
                va, ta = rows.topk_internal(users, k, exclude_seen=exclude_seen)
                vb, tb = tiles.topk_internal(users, k, exclude_seen=exclude_seen)
                assert_same_topk(va, ta, vb, tb, scores=reference[exclude_seen])


def test_selector_choice_and_errors(small_artifact: Path):
    assert TopKRecommender.load(small_artifact).selector == "numba"
    with pytest.raises(ConfigError, match="selector must be one of auto, numba, torch"):
        TopKRecommender.load(small_artifact, selector="fast")
    with pytest.raises(ConfigError, match="CPU only"):
        TopKRecommender.load(small_artifact, selector="numba", device="meta")
    with pytest.raises(ConfigError, match="fanout must be 0 or >= 2"):
        TopKRecommender.load(small_artifact, fanout=1)
    with pytest.raises(ConfigError, match="product must be one of auto, rows, tiles"):
        TopKRecommender.load(small_artifact, product="strips")
    for settings in ({"selector": "torch"}, {"fanout": 0}):
        assert TopKRecommender.load(small_artifact, **settings).product == "rows"
        with pytest.raises(ConfigError, match="product 'tiles' needs selector 'numba'"):
            TopKRecommender.load(small_artifact, product="tiles", **settings)


@pytest.mark.parametrize("fanout", [2, 3, 4])
def test_hierarchical_topk_in_the_recommender_is_exact(small_artifact: Path, fanout: int):
    plain = TopKRecommender.load(small_artifact, fanout=0, selector="torch")
    staged = TopKRecommender.load(small_artifact, fanout=fanout, selector="torch")
    assert staged.levels >= 1 and plain.levels == 0
    for k in (1, 2, 3):
        va, ta = plain.recommend_all(k=k)
        vb, tb = staged.recommend_all(k=k)
        assert_same_topk(va, ta, vb, tb, scores=reference_scores(plain, torch.arange(40)))
    res = staged.recommend(["u0", "u1"], k=2)
    assert list(res.items[0]) == list(plain.recommend(["u0"], k=2).items[0])


@pytest.mark.parametrize(("fanout", "levels", "k"), [(2, 5, 3), (3, 3, 8), (4, 3, 5), (8, 2, 7)])
def test_hierarchical_topk_matches_a_full_sort(fanout: int, levels: int, k: int):
    """Against a stable full sort, on rows with many ties and -inf (masked) entries: the same
    values always, the same ids wherever the value is not tied."""
    from recpress.serving.recommender import _hierarchical_topk
    from recpress.serving.selection import choose_levels

    gen = torch.Generator().manual_seed(fanout)
    width = fanout**levels * k  # the top level can hold exactly k groups
    used = choose_levels(width, k, fanout, levels)
    assert 1 <= used <= levels
    scores = torch.randint(0, 40, (64, width), generator=gen).float()  # many ties
    scores[torch.rand(64, width, generator=gen) < 0.3] = float("-inf")
    scores[0, : width - k + 1] = float("-inf")  # fewer unmasked items than k
    values, ids = _hierarchical_topk(scores.clone(), k, fanout, used)
    ref_values, _ = torch.sort(scores, dim=1, descending=True, stable=True)
    assert torch.equal(values, ref_values[:, :k])
    assert torch.equal(scores.gather(1, ids), values)  # every id carries its value
    assert all(len(set(row)) == k for row in ids.tolist())  # no item twice
    for forced in range(1, levels + 1):  # every valid depth, not only the cheapest
        assert torch.equal(_hierarchical_topk(scores.clone(), k, fanout, forced)[0], values)
    assert choose_levels(width, width, fanout, levels) == 0  # k = whole row: plain top-k


@pytest.mark.parametrize("selector", ["numba", "torch"])
def test_empty_requests(small_artifact: Path, selector: str):
    rec = TopKRecommender.load(small_artifact, selector=selector)
    values, items = rec.topk_internal(torch.arange(0), 5)
    assert values.shape == (0, 5) and items.shape == (0, 5)
    values, items = rec.topk_internal(torch.arange(3), 0)
    assert values.shape == (3, 0) and items.shape == (3, 0)


def test_default_chunk_rule_caps_the_buffer_of_large_catalogues():
    from recpress.serving.recommender import MAX_DEFAULT_CHUNK_ELEMENTS, default_chunk_users

    assert default_chunk_users(25_981, 20) == 2**21 // 25_981  # 80 users: 8 MiB of scores
    assert default_chunk_users(25_981, 200) == 200  # at least d users per pass over the items
    assert default_chunk_users(1_000_000, 200) == MAX_DEFAULT_CHUNK_ELEMENTS // 1_000_000 == 16
    assert default_chunk_users(10**9, 64) == 1
    assert default_chunk_users(100, 8) == 2**21 // 100  # a small catalogue: many users a chunk
