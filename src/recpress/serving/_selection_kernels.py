"""numba kernels of `recpress.serving.selection` (imported on first use; see there).

Module-level functions, so that numba caches the compiled code on disk between processes.
"""

import numpy as np
from numba import njit, prange

# fast-math without nnan/ninf: -inf marks excluded items and must compare correctly
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(inline="always", cache=True)
def _replace_root(hv, hi, size, value, index):  # pragma: no cover - compiled
    """Replace the root of the min-heap (hv, hi)[:size] by (value, index), sift down."""
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and hv[child + 1] < hv[child]:
            child += 1
        if hv[child] >= value:
            break
        hv[pos] = hv[child]
        hi[pos] = hi[child]
        pos = child
    hv[pos] = value
    hi[pos] = index


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _maxima(src, dst, fanout):  # pragma: no cover - compiled
    """dst[g] = max_j src[g + j·len(dst)] over the j with g + j·len(dst) < len(src)."""
    n_dst = dst.shape[0]
    n_src = src.shape[0]
    first = src[:n_dst]
    for g in range(n_dst):
        dst[g] = first[g]
    for j in range(1, fanout):
        base = j * n_dst
        lim = min(n_dst, n_src - base)
        part = src[base : base + lim]  # slices keep the loop free of index checks: vectorised
        head = dst[:lim]
        for g in range(lim):
            x = part[g]
            y = head[g]
            head[g] = x if x > y else y


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _select_row(
    row, user, mask, indptr, indices, k, fanout, sizes, offs, out_v, out_i
):  # pragma: no cover - compiled
    """Top-k of one score row (n,) into out_v/out_i (k,), the user's seen items set to -inf
    first when `mask`; `sizes`/`offs`: the level sizes and their offsets in one scratch array."""
    levels = sizes.shape[0] - 1
    if mask:
        for p in range(indptr[user], indptr[user + 1]):
            row[indices[p]] = -np.inf
    scratch = np.empty(max(offs[levels + 1], 1), np.float32)
    hv = np.full(k, -np.inf, np.float32)
    hi = np.full(k, -1, np.int64)
    chosen = np.empty(k, np.int64)
    below = row
    for lv in range(1, levels + 1):
        level = scratch[offs[lv] : offs[lv + 1]]
        _maxima(below, level, fanout)
        below = level
    threshold = hv[0]
    for g in range(below.shape[0]):
        x = below[g]
        if x > threshold:
            _replace_root(hv, hi, k, x, g)
            threshold = hv[0]
    for lv in range(levels, 0, -1):
        below = row if lv == 1 else scratch[offs[lv - 1] : offs[lv]]
        step = sizes[lv]
        n_below = sizes[lv - 1]
        chosen[:] = hi
        bound = threshold  # k chosen maxima are k elements below: k-th largest below >= it
        hv[:] = -np.inf
        hi[:] = -1
        threshold = hv[0]
        for t in range(k):
            g = chosen[t]
            if g < 0:
                continue
            for j in range(fanout):
                m = g + j * step
                if m < n_below:
                    x = below[m]
                    if x >= bound and x > threshold:
                        _replace_root(hv, hi, k, x, m)
                        threshold = hv[0]
    size = k
    while size > 0:  # pop minima into the last free slot: descending output
        size -= 1
        out_v[size] = hv[0]
        out_i[size] = hi[0] if hi[0] >= 0 else 0
        if size > 0:
            _replace_root(hv, hi, size, hv[size], hi[size])


@njit(parallel=True, nogil=True, cache=True)
def masked_topk_parallel(
    scores, users, mask, indptr, indices, k, fanout, sizes, offs, out_v, out_i
):  # pragma: no cover - compiled
    for r in prange(scores.shape[0]):
        _select_row(
            scores[r, : sizes[0]], users[r], mask, indptr, indices, k, fanout, sizes, offs,
            out_v[r], out_i[r],
        )  # fmt: skip


@njit(nogil=True, cache=True)
def masked_topk_serial(
    scores, users, mask, indptr, indices, k, fanout, sizes, offs, out_v, out_i
):  # pragma: no cover - compiled
    for r in range(scores.shape[0]):
        _select_row(
            scores[r, : sizes[0]], users[r], mask, indptr, indices, k, fanout, sizes, offs,
            out_v[r], out_i[r],
        )  # fmt: skip
