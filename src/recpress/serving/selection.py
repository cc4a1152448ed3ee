"""Exact top-k selection of score rows with each row's seen items excluded: a compiled CPU kernel.

``masked_topk(scores, users, indptr, indices, k)`` returns, for each row r of ``scores`` (b, n),
the k largest values and their columns after setting the columns
``indices[indptr[users[r]] : indptr[users[r] + 1]]`` (the user's seen items) to -inf:

    values[r] = sorted_desc({scores[r, j] : j not seen by users[r]})[:k]

It is one numba-compiled pass per row, parallel over rows, and replaces the masking scatter plus
``torch.topk`` of the torch path (which cost about twice the student's matrix product on the
serving benchmark). Per row:

1. the seen items are set to -inf in place (the caller's score buffer);
2. ``levels`` levels of maxima are built: level i holds the maxima of ``fanout`` strided groups of
   level i−1 (group g of a level of size s holds the elements g, g + s, g + 2s, ... below it);
   these are contiguous vectorised passes;
3. the top level's k largest are found by quickselect; going down, only the members of the k
   chosen groups are candidates (lemma: the top-k elements of a level lie in the k groups with
   the largest maxima above it; if an element x of the top-k sat in another group, the k chosen
   groups would hold k distinct maxima ≥ x), and the smallest chosen maximum is a lower bound for
   the k-th value below, so only candidates at or above it are collected (on real rows about k
   of the k·fanout), then cut to k by quickselect where more than k remain;
4. the k survivors are insertion-sorted into the output, descending.

Ties at the k-th value keep the first candidates met. Rows with fewer than k unseen items are
padded with value -inf (at seen columns). NaN scores count as -inf. numba is a dependency,
imported on the first call; where it is missing, `available()` is False and `TopKRecommender`
uses its torch path.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from typing import Any

import numpy as np

#: batches with fewer rows than this are selected on the calling thread only
PARALLEL_MIN_ROWS = 2
#: default fan-out of the levels of maxima
DEFAULT_FANOUT = 16

# the parallel kernel is launched by one thread at a time (some numba threading layers abort on
# concurrent launches; a 2-core machine gains nothing from two parallel batches at once)
_PARALLEL_LOCK = threading.Lock()


def available() -> bool:
    """True when the compiled kernel can be used (numba is installed; imported on first use)."""
    return importlib.util.find_spec("numba") is not None


def level_sizes(n_items: int, fanout: int, levels: int) -> list[int]:
    """Sizes of level 0 (the row) .. `levels`: s_i = ceil(s_{i-1} / fanout)."""
    sizes = [int(n_items)]
    for _ in range(levels):
        sizes.append(-(-sizes[-1] // fanout))
    return sizes


def choose_levels(n_items: int, k: int, fanout: int = DEFAULT_FANOUT, max_levels: int = 8) -> int:
    """Levels that minimise the scalar work s_L + L·k·fanout (a quickselect over the top level,
    then k·fanout candidates per level down) with top level s_L >= k; 0 (one quickselect over
    the row) when no level beats it or fanout < 2."""
    if fanout < 2:
        return 0
    best, best_cost = 0, n_items
    sizes = level_sizes(n_items, fanout, max_levels)
    for h in range(1, max_levels + 1):
        if sizes[h] < k or sizes[h] == sizes[h - 1]:
            break
        cost = sizes[h] + h * k * fanout
        if cost < best_cost:
            best, best_cost = h, cost
    return best


@functools.cache
def _kernels() -> Any:
    """(numba, parallel kernel, serial kernel): imported on first use, so that importing
    recpress stays fast; numba compiles them once and caches the machine code on disk."""
    import numba

    from recpress.serving import _selection_kernels as kernels

    return numba, kernels.masked_topk_parallel, kernels.masked_topk_serial


def masked_topk(
    scores: np.ndarray,
    users: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    k: int,
    *,
    n_items: int | None = None,
    exclude_seen: bool = True,
    fanout: int = DEFAULT_FANOUT,
    levels: int | None = None,
    threads: int | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` (values (b, k) float32 descending, columns (b, k) int64) of each row of `scores`.

    Args:
        scores: (b, n) C-contiguous float32, overwritten at the seen columns (set to -inf).
        users: (b,) int64 row of each score row in the CSR (`indptr` (n_users + 1,), `indices`).
        k: 1 <= k <= n_items.
        n_items: only the first n_items columns are items (default n); the rest is padding
            (a row length that is a multiple of 16 floats keeps the matrix product fast).
        exclude_seen: False selects over the whole row (the CSR is not read).
        fanout, levels: the levels of maxima (`levels=None`: `choose_levels`).
        threads: numba threads for a multi-row batch (None: numba's current setting).
        out: optional preallocated (values, columns) of shapes (b, k).
    Raises ValueError for bad shapes/dtypes or k out of range, RuntimeError without numba.
    """
    if not available():
        raise RuntimeError("the compiled top-k kernel needs numba: pip install numba")
    numba, parallel_kernel, serial_kernel = _kernels()
    if scores.ndim != 2 or scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise ValueError("scores must be a C-contiguous float32 array of shape (b, n)")
    b, n = scores.shape
    if n_items is not None:
        if not 1 <= n_items <= n:
            raise ValueError(f"n_items must be in [1, {n}], got {n_items}")
        n = int(n_items)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if users.shape != (b,):
        raise ValueError(f"users must have shape ({b},), got {users.shape}")
    if exclude_seen and b and (users.min() < 0 or users.max() >= len(indptr) - 1):
        raise ValueError(f"users must index the CSR's {len(indptr) - 1} rows")
    if out is not None and (out[0].shape != (b, k) or out[1].shape != (b, k)):
        raise ValueError(f"out must be two arrays of shape ({b}, {k})")
    fanout = max(int(fanout), 2)
    levels = choose_levels(n, k, fanout) if levels is None else int(levels)
    sizes = np.asarray(level_sizes(n, fanout, levels), dtype=np.int64)
    if sizes[-1] < k:
        raise ValueError(f"{levels} levels of fan-out {fanout} leave fewer than k={k} groups")
    offs = np.zeros(levels + 2, dtype=np.int64)
    offs[2:] = np.cumsum(sizes[1:])
    if out is None:
        out = (np.empty((b, k), np.float32), np.empty((b, k), np.int64))
    values, columns = out
    args = (
        scores,
        np.ascontiguousarray(users, dtype=np.int64),
        bool(exclude_seen),
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(indices, dtype=np.int64),
        int(k),
        fanout,
        sizes,
        offs,
        values,
        columns,
    )
    if b < PARALLEL_MIN_ROWS:
        serial_kernel(*args)
        return values, columns
    with _PARALLEL_LOCK:
        previous = numba.get_num_threads()
        if threads is not None:
            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            parallel_kernel(*args)
        finally:
            numba.set_num_threads(previous)
    return values, columns
