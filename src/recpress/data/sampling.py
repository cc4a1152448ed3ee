"""Vectorised negative sampling by rejection against a sorted CSR matrix (CPU or CUDA).

Membership test: a CSR with sorted column indices, read row by row, gives the sorted global
keys ``row * n_cols + col``. A draw (u, j) is a positive iff ``u * n_cols + j`` is found in that
array by ``torch.searchsorted``. Rejected draws are redrawn in rounds (one loop over rounds,
never over users) until none remain.

Generators: draws are made on ``generator.device`` and moved to the data's device, so a CPU
generator works with CUDA data (reproducible across devices) and a CUDA generator is fastest.
"""

from __future__ import annotations

import torch

from recpress.data.types import Split
from recpress.errors import DataError

__all__ = ["csr_keys", "epoch_triples", "sample_excluding", "sample_negatives"]


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`t` on `device`; a CPU -> CUDA copy is staged in pinned memory and made asynchronously
    (``non_blocking``), so the host does not wait for it."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _randint(high: int, shape: tuple[int, ...], generator, device) -> torch.Tensor:
    out = torch.randint(high, shape, generator=generator, device=_gen_device(generator))
    return to_device(out, device)


def csr_keys(indptr: torch.Tensor, indices: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Sorted int64 keys ``row * n_cols + col`` of a CSR with sorted indices."""
    n_rows = indptr.numel() - 1
    rows = torch.repeat_interleave(
        torch.arange(n_rows, device=indptr.device), indptr[1:] - indptr[:-1]
    )
    return rows * n_cols + indices.to(torch.int64)


def _is_member(keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    if keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return keys[pos] == query


def _check_room(indptr, rows, n_cols, need, extra_count=None) -> None:
    """DataError if some row in `rows` has fewer than `need` allowed columns."""
    if extra_count is None:
        # cheap global test first: O(n_rows), then gather only if some row is (nearly) full
        deg_all = indptr[1:] - indptr[:-1]
        full_rows = deg_all > n_cols - need
        if not bool(full_rows.any()):
            return
        deg = deg_all[rows]
        full = full_rows[rows]
    else:
        deg = (indptr[rows + 1] - indptr[rows]).to(torch.int64) + extra_count
        full = deg > n_cols - need
    if bool(full.any()):
        j = int(full.nonzero()[0, 0])
        raise DataError(
            f"user {int(rows[j])} has {int(deg[j])} of {n_cols} items forbidden, so {need} "
            "negative(s) cannot be drawn; drop users that interacted with (nearly) every item"
        )


def _reject_loop(
    draw_fn, bad_fn, shape: tuple[int, int], max_rounds: int, row_check=None
) -> torch.Tensor:
    """Draw `shape`, then redraw rejected entries in rounds until none is rejected.

    ``bad_fn(flat_positions, values)`` tests only the entries just drawn; ``row_check(out)``
    (optional) returns a (rows, k) mask of entries to redraw that depends on whole rows (e.g.
    duplicates), applied once the per-entry test passes.
    """
    out = draw_fn(shape)
    flat = out.view(-1)
    todo = torch.arange(flat.numel(), device=out.device)
    rounds = 0
    while True:
        while todo.numel():
            rounds += 1
            if rounds > max_rounds:
                raise DataError(
                    f"sampling did not finish after {max_rounds} rounds; some users have "
                    "almost every item forbidden"
                )
            todo = todo[bad_fn(todo, flat[todo])]
            if todo.numel():
                flat[todo] = draw_fn((todo.numel(),))
        if row_check is None:
            return out
        todo = row_check(out).view(-1).nonzero(as_tuple=True)[0]
        if not todo.numel():
            return out
        flat[todo] = draw_fn((todo.numel(),))


def sample_negatives(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    users: torch.Tensor,
    n_items: int,
    generator: torch.Generator | None,
    n_per_user: int = 1,
    keys: torch.Tensor | None = None,
    max_rounds: int = 10_000,
) -> torch.Tensor:
    """Uniform negatives from I \\ O_u, with replacement, for each entry of `users`.

    Args:
        indptr, indices: training CSR (sorted indices) as int64 tensors on one device.
        users: (B,) int64 user ids (repeats allowed).
        n_items: number of columns.
        generator: torch.Generator (any device); None uses the global RNG.
        n_per_user: negatives per entry.
        keys: optional precomputed :func:`csr_keys` (saves O(nnz) per call).
    Returns:
        (B, n_per_user) int64 on ``users.device``; never a training positive of that user.
    Raises:
        DataError if a user has every item as a positive.
    """
    users = users.to(torch.int64)
    device = users.device
    if keys is None:
        keys = csr_keys(indptr, indices, n_items)
    if users.numel():
        _check_room(indptr, users, n_items, 1)
    k = n_per_user

    def bad(pos: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        return _is_member(keys, users[pos // k] * n_items + vals)

    return _reject_loop(
        lambda s: _randint(n_items, s, generator, device), bad, (users.numel(), k), max_rounds
    )


def sample_excluding(
    indptr: torch.Tensor,
    indices: torch.Tensor,
    rows: torch.Tensor,
    n_cols: int,
    k: int,
    generator: torch.Generator | None,
    extra_forbidden: torch.Tensor | None = None,
    replacement: bool = True,
    max_rounds: int = 10_000,
    extra_sorted: bool = False,
) -> torch.Tensor:
    """Draw `k` columns per row uniformly from C \\ (CSR row ∪ extra_forbidden row).

    ``extra_forbidden`` is a (len(rows), m) int64 tensor of further forbidden columns per row
    (e.g. the teacher's top-K list for RRD's "uninteresting" items); pad with -1. With
    ``replacement=False`` a row's k draws are also distinct (duplicates are rejected and
    redrawn), i.e. uniform without replacement from the allowed set; then the allowed set must
    hold at least k columns (extra lists are assumed duplicate-free and disjoint from the row).
    ``extra_sorted=True`` promises that every row of ``extra_forbidden`` is already sorted
    ascending (callers that reuse the same lists every epoch sort them once).
    Returns (len(rows), k) int64 on ``rows.device``.
    """
    rows = rows.to(torch.int64)
    device = rows.device
    keys = csr_keys(indptr, indices, n_cols)
    n_extra = None
    if extra_forbidden is not None:
        extra_forbidden = extra_forbidden.to(device=device, dtype=torch.int64)
        if extra_sorted and extra_forbidden.numel():  # the −1 pads come first in each row
            zero = torch.zeros(extra_forbidden.shape[0], 1, dtype=torch.int64, device=device)
            pads = torch.searchsorted(extra_forbidden, zero).squeeze(1)
            n_extra = extra_forbidden.shape[1] - pads
        else:
            n_extra = (extra_forbidden >= 0).sum(1)
    if rows.numel():
        _check_room(indptr, rows, n_cols, k if not replacement else 1, n_extra)

    extra_seq = None
    if extra_forbidden is not None and extra_forbidden.numel():
        # each row's extra list sorted (−1 pads first), then tested by a batched
        # searchsorted: O(log m) per draw instead of comparing against all m entries
        extra_seq = extra_forbidden if extra_sorted else torch.sort(extra_forbidden, 1).values
    n_all = rows.numel() * k

    def bad(pos: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        r = pos // k
        rej = _is_member(keys, rows[r] * n_cols + vals)
        if extra_seq is not None:
            if pos.numel() == n_all:  # the first, full round: rows in order, k draws each
                seq, q = extra_seq, vals.view(-1, k)
            else:
                seq, q = extra_seq[r], vals.unsqueeze(1)
            at = torch.searchsorted(seq, q).clamp_(max=seq.shape[1] - 1)
            rej |= (torch.gather(seq, 1, at) == q).view(-1)
        return rej

    def dups(d: torch.Tensor) -> torch.Tensor:
        srt, order = torch.sort(d, dim=1, stable=True)
        dup = torch.zeros_like(d, dtype=torch.bool)
        dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
        return torch.zeros_like(dup).scatter_(1, order, dup)

    return _reject_loop(
        lambda s: _randint(n_cols, s, generator, device),
        bad,
        (rows.numel(), k),
        max_rounds,
        row_check=None if replacement or k < 2 else dups,
    )


def epoch_triples(
    split: Split, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every training interaction once, shuffled, with one uniform negative each.

    Returns (users, pos, neg), int64 tensors of shape (nnz,) on `device`. Negatives are never
    training positives of that user (validation/test items may be drawn, as in the references).
    """
    indptr, indices = split.train_tensors(device)
    ck = ("csr_keys", str(device))
    if ck not in split._cache:
        split._cache[ck] = csr_keys(indptr, indices, split.n_items)
    keys = split._cache[ck]
    nnz = indices.numel()
    perm = to_device(
        torch.randperm(nnz, generator=generator, device=_gen_device(generator)), indices.device
    )
    key = keys[perm]
    users = torch.div(key, split.n_items, rounding_mode="floor")
    pos = key - users * split.n_items
    neg = sample_negatives(indptr, indices, users, split.n_items, generator, 1, keys=keys)
    return users, pos, neg[:, 0]
