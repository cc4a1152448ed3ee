"""Comparing two top-K answers up to float rounding.

Two code paths that score with different kernels (a GEMM against a GEMV, numba against torch,
other block sizes, another CPU's BLAS) may round a score differently by an ulp or so. Their
top-K then agree in values up to a tolerance, and in items wherever the scores are not tied
within that tolerance; inside a group of tied scores the order may differ, and in the group at
the K-th place the members may (an item tied with one just outside the list). `assert_same_topk`
checks exactly that and nothing looser: a wrong item at an untied rank, a missing best item, a
duplicate, a swapped pair of untied items or an id that does not carry its value all fail (see
tests/test_topk_checks.py).
"""

from __future__ import annotations

import numpy as np
import torch

RTOL = 1e-5
ATOL = 1e-6


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def tie_groups(values: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> np.ndarray:
    """Group label per rank of one descending row of finite values: neighbours within
    ``atol + rtol·|v|`` share a label. values (K,) -> labels (K,) int64."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    close = np.abs(values[:-1] - values[1:]) <= atol + rtol * np.abs(values[:-1])
    return np.concatenate([[0], np.cumsum(~close)]).astype(np.int64)


def assert_same_topk(
    values_a,
    items_a,
    values_b,
    items_b,
    scores=None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    """Assert that two top-K answers are the same answer up to rounding.

    Args:
        values_a, values_b: (B, K) scores in descending order, -inf for masked/padding ranks.
        items_a, items_b: (B, K) item ids.
        scores: optional (B, n_items) reference scores (e.g. float64); then every returned
            finite id must carry its value: ``scores[r, items[r, j]] ≈ values[r, j]``.

    Checks: values allclose with -inf at the same ranks; no item twice in a row; items equal
    at every rank not tied (within tolerance) with a neighbour; the same set of items in every
    tie group except the one reaching rank K.
    """
    va, vb = _numpy(values_a).astype(np.float64), _numpy(values_b).astype(np.float64)
    ia, ib = _numpy(items_a), _numpy(items_b)
    assert va.shape == vb.shape == ia.shape == ib.shape, (va.shape, vb.shape, ia.shape, ib.shape)
    assert np.array_equal(np.isneginf(va), np.isneginf(vb)), "masked ranks differ"
    finite = np.isfinite(va)
    np.testing.assert_allclose(va[finite], vb[finite], rtol=rtol, atol=atol)
    ref = None if scores is None else _numpy(scores).astype(np.float64)
    for r in range(va.shape[0]):
        row = finite[r]
        a, b = ia[r][row], ib[r][row]
        for items, values in ((a, va[r][row]), (b, vb[r][row])):
            assert len(set(items.tolist())) == len(items), f"row {r}: an item twice"
            if ref is not None:
                np.testing.assert_allclose(ref[r, items], values, rtol=rtol, atol=atol)
        labels = tie_groups(va[r][row], rtol, atol)
        last = labels[-1] if len(labels) else -1
        for g in np.unique(labels):
            at = np.flatnonzero(labels == g)
            if g == last and len(labels) == va.shape[1]:
                continue  # the group at the cut: an equal-valued outsider may take a place
            got_a, got_b = sorted(a[at].tolist()), sorted(b[at].tolist())
            assert got_a == got_b, f"row {r}, ranks {at.tolist()}: items {got_a} != {got_b}"
