"""The compiled masked top-k kernel against a slow, obviously-correct reference (a full sort)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recpress.serving import selection
from recpress.serving.selection import level_sizes


def reference(scores: np.ndarray, seen: list[np.ndarray], k: int) -> np.ndarray:
    """Values of the top-k after masking: one full descending sort per row."""
    masked = scores.astype(np.float32).copy()
    for r, cols in enumerate(seen):
        masked[r, cols] = -np.inf
    return -np.sort(-masked, axis=1)[:, :k], masked


def random_case(rng: np.random.Generator, rows: int, n: int, ties: bool):
    scores = (
        rng.integers(0, 12, (rows, n)).astype(np.float32)  # many ties
        if ties
        else rng.standard_normal((rows, n)).astype(np.float32)
    )
    seen = [np.sort(rng.choice(n, int(rng.integers(0, n)), replace=False)) for _ in range(rows)]
    indptr = np.zeros(rows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(s) for s in seen])
    indices = np.concatenate(seen).astype(np.int64) if rows else np.zeros(0, np.int64)
    return scores, seen, indptr, indices


def deepest_levels(n: int, k: int, fanout: int, most: int = 6) -> int:
    """The most levels of maxima (up to `most`) that still shrink and keep >= k groups."""
    sizes = level_sizes(n, fanout, most)
    deepest = 0
    while deepest < most and k <= sizes[deepest + 1] < sizes[deepest]:
        deepest += 1
    return deepest


def check(scores, seen, indptr, indices, k, **kwargs):
    want, masked = reference(scores, seen, k)
    values, cols = selection.masked_topk(
        scores.copy(), np.arange(len(scores)), indptr, indices, k, **kwargs
    )
    assert np.array_equal(values, want)
    finite = np.isfinite(values)
    assert np.array_equal(np.take_along_axis(masked, cols, 1)[finite], values[finite])
    for r in range(len(scores)):  # no item twice, never a seen item
        picked = cols[r][finite[r]]
        assert len(set(picked.tolist())) == len(picked)
        assert not set(picked.tolist()) & set(seen[r].tolist())
    assert ((cols >= 0) & (cols < scores.shape[1])).all()  # padding points at a real column


@pytest.mark.parametrize("ties", [False, True])
def test_random_rows_every_fanout_and_depth(ties: bool):
    rng = np.random.default_rng(7 if ties else 3)
    for _ in range(120):
        rows = int(rng.integers(1, 6))
        n = int(rng.integers(1, 400))
        k = int(rng.integers(1, n + 1))
        fanout = int(rng.integers(2, 9))
        scores, seen, indptr, indices = random_case(rng, rows, n, ties)
        for levels in range(deepest_levels(n, k, fanout) + 1):
            check(scores, seen, indptr, indices, k, fanout=fanout, levels=levels)
        check(scores, seen, indptr, indices, k, fanout=fanout)  # the chosen depth


def test_without_masking_nan_and_all_masked_rows():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 50)).astype(np.float32)
    scores[1, ::7] = np.nan  # never selected, and never hides its group (column 0 leads one)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    for levels in (0, 1):
        values, cols = selection.masked_topk(
            scores.copy(), np.arange(3), np.zeros(4, np.int64), np.zeros(0, np.int64), 10,
            exclude_seen=False, fanout=4, levels=levels,
        )  # fmt: skip
        assert np.array_equal(values, -np.sort(-clean, axis=1)[:, :10])
    # a row whose items are all seen: all -inf, columns still in range
    indptr = np.array([0, 50], dtype=np.int64)
    v, c = selection.masked_topk(
        scores[:1].copy(), np.zeros(1, np.int64), indptr, np.arange(50, dtype=np.int64), 5
    )
    assert np.isneginf(v).all() and ((c >= 0) & (c < 50)).all()


def test_rows_point_into_the_csr_by_user():
    rng = np.random.default_rng(1)
    scores, seen, indptr, indices = random_case(rng, 6, 120, ties=False)
    users = np.array([4, 0, 4])  # rows of users 4, 0, 4 (a user twice)
    values, _ = selection.masked_topk(scores[users].copy(), users, indptr, indices, 9)
    want, _ = reference(scores[users], [seen[u] for u in users], 9)
    assert np.array_equal(values, want)


def test_concurrent_calls_from_threads_agree():
    rng = np.random.default_rng(2)
    scores, seen, indptr, indices = random_case(rng, 40, 3000, ties=False)
    want, _ = reference(scores, seen, 20)

    def run(rows: int):
        users = np.arange(rows)
        return selection.masked_topk(scores[:rows].copy(), users, indptr, indices, 20)[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, [1, 40, 1, 40, 7, 40, 1, 40]))
    for got in results:
        assert np.array_equal(got, want[: len(got)])


def test_choose_levels_and_bad_input():
    assert selection.choose_levels(25975, 50, 8) >= 2  # the serving benchmark's catalogue
    assert selection.choose_levels(100, 100, 8) == 0  # k = whole row
    assert selection.choose_levels(1000, 10, 0) == 0
    assert selection.level_sizes(100, 8, 2) == [100, 13, 2]
    s = np.zeros((2, 10), np.float32)
    csr = (np.zeros(3, np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="k must be in"):
        selection.masked_topk(s, np.arange(2), *csr, 11)
    with pytest.raises(ValueError, match="float32"):
        selection.masked_topk(s.astype(np.float64), np.arange(2), *csr, 3)
    with pytest.raises(ValueError, match="users must have shape"):
        selection.masked_topk(s, np.arange(3), *csr, 3)
    with pytest.raises(ValueError, match="users must index the CSR"):
        selection.masked_topk(s, np.array([0, 2]), *csr, 3)  # the CSR has 2 rows
    with pytest.raises(ValueError, match="out must be"):
        selection.masked_topk(s, np.arange(2), *csr, 3, out=(np.empty((2, 4)), np.empty((2, 4))))
    with pytest.raises(ValueError, match="fewer than k"):
        selection.masked_topk(s, np.arange(2), *csr, 3, fanout=4, levels=2)


def test_padding_columns_beyond_n_items_are_ignored():
    rng = np.random.default_rng(4)
    scores, seen, indptr, indices = random_case(rng, 5, 90, ties=False)
    padded = np.full((5, 96), 1e9, dtype=np.float32)  # padding would win if it were read
    padded[:, :90] = scores
    values, cols = selection.masked_topk(padded, np.arange(5), indptr, indices, 12, n_items=90)
    assert np.array_equal(values, reference(scores, seen, 12)[0]) and (cols < 90).all()
    with pytest.raises(ValueError, match="n_items must be in"):
        selection.masked_topk(padded, np.arange(5), indptr, indices, 12, n_items=97)


@pytest.mark.parametrize("threads,block_rows", [(1, 64), (2, 3), (2, 64), (3, 1)])
def test_scored_topk_fuses_the_product(threads: int, block_rows: int):
    """Integer embeddings make every product exact, so the fused pass must equal the reference
    on the scores computed up front (ties included), whatever the blocks and workers."""
    rng = np.random.default_rng(5)
    n_users, n_items, width, dim, k = 23, 130, 144, 6, 17
    user_emb = rng.integers(-3, 4, (n_users, dim)).astype(np.float32)
    item_t = np.zeros((dim, width), np.float32)  # padding columns score 0, must never be read
    item_t[:, :n_items] = rng.integers(-3, 4, (dim, n_items))
    item_t[:, n_items:] = 1e6
    _, seen, indptr, indices = random_case(rng, n_users, n_items, ties=True)
    users = np.array([5, 0, 22, 5, 9, 1, 17], dtype=np.int64)
    scores = user_emb[users] @ item_t[:, :n_items]
    want, masked = reference(scores, [seen[u] for u in users], k)
    values, cols = selection.scored_topk(
        user_emb[users], item_t, users, indptr, indices, k,
        n_items=n_items, threads=threads, block_rows=block_rows,
    )  # fmt: skip
    assert np.array_equal(values, want)
    finite = np.isfinite(values)
    assert np.array_equal(np.take_along_axis(masked, cols, 1)[finite], values[finite])
    assert (cols < n_items).all()
    # the same call on real-valued embeddings: the same top-k as numpy's product, up to rounding
    user_emb = rng.standard_normal((n_users, dim)).astype(np.float32)
    item_t[:, :n_items] = rng.standard_normal((dim, n_items))
    values, cols = selection.scored_topk(
        user_emb, item_t, np.arange(n_users), indptr, indices, k, n_items=n_items, threads=threads
    )
    want, _ = reference(user_emb @ item_t[:, :n_items], seen, k)
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ties", [False, True])
def test_tiled_scored_topk_against_the_reference(ties: bool):
    """The strip-by-strip product and selection (`tiled_scored_topk`) equals the full sort of
    the product (integer embeddings: exact products, many ties) for every fan-out, depth,
    block size and worker count, including catalogues whose last strips are empty."""
    rng = np.random.default_rng(11 if ties else 12)
    for _ in range(60):
        n_users, n_items = int(rng.integers(1, 12)), int(rng.integers(1, 300))
        dim, fanout = int(rng.integers(1, 7)), int(rng.integers(2, 17))
        width = level_sizes(n_items, fanout, 1)[1]
        k = int(rng.integers(1, width + 1))
        high = 4 if ties else 1000
        user_emb = rng.integers(-high, high, (n_users, dim)).astype(np.float32)
        item_t = np.full((dim, n_items + 7), 1e6, np.float32)  # padding must never be read
        item_t[:, :n_items] = rng.integers(-high, high, (dim, n_items))
        _, seen, indptr, indices = random_case(rng, n_users, n_items, ties=True)
        tiles = selection.item_tiles(item_t, n_items, fanout)
        assert tiles.shape == (fanout, dim, width)
        flat = tiles.transpose(1, 0, 2).reshape(dim, -1)  # strip j holds items j·width …
        assert np.array_equal(flat[:, :n_items], item_t[:, :n_items])
        assert not flat[:, n_items:].any()
        users = rng.integers(0, n_users, int(rng.integers(1, 9)))
        want, masked = reference(user_emb[users] @ item_t[:, :n_items], [seen[u] for u in users], k)
        for levels in range(1, max(1, deepest_levels(n_items, k, fanout)) + 1):
            values, cols = selection.tiled_scored_topk(
                user_emb[users], tiles, users, indptr, indices, k, n_items=n_items,
                levels=levels, threads=int(rng.integers(1, 4)),
                block_rows=int(rng.integers(1, 5)),
            )  # fmt: skip
            assert np.array_equal(values, want)
            finite = np.isfinite(values)
            assert np.array_equal(np.take_along_axis(masked, cols, 1)[finite], values[finite])
            assert (cols < n_items).all()
            for r, u in enumerate(users):  # no item twice, never a seen item
                picked = cols[r][finite[r]].tolist()
                assert len(set(picked)) == len(picked) and not set(picked) & set(seen[u].tolist())


def test_tiled_scored_topk_rejects_bad_input():
    rng = np.random.default_rng(13)
    user_emb = rng.standard_normal((5, 3)).astype(np.float32)
    item_t = rng.standard_normal((3, 50)).astype(np.float32)
    tiles = selection.item_tiles(item_t, 50, 8)  # 8 strips of 7 items
    csr = (np.zeros(6, np.int64), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="do not hold 60 items in 8 strips"):
        selection.tiled_scored_topk(user_emb, tiles, np.arange(5), *csr, 3, n_items=60)
    with pytest.raises(ValueError, match="tiles must be a C-contiguous float32"):
        selection.tiled_scored_topk(
            user_emb, tiles.transpose(1, 0, 2), np.arange(5), *csr, 3, n_items=50
        )
    with pytest.raises(ValueError, match="user_rows must have shape"):
        selection.tiled_scored_topk(user_emb[:, :2], tiles, np.arange(5), *csr, 3, n_items=50)
    with pytest.raises(ValueError, match="levels >= 1"):
        selection.tiled_scored_topk(user_emb, tiles, np.arange(5), *csr, 3, n_items=50, levels=0)
    with pytest.raises(ValueError, match="fewer than k=8 groups"):  # k above the strip width
        selection.tiled_scored_topk(user_emb, tiles, np.arange(5), *csr, 8, n_items=50)
    with pytest.raises(ValueError, match="W >= n_items"):
        selection.item_tiles(item_t, 51, 8)


def test_scored_topk_leaves_thread_settings_as_found_and_rejects_bad_shapes():
    from threadpoolctl import threadpool_info

    numba = pytest.importorskip("numba")
    before = ([p["num_threads"] for p in threadpool_info()], numba.get_num_threads())
    rng = np.random.default_rng(6)
    user_emb = rng.standard_normal((9, 4)).astype(np.float32)
    item_t = rng.standard_normal((4, 32)).astype(np.float32)
    csr = (np.zeros(10, np.int64), np.zeros(0, np.int64))
    selection.scored_topk(user_emb, item_t, np.arange(9), *csr, 5, threads=1)
    assert ([p["num_threads"] for p in threadpool_info()], numba.get_num_threads()) == before
    empty = selection.scored_topk(user_emb[:0], item_t, np.arange(0), *csr, 5)
    assert empty[0].shape == (0, 5)
    with pytest.raises(ValueError, match="user_rows must have shape"):
        selection.scored_topk(user_emb[:, :3], item_t, np.arange(9), *csr, 5)
    with pytest.raises(ValueError, match="item_t must be"):
        selection.scored_topk(user_emb, item_t.astype(np.float64), np.arange(9), *csr, 5)
    with pytest.raises(ValueError, match="k must be in"):
        selection.scored_topk(user_emb, item_t, np.arange(9), *csr, 33)


def test_kernels_are_cached_on_disk(tmp_path):
    """Each kernel must land in numba's on-disk cache (a kernel that reads a dynamic global,
    such as numba's thread count, silently recompiles in every process: seconds per start)."""
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from recpress.serving import selection as sel\n"
        "csr = (np.zeros(5, np.int64), np.zeros(0, np.int64))\n"
        "s = np.random.rand(4, 40).astype(np.float32)\n"
        "sel.masked_topk(s[:1].copy(), np.arange(1), *csr, 3)\n"
        "sel.masked_topk(s.copy(), np.arange(4), *csr, 3, threads=2)\n"
        "u = np.random.rand(4, 3).astype(np.float32)\n"
        "it = np.random.rand(3, 40).astype(np.float32)\n"
        "sel.scored_topk(u, it, np.arange(4), *csr, 3)\n"
        "sel.tiled_scored_topk(u, sel.item_tiles(it, 40), np.arange(4), *csr, 2, n_items=40)\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Cannot cache" not in done.stderr
    cached = {p.name.split(".")[1].rsplit("-", 1)[0] for p in tmp_path.rglob("*.nbi")}
    kernels = ("masked_topk_serial", "masked_topk_parallel", "scored_topk_parallel")
    assert {*kernels, "tiled_topk_parallel"} <= cached


def test_a_parallel_top_k_leaves_torchs_thread_count_as_found():
    """numba's OpenMP layer shares libgomp with torch: its first launch sets OpenMP's thread
    count to numba's (all cores). A fresh process that had set torch to one thread (a sweep
    worker) must still have one after top-K calls, or it trains oversubscribed."""
    import subprocess
    import sys

    script = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from recpress.serving import selection as sel\n"
        "csr = (np.zeros(9, np.int64), np.zeros(0, np.int64))\n"
        "u = np.random.rand(8, 3).astype(np.float32)\n"
        "it = np.random.rand(3, 40).astype(np.float32)\n"
        "sel.masked_topk(u @ it, np.arange(8), *csr, 3, threads=2)\n"
        "sel.scored_topk(u, it, np.arange(8), *csr, 3, threads=2)\n"
        "sel.tiled_scored_topk(u, sel.item_tiles(it, 40), np.arange(8), *csr, 2, n_items=40)\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"
