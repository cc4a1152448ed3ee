"""Exact top-k selection of score rows with each row's seen items excluded: a compiled CPU kernel.

``masked_topk(scores, users, indptr, indices, k)`` returns, for each row r of ``scores`` (b, n),
the k largest values and their columns after setting the columns
``indices[indptr[users[r]] : indptr[users[r] + 1]]`` (the user's seen items) to -inf:

    values[r] = sorted_desc({scores[r, j] : j not seen by users[r]})[:k]

It is one numba-compiled pass per row, parallel over shares of rows, and replaces the masking
scatter plus ``torch.topk`` of the torch path (measured in bench/README.md, section "Serving:
top-k selection"). Per row:

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

``scored_topk(user_rows, item_t, users, indptr, indices, k)`` is the same selection of the rows
of ``user_rows @ item_t``, with the product inside the pass: each worker multiplies a block of
rows into its own buffer (BLAS through numba, single-threaded) and selects the block at once, so
one thread pool runs the whole request (why: bench/README.md, section "Serving: top-k
selection").

``tiled_scored_topk(user_rows, item_tiles, ...)`` is `scored_topk` with the items in strips
(`item_tiles`): strip j holds the items j·s₁ … (j+1)·s₁ − 1, s₁ = ceil(n / fanout) being the
size of level 1, and a block of rows is multiplied one strip at a time. Row r's item g + j·s₁
is then element [j, r, g] of the block's buffer, so level 1 is the elementwise maximum of the
row's strips and the row never needs to exist in one piece; a block of a few users' scores
stays in the core's L2 cache for the selection. `TopKRecommender` uses strips only for small
dims and catalogues (its `TILED_MAX_DIM`, `TILED_MAX_ITEMS`; measured in bench/README.md,
section "Serving: chunk sizes and the item-strip product").

Ties at the k-th value keep the first candidates met. Rows with fewer than k unseen items are
padded with value -inf (at seen columns). NaN scores count as -inf. numba is a dependency,
imported on the first call; where it is missing, `available()` is False and `TopKRecommender`
uses its torch path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
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
    """The module of compiled kernels and numba: imported on first use, so that importing
    recpress stays fast; numba compiles the kernels once and caches the machine code on disk."""
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's np.dot calls; loaded now)

    from recpress.serving import _selection_kernels as kernels

    return numba, kernels


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded (after `_kernels` loaded scipy's)."""
    from threadpoolctl import ThreadpoolController

    _kernels()
    return ThreadpoolController()


def _plan(n: int, k: int, fanout: int, levels: int | None) -> tuple[int, np.ndarray, np.ndarray]:
    """(fanout, level sizes, their offsets in one scratch array) for rows of n items."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    fanout = max(int(fanout), 2)
    levels = choose_levels(n, k, fanout) if levels is None else int(levels)
    sizes = np.asarray(level_sizes(n, fanout, levels), dtype=np.int64)
    if sizes[-1] < k:
        raise ValueError(f"{levels} levels of fan-out {fanout} leave fewer than k={k} groups")
    offs = np.zeros(levels + 2, dtype=np.int64)
    offs[2:] = np.cumsum(sizes[1:])
    return fanout, sizes, offs


def _check_rows(
    b: int, width: int, n_items: int | None, users: np.ndarray, indptr: np.ndarray,
    exclude_seen: bool, k: int, out: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[int, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Validate the arguments shared by both entry points: (items per row, output arrays)."""
    n = width
    if n_items is not None:
        if not 1 <= n_items <= width:
            raise ValueError(f"n_items must be in [1, {width}], got {n_items}")
        n = int(n_items)
    if users.shape != (b,):
        raise ValueError(f"users must have shape ({b},), got {users.shape}")
    if exclude_seen and b and (users.min() < 0 or users.max() >= len(indptr) - 1):
        raise ValueError(f"users must index the CSR's {len(indptr) - 1} rows")
    if out is not None and (out[0].shape != (b, k) or out[1].shape != (b, k)):
        raise ValueError(f"out must be two arrays of shape ({b}, {k})")
    if out is None:
        out = (np.empty((b, k), np.float32), np.empty((b, k), np.int64))
    return n, out


def _csr(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(indices, dtype=np.int64),
    )


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
    numba, kernels = _kernels()
    if scores.ndim != 2 or scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise ValueError("scores must be a C-contiguous float32 array of shape (b, n)")
    b = scores.shape[0]
    n, out = _check_rows(b, scores.shape[1], n_items, users, indptr, exclude_seen, k, out)
    fanout, sizes, offs = _plan(n, k, fanout, levels)
    args = (
        scores,
        np.ascontiguousarray(users, dtype=np.int64),
        bool(exclude_seen),
        *_csr(indptr, indices),
        int(k),
        fanout,
        sizes,
        offs,
        *out,
    )
    if b < PARALLEL_MIN_ROWS:
        kernels.masked_topk_serial(*args)
        return out
    with _parallel_launch(numba, threads) as workers:
        kernels.masked_topk_parallel(*args, workers)
    return out


def scored_topk(
    user_rows: np.ndarray,
    item_t: np.ndarray,
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
    block_rows: int = 64,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`masked_topk` of ``scores = user_rows @ item_t`` (b, W), the product fused into the pass.

    Each of the `threads` workers multiplies blocks of `block_rows` rows into its own buffer
    with single-threaded BLAS and selects each block right after its product, so one thread
    pool does both halves (a torch product followed by the kernel would alternate between two
    OpenMP runtimes; see bench/README.md, section "Serving: top-k selection").

    Args:
        user_rows: (b, d) float32, one row per requested user.
        item_t: (d, W) C-contiguous float32, the item embeddings transposed (W >= n_items;
            the columns past n_items are padding and never selected).
        users, indptr, indices, k, n_items, exclude_seen, fanout, levels, out: as `masked_topk`.
        threads: workers (None: numba's current setting); BLAS runs single-threaded meanwhile
            (threadpoolctl, process-wide for the duration of the call).
        block_rows: rows per product; lowered so that every worker gets a block. The buffers
            (threads × block_rows × W floats) are kept between calls for the next one.
    """
    if not available():
        raise RuntimeError("the compiled top-k kernel needs numba: pip install numba")
    if item_t.ndim != 2 or item_t.dtype != np.float32 or not item_t.flags.c_contiguous:
        raise ValueError("item_t must be a C-contiguous float32 array of shape (d, W)")
    if user_rows.ndim != 2 or user_rows.shape[1] != item_t.shape[0]:
        raise ValueError(f"user_rows must have shape (b, {item_t.shape[0]}), got {user_rows.shape}")
    b = user_rows.shape[0]
    n, out = _check_rows(b, item_t.shape[1], n_items, users, indptr, exclude_seen, k, out)
    width = item_t.shape[1]
    return _run_fused(
        "scored_topk_parallel", user_rows, item_t, users, indptr, indices, k, exclude_seen,
        _plan(n, k, fanout, levels), out, threads, block_rows,
        lambda workers, block: (workers, block, width),
    )  # fmt: skip


def _run_fused(
    kernel: str,
    user_rows: np.ndarray,
    matrix: np.ndarray,
    users: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    k: int,
    exclude_seen: bool,
    plan: tuple[int, np.ndarray, np.ndarray],
    out: tuple[np.ndarray, np.ndarray],
    threads: int | None,
    block_rows: int,
    buffer_shape: Callable[[int, int], tuple[int, ...]],
) -> tuple[np.ndarray, np.ndarray]:
    """Launch a fused product + selection kernel of `_selection_kernels` on validated arguments:
    blocks of at most `block_rows` rows (fewer where a worker would get none), one reused buffer
    of shape ``buffer_shape(workers, block)`` per call, BLAS single-threaded meanwhile."""
    numba, kernels = _kernels()
    fanout, sizes, offs = plan
    b = user_rows.shape[0]
    if b == 0:
        return out
    with _parallel_launch(numba, threads) as workers:
        workers = min(workers, b)
        block = max(1, min(int(block_rows), -(-b // workers)))
        shape = buffer_shape(workers, block)
        buffers = _scratch(int(np.prod(shape))).reshape(shape)
        with _blas_controller().limit(limits=1, user_api="blas"):
            getattr(kernels, kernel)(
                np.ascontiguousarray(user_rows, dtype=np.float32),
                matrix,
                np.ascontiguousarray(users, dtype=np.int64),
                bool(exclude_seen),
                *_csr(indptr, indices),
                int(k),
                fanout,
                sizes,
                offs,
                buffers,
                *out,
            )
    return out


def item_tiles(item_t: np.ndarray, n_items: int, fanout: int = DEFAULT_FANOUT) -> np.ndarray:
    """The items of `item_t` (d, W >= n_items) in `fanout` strips of s₁ = ceil(n_items / fanout)
    columns: (fanout, d, s₁) float32, C-contiguous; strip j holds the items j·s₁ … (j+1)·s₁ − 1
    (zero past n_items). The layout `tiled_scored_topk` multiplies by."""
    fanout = max(int(fanout), 2)
    if item_t.ndim != 2 or not 1 <= n_items <= item_t.shape[1]:
        raise ValueError(f"item_t must be (d, W) with W >= n_items = {n_items}")
    step = level_sizes(n_items, fanout, 1)[1]
    flat = np.zeros((item_t.shape[0], fanout * step), dtype=np.float32)
    flat[:, :n_items] = item_t[:, :n_items]
    return np.ascontiguousarray(flat.reshape(item_t.shape[0], fanout, step).transpose(1, 0, 2))


def tiled_scored_topk(
    user_rows: np.ndarray,
    tiles: np.ndarray,
    users: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    k: int,
    *,
    n_items: int,
    exclude_seen: bool = True,
    levels: int | None = None,
    threads: int | None = None,
    block_rows: int = 8,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`scored_topk` of ``user_rows @ item_t`` with the items given as `item_tiles(item_t,
    n_items, fanout)` (fanout = tiles.shape[0]): the same values and columns.

    Args:
        user_rows: (b, d) float32.
        tiles: (fanout, d, s₁) C-contiguous float32 from `item_tiles`.
        levels: levels of maxima (>= 1; None: `choose_levels`, at least 1).
        block_rows: rows per product (each worker's buffer holds fanout × block_rows × s₁
            floats, about block_rows score rows; 8 rows of 25k items, 800 KB, fit a 1 MB L2).
        the rest: as `scored_topk`.
    Raises ValueError where fewer than k level-1 groups exist (k > s₁): use `scored_topk`.
    """
    if not available():
        raise RuntimeError("the compiled top-k kernel needs numba: pip install numba")
    if tiles.ndim != 3 or tiles.dtype != np.float32 or not tiles.flags.c_contiguous:
        raise ValueError("tiles must be a C-contiguous float32 array from item_tiles()")
    fanout, dim, step = tiles.shape
    if fanout < 2 or n_items < 1 or step != level_sizes(n_items, fanout, 1)[1]:
        raise ValueError(f"tiles {tiles.shape} do not hold {n_items} items in {fanout} strips")
    if user_rows.ndim != 2 or user_rows.shape[1] != dim:
        raise ValueError(f"user_rows must have shape (b, {dim}), got {user_rows.shape}")
    b = user_rows.shape[0]
    n, out = _check_rows(b, fanout * step, n_items, users, indptr, exclude_seen, k, out)
    if levels is None:
        levels = max(1, choose_levels(n, k, fanout))
    if levels < 1:
        raise ValueError("tiled selection needs levels >= 1")
    return _run_fused(
        "tiled_topk_parallel", user_rows, tiles, users, indptr, indices, k, exclude_seen,
        _plan(n, k, fanout, levels), out, threads, block_rows,
        lambda workers, block: (workers, fanout, block, step),
    )  # fmt: skip


_SCRATCH: list[np.ndarray] = []


def _scratch(size: int) -> np.ndarray:
    """A float32 buffer of `size` floats, reused between calls (held under the launch lock;
    why: bench/README.md, section "Serving: top-k selection")."""
    if not _SCRATCH or _SCRATCH[0].size < size:
        _SCRATCH[:] = [np.empty(size, np.float32)]
    return _SCRATCH[0][:size]


@contextlib.contextmanager
def _parallel_launch(numba: Any, threads: int | None) -> Iterator[int]:
    """Hold the launch lock with numba's thread count set to `threads` (restored after);
    yields the count in force.

    Torch's intra-op thread count is restored too: numba's OpenMP threading layer shares
    libgomp with torch, and starting it sets OpenMP's thread count to numba's (all cores). A
    process that had lowered torch's threads (a sweep worker: one core each) would otherwise
    train on all cores after its first top-K call, oversubscribing the CPU.
    """
    torch = sys.modules.get("torch")  # only a process that has loaded torch can be affected
    torch_threads = torch.get_num_threads() if torch is not None else None
    with _PARALLEL_LOCK:
        previous = numba.get_num_threads()
        if threads is not None:
            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        try:
            yield numba.get_num_threads()
        finally:
            numba.set_num_threads(previous)
            if torch_threads is not None and torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)
