"""numba kernels of `recpress.serving.selection` (imported on first use; see there).

Module-level functions, so that numba caches the compiled code on disk between processes.
"""

import numpy as np
from numba import njit, prange

# fast-math without nnan/ninf: -inf marks excluded items and must compare correctly
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _max_into(head, part):  # pragma: no cover - compiled
    """head[g] = max(head[g], part[g]) for g < len(head); NaN loses to any number (a NaN first
    member must not hide its group). Both contiguous: the loop is vectorised."""
    for g in range(head.shape[0]):
        x = part[g]
        y = head[g]
        head[g] = x if (x > y or y != y) else y


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _maxima(src, dst, fanout):  # pragma: no cover - compiled
    """dst[g] = max_j src[g + j·len(dst)] over the j with g + j·len(dst) < len(src)."""
    n_dst = dst.shape[0]
    n_src = src.shape[0]
    dst[:] = src[:n_dst]
    for j in range(1, fanout):
        base = j * n_dst
        lim = min(n_dst, n_src - base)
        if lim <= 0:
            break
        _max_into(dst[:lim], src[base : base + lim])  # slices: no index checks in the loop


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _maxima_of_tiles(tiles, r, n, dst):  # pragma: no cover - compiled
    """`_maxima` of row r of a tiled score block: the row's element g + j·len(dst) (< n) is
    tiles[j, r, g], so strip j is one contiguous run (tiles: (fanout, block, len(dst)))."""
    n_dst = dst.shape[0]
    dst[:] = tiles[0, r, :n_dst]
    for j in range(1, tiles.shape[0]):
        lim = min(n_dst, n - j * n_dst)
        if lim <= 0:
            break
        _max_into(dst[:lim], tiles[j, r, :lim])


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _kth_largest(values, m, k, work):  # pragma: no cover - compiled
    """The k-th largest of values[:m] (1 <= k <= m, no NaN): quickselect on a copy in work."""
    for i in range(m):
        work[i] = values[i]
    lo = 0
    hi = m - 1
    target = k - 1  # position in descending order
    while lo < hi:
        a = work[lo]
        b = work[(lo + hi) >> 1]
        c = work[hi]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i = lo
        j = hi
        while i <= j:  # Hoare partition, descending: [lo, j] >= pivot >= [i, hi]
            while work[i] > pivot:
                i += 1
            while work[j] < pivot:
                j -= 1
            if i <= j:
                t = work[i]
                work[i] = work[j]
                work[j] = t
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return pivot
    return work[target]


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _keep_top(cv, ci, m, k, work):  # pragma: no cover - compiled
    """Reduce the candidates (cv, ci)[:m] (m >= k) to the k largest, in place, keeping their
    encounter order (ties at the k-th value: the first ones); returns the k-th largest value."""
    if m == k:
        low = cv[0]
        for t in range(1, m):
            low = min(low, cv[t])
        return low
    kth = _kth_largest(cv, m, k, work)
    above = 0
    for t in range(m):
        above += cv[t] > kth
    ties = k - above
    out = 0
    for t in range(m):  # branch-free compaction: write every candidate, advance past the kept
        x = cv[t]
        tie = (x == kth) & (ties > 0)
        ties -= tie
        cv[out] = x
        ci[out] = ci[t]
        out += (x > kth) | tie
    return kth


@njit(inline="always", cache=True)
def _workspace(k, fanout, sizes, offs):  # pragma: no cover - compiled
    """The scratch arrays of `_select_row` (allocated once per worker, not per row): the levels
    of maxima, candidate values/columns, quickselect's copy, the chosen groups."""
    levels = sizes.shape[0] - 1
    cap = max(sizes[levels], k * fanout)
    return (
        np.empty(max(offs[levels + 1], 1), np.float32),
        np.empty(cap, np.float32),
        np.empty(cap, np.int64),
        np.empty(cap, np.float32),
        np.empty(k, np.int64),
    )


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _descend(below, step, n_below, k, fanout, bound, space):  # pragma: no cover - compiled
    """One level down: the members (g + j·step < n_below) of the k groups chosen in ci[:k] that
    are >= bound become the candidates, cut to the k largest; returns the new bound.

    Lemma: the top-k of a level lie in the k groups with the largest maxima above it, and those
    k maxima are k elements below, so the k-th largest below is >= their minimum (`bound`)."""
    _, cv, ci, work, chosen = space
    chosen[:] = ci[:k]
    m = 0
    for t in range(k):
        g = chosen[t]
        for j in range(fanout):
            pos = g + j * step
            if pos < n_below:  # branch-free: store, advance only past a candidate
                x = below[pos]
                cv[m] = x
                ci[m] = pos
                m += x >= bound
    return _keep_top(cv, ci, m, k, work)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _descend_tiles(tiles, r, n, k, bound, space):  # pragma: no cover - compiled
    """`_descend` from level 1 to row r of a tiled score block (see `_maxima_of_tiles`)."""
    _, cv, ci, work, chosen = space
    step = tiles.shape[2]
    chosen[:] = ci[:k]
    m = 0
    for t in range(k):
        g = chosen[t]
        for j in range(tiles.shape[0]):
            pos = g + j * step
            if pos < n:
                x = tiles[j, r, g]
                cv[m] = x
                ci[m] = pos
                m += x >= bound
    return _keep_top(cv, ci, m, k, work)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _top_to_level1(k, fanout, sizes, offs, space):  # pragma: no cover - compiled
    """Levels 2.. from level 1 (already in the scratch array), then the top level's k largest
    and down to level 1: leaves the k chosen level-1 groups in ci[:k]; returns their bound."""
    scratch, cv, ci, work, _ = space
    levels = sizes.shape[0] - 1
    below = scratch[offs[1] : offs[2]]
    for lv in range(2, levels + 1):
        level = scratch[offs[lv] : offs[lv + 1]]
        _maxima(below, level, fanout)
        below = level
    m = sizes[levels]  # the top level: every group is a candidate
    for g in range(m):
        x = below[g]
        cv[g] = x if x == x else -np.inf
        ci[g] = g
    bound = _keep_top(cv, ci, m, k, work)
    for lv in range(levels, 1, -1):
        bound = _descend(
            scratch[offs[lv - 1] : offs[lv]], sizes[lv], sizes[lv - 1], k, fanout, bound, space
        )
    return bound


@njit(inline="always", cache=True)
def _sorted_out(k, space, out_v, out_i):  # pragma: no cover - compiled
    """Insertion sort of the k survivors in (cv, ci)[:k], descending (stable), into the output."""
    _, cv, ci, _, _ = space
    for t in range(1, k):
        x = cv[t]
        i = ci[t]
        s = t - 1
        while s >= 0 and cv[s] < x:
            cv[s + 1] = cv[s]
            ci[s + 1] = ci[s]
            s -= 1
        cv[s + 1] = x
        ci[s + 1] = i
    for t in range(k):
        out_v[t] = cv[t]
        out_i[t] = ci[t]


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _select_row(
    row, user, mask, indptr, indices, k, fanout, sizes, offs, space, out_v, out_i
):  # pragma: no cover - compiled
    """Top-k of one score row (n,) into out_v/out_i (k,), descending, the user's seen items set
    to -inf first when `mask`; `sizes`/`offs`: the level sizes and their offsets in the scratch
    array; `space`: `_workspace(k, fanout, sizes, offs)`. NaN scores count as -inf."""
    scratch, cv, ci, work, _ = space
    levels = sizes.shape[0] - 1
    if mask:
        for p in range(indptr[user], indptr[user + 1]):
            row[indices[p]] = -np.inf
    if levels == 0:  # one quickselect over the row
        m = sizes[0]
        for g in range(m):
            x = row[g]
            cv[g] = x if x == x else -np.inf
            ci[g] = g
        _keep_top(cv, ci, m, k, work)
    else:
        _maxima(row, scratch[offs[1] : offs[2]], fanout)
        bound = _top_to_level1(k, fanout, sizes, offs, space)
        _descend(row, sizes[1], sizes[0], k, fanout, bound, space)
    _sorted_out(k, space, out_v, out_i)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _select_tiled_row(
    tiles, r, user, mask, indptr, indices, k, fanout, sizes, offs, space, out_v, out_i
):  # pragma: no cover - compiled
    """`_select_row` of row r of a tiled score block (levels >= 1, see `_maxima_of_tiles`)."""
    n = sizes[0]
    step = sizes[1]
    if mask:
        for p in range(indptr[user], indptr[user + 1]):
            item = indices[p]
            tiles[item // step, r, item % step] = -np.inf
    _maxima_of_tiles(tiles, r, n, space[0][offs[1] : offs[2]])
    bound = _top_to_level1(k, fanout, sizes, offs, space)
    _descend_tiles(tiles, r, n, k, bound, space)
    _sorted_out(k, space, out_v, out_i)


@njit(parallel=True, nogil=True, cache=True)
def masked_topk_parallel(
    scores, users, mask, indptr, indices, k, fanout, sizes, offs, out_v, out_i, workers
):  # pragma: no cover - compiled
    """Rows in `workers` contiguous shares, one per worker (the thread count is an argument:
    reading numba's from inside would keep the kernel out of the on-disk cache)."""
    b = scores.shape[0]
    workers = max(1, min(workers, b))
    for t in prange(workers):
        space = _workspace(k, fanout, sizes, offs)
        for r in range(t * b // workers, (t + 1) * b // workers):
            _select_row(
                scores[r, : sizes[0]], users[r], mask, indptr, indices, k, fanout, sizes, offs,
                space, out_v[r], out_i[r],
            )  # fmt: skip


@njit(nogil=True, cache=True)
def masked_topk_serial(
    scores, users, mask, indptr, indices, k, fanout, sizes, offs, out_v, out_i
):  # pragma: no cover - compiled
    space = _workspace(k, fanout, sizes, offs)
    for r in range(scores.shape[0]):
        _select_row(
            scores[r, : sizes[0]], users[r], mask, indptr, indices, k, fanout, sizes, offs,
            space, out_v[r], out_i[r],
        )  # fmt: skip


@njit(parallel=True, nogil=True, cache=True)
def scored_topk_parallel(
    user_rows, item_t, users, mask, indptr, indices, k, fanout, sizes, offs, buffers, out_v, out_i
):  # pragma: no cover - compiled
    """Blocks of rows of ``user_rows @ item_t`` (BLAS, into the worker's own buffer), each block
    selected right after its product; worker t takes blocks t, t + T, ... (T = len(buffers))."""
    n = user_rows.shape[0]
    workers = buffers.shape[0]
    block = buffers.shape[1]
    blocks = (n + block - 1) // block
    for t in prange(workers):
        buffer = buffers[t]
        space = _workspace(k, fanout, sizes, offs)
        for c in range(t, blocks, workers):
            start = c * block
            stop = min(start + block, n)
            rows = buffer[: stop - start]
            np.dot(user_rows[start:stop], item_t, rows)
            for r in range(stop - start):
                _select_row(
                    rows[r, : sizes[0]], users[start + r], mask, indptr, indices, k, fanout,
                    sizes, offs, space, out_v[start + r], out_i[start + r],
                )  # fmt: skip


@njit(parallel=True, nogil=True, cache=True)
def tiled_topk_parallel(
    user_rows, strips, users, mask, indptr, indices, k, fanout, sizes, offs, buffers, out_v, out_i
):  # pragma: no cover - compiled
    """`scored_topk_parallel` with the items in strips: strips (fanout, d, s1) holds the
    items j·s1 .. (j+1)·s1 − 1 in strip j (s1 = sizes[1]); a block of rows is multiplied strip
    by strip into buffers[t] (fanout, block, s1), each product a small contiguous BLAS call,
    and row r's item g + j·s1 is buffers[t][j, r, g], where the selection reads it."""
    n_rows = user_rows.shape[0]
    workers = buffers.shape[0]
    block = buffers.shape[2]
    blocks = (n_rows + block - 1) // block
    for t in prange(workers):
        tiles = buffers[t]
        space = _workspace(k, fanout, sizes, offs)
        for c in range(t, blocks, workers):
            start = c * block
            stop = min(start + block, n_rows)
            for j in range(strips.shape[0]):
                np.dot(user_rows[start:stop], strips[j], tiles[j, : stop - start])
            for r in range(stop - start):
                _select_tiled_row(
                    tiles, r, users[start + r], mask, indptr, indices, k, fanout, sizes, offs,
                    space, out_v[start + r], out_i[start + r],
                )  # fmt: skip
