"""Cleaning: dedupe, binarize, k-core on a hand-built example, re-indexing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recpress.data import binarize, build_interactions, dedupe, kcore_mask, reindex
from recpress.errors import ConfigError


def test_kcore_known_answer():
    # item 5 and item 9 have one user each -> dropped; user 4 then has no items; user 3
    # keeps items 0 and 1 (still >= 2). Everything else is a 2-core already.
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3, 4])
    items = np.array([0, 1, 0, 1, 0, 1, 0, 5, 1, 9])
    keep = kcore_mask(users, items, user_k=2, item_k=2)
    assert keep.tolist() == [True] * 7 + [False, True, False]


def test_kcore_cascades():
    # chain: removing item 2 (1 user) drops user 2 below 2 items, which drops item 1 below 2
    # users, which drops user 1 ... until nothing with 2/2 support remains but the 0/3 block
    users = np.array([0, 0, 1, 1, 2, 2, 5, 5, 6, 6])
    items = np.array([0, 3, 0, 1, 1, 2, 0, 3, 0, 3])
    keep = kcore_mask(users, items, user_k=2, item_k=2)
    kept = {(int(u), int(i)) for u, i in zip(users[keep], items[keep], strict=True)}
    assert kept == {(0, 0), (0, 3), (5, 0), (5, 3), (6, 0), (6, 3)}


def test_dedupe_binarize_reindex_build():
    frame = pd.DataFrame(
        {
            "user": [10, 10, 20, 20, 30, 10],
            "item": [7, 8, 7, 9, 9, 7],
            "rating": [5.0, 2.0, 4.0, 4.0, 1.0, 3.0],
        }
    )
    assert len(dedupe(frame)) == 5
    assert binarize(frame, 4)["rating"].min() >= 4
    with pytest.raises(ConfigError):
        binarize(frame.drop(columns="rating"), 4)
    inter = build_interactions(frame, "toy", min_rating=4)
    assert (inter.n_users, inter.n_items, len(inter)) == (2, 2, 3)
    assert inter.user_ids.tolist() == [10, 20]
    assert inter.item_ids.tolist() == [7, 9]
    assert inter.user_ids[inter.users].tolist() == [10, 20, 20]
    assert inter.item_ids[inter.items].tolist() == [7, 7, 9]


def test_reindex_appearance():
    codes, orig = reindex(np.array([5, 3, 5, 9, 3]), "appearance")
    assert codes.tolist() == [0, 1, 0, 2, 1]
    assert orig.tolist() == [5, 3, 9]
    codes, orig = reindex(np.array([5, 3, 5, 9, 3]), "sorted")
    assert codes.tolist() == [1, 0, 1, 2, 0] and orig.tolist() == [3, 5, 9]


def test_build_with_kcore_and_string_ids():
    frame = pd.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "x", "y", "z"]})
    inter = build_interactions(frame, user_k=2, item_k=2)
    assert inter.user_ids.tolist() == ["a", "b"] and inter.item_ids.tolist() == ["x", "y"]
    assert len(inter) == 4
