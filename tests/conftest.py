"""Shared fixtures: the dataset root and small real splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recpress.data.types import Split, to_csr

DEFAULT_ROOT = "/work/shared/datasets"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding `<name>/` dataset folders (RECPRESS_DATA); skips the test when absent."""
    root = Path(os.environ.get("RECPRESS_DATA", DEFAULT_ROOT)).resolve()
    if not root.is_dir():
        pytest.skip(f"dataset root {root} not found; set RECPRESS_DATA")
    return root


@pytest.fixture(scope="session")
def ml100k_split(data_root: Path) -> Split:
    """ml-100k, all ratings as positives, seeded leave-one-out split."""
    from recpress.data import load_split

    return load_split("ml-100k", protocol="loo", seed=0, path=str(data_root / "ml-100k"))


def shape_split(n_users: int, n_items: int) -> Split:
    """A split with no interactions, only its shape: for building a model of that size."""
    empty = to_csr(np.array([], dtype=np.int64), np.array([], dtype=np.int64), n_users, n_items)
    return Split(empty, empty, empty, np.arange(n_users), np.arange(n_items))


def random_split(n_users: int = 30, n_items: int = 40, per_user: int = 6, seed: int = 0) -> Split:
    """A small generated split: `per_user` train items, 1 valid and 1 test item per user."""
    rng = np.random.default_rng(seed)
    rows_t, cols_t, rows_v, cols_v, rows_s, cols_s = [], [], [], [], [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user + 2, replace=False)
        rows_t += [u] * per_user
        cols_t += list(items[:per_user])
        rows_v.append(u)
        cols_v.append(items[per_user])
        rows_s.append(u)
        cols_s.append(items[per_user + 1])
    return Split(
        train=to_csr(np.array(rows_t), np.array(cols_t), n_users, n_items),
        valid=to_csr(np.array(rows_v), np.array(cols_v), n_users, n_items),
        test=to_csr(np.array(rows_s), np.array(cols_s), n_users, n_items),
        user_ids=np.arange(n_users),
        item_ids=np.arange(n_items),
        dataset="generated",
        protocol="loo",
    )
