"""The tolerant top-K comparison accepts rounding and catches real selection errors (mutations)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.topk_checks import assert_same_topk, tie_groups


def exact_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.fixture()
def case():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 40))
    scores[2, 7] = scores[2, int(np.argmax(scores[2]))] + 1e-9  # a near-tie at the top
    values, items = exact_topk(scores, 8)
    return scores, values, items


def test_tie_groups():
    assert tie_groups(np.array([3.0, 2.0, 2.0 - 1e-9, 1.0])).tolist() == [0, 1, 1, 2]
    assert tie_groups(np.array([])).tolist() == []


def test_accepts_rounding_and_reordered_ties(case):
    scores, values, items = case
    noisy = values * (1 + 1e-7)  # an ulp-scale difference from another kernel
    swapped = items.copy()
    swapped[2, [0, 1]] = swapped[2, [1, 0]]  # the near-tied pair in the other order
    assert_same_topk(values, items, noisy, swapped, scores=scores)


def test_accepts_another_member_tied_at_the_cut():
    scores = np.array([[5.0, 4.0, 3.0, 3.0 + 1e-9, 1.0]])
    va, ia = np.array([[5.0, 4.0, 3.0 + 1e-9]]), np.array([[0, 1, 3]])
    vb, ib = np.array([[5.0, 4.0, 3.0]]), np.array([[0, 1, 2]])
    assert_same_topk(va, ia, vb, ib, scores=scores)


@pytest.mark.parametrize(
    "mutation",
    ["swap_untied", "drop_best", "duplicate", "wrong_id_same_value", "masked_rank", "value"],
)
def test_catches_selection_errors(case, mutation: str):
    scores, values, items = case
    v, i = values.copy(), items.copy()
    if mutation == "swap_untied":  # two distinct scores in the wrong order, values kept sorted
        i[0, [3, 4]] = i[0, [4, 3]]
    elif mutation == "drop_best":  # the best item missing: everyone moves up one rank
        v[1, :-1], i[1, :-1] = values[1, 1:], items[1, 1:]
        order = np.argsort(-scores[1], kind="stable")
        v[1, -1], i[1, -1] = scores[1, order[8]], order[8]
    elif mutation == "duplicate":
        i[4, 5] = i[4, 2]
    elif mutation == "wrong_id_same_value":  # the id at the cut does not carry its value
        i[5, -1] = int(np.argsort(scores[5])[0])
    elif mutation == "masked_rank":
        v[3, -1] = -np.inf
    else:
        v[0, 0] += 1e-2
    with pytest.raises(AssertionError):
        assert_same_topk(values, items, v, i, scores=scores)
