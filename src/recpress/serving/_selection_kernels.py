"""numba kernels of `recpress.serving.selection` (imported on first use; see there).

Module-level functions, so that numba caches the compiled code on disk between processes.
"""

import numpy as np
from numba import njit, prange

# fast-math without nnan/ninf: -inf marks excluded items and must compare correctly
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _maxima(src, dst, fanout):  # pragma: no cover - compiled
    """dst[g] = max_j src[g + j·len(dst)] over the j with g + j·len(dst) < len(src); NaN loses
    to any number (a NaN first member must not hide its group)."""
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
            head[g] = x if (x > y or y != y) else y


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
    for t in range(m):
        x = cv[t]
        keep = x > kth
        if not keep and x == kth and ties > 0:
            keep = True
            ties -= 1
        if keep:
            cv[out] = x
            ci[out] = ci[t]
            out += 1
    return kth


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _select_row(
    row, user, mask, indptr, indices, k, fanout, sizes, offs, out_v, out_i
):  # pragma: no cover - compiled
    """Top-k of one score row (n,) into out_v/out_i (k,), descending, the user's seen items set
    to -inf first when `mask`; `sizes`/`offs`: the level sizes and their offsets in one scratch
    array. NaN scores count as -inf."""
    levels = sizes.shape[0] - 1
    if mask:
        for p in range(indptr[user], indptr[user + 1]):
            row[indices[p]] = -np.inf
    scratch = np.empty(max(offs[levels + 1], 1), np.float32)
    below = row
    for lv in range(1, levels + 1):
        level = scratch[offs[lv] : offs[lv + 1]]
        _maxima(below, level, fanout)
        below = level
    cap = max(sizes[levels], k * fanout)
    cv = np.empty(cap, np.float32)
    ci = np.empty(cap, np.int64)
    work = np.empty(cap, np.float32)
    chosen = np.empty(k, np.int64)
    # the top level: every group is a candidate
    m = sizes[levels]
    for g in range(m):
        x = below[g]
        cv[g] = x if x == x else -np.inf
        ci[g] = g
    bound = _keep_top(cv, ci, m, k, work)
    for lv in range(levels, 0, -1):
        # lemma: the top-k of a level lie in the k groups with the largest maxima above it, and
        # those k maxima are k elements below, so the k-th largest below is >= their minimum
        below = row if lv == 1 else scratch[offs[lv - 1] : offs[lv]]
        step = sizes[lv]
        n_below = sizes[lv - 1]
        chosen[:] = ci[:k]
        m = 0
        for t in range(k):
            g = chosen[t]
            for j in range(fanout):
                pos = g + j * step
                if pos < n_below:
                    x = below[pos]
                    if x >= bound:
                        cv[m] = x
                        ci[m] = pos
                        m += 1
        bound = _keep_top(cv, ci, m, k, work)
    # insertion sort of the k survivors, descending (stable)
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
