"""Cleaning raw interaction frames: dedupe, binarize, iterative k-core, contiguous re-indexing."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from recpress.data.types import Interactions
from recpress.errors import ConfigError, DataError

__all__ = ["binarize", "build_interactions", "dedupe", "kcore_mask", "reindex"]

Order = Literal["sorted", "appearance"]


def dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated (user, item) pairs, keeping the first occurrence in row order."""
    keep = ~frame.duplicated(subset=["user", "item"], keep="first").to_numpy()
    if keep.all():
        return frame
    return frame.loc[keep].reset_index(drop=True)


def binarize(frame: pd.DataFrame, min_rating: float | None) -> pd.DataFrame:
    """Keep rows with ``rating >= min_rating`` (all rows when min_rating is None)."""
    if min_rating is None:
        return frame
    if "rating" not in frame.columns:
        raise ConfigError(
            f"min_rating={min_rating} needs ratings, but this dataset has none; "
            "leave min_rating unset",
            field="min_rating",
        )
    keep = frame["rating"].to_numpy() >= float(min_rating)
    return frame.loc[keep].reset_index(drop=True)


def kcore_mask(
    users: np.ndarray, items: np.ndarray, user_k: int = 0, item_k: int = 0
) -> np.ndarray:
    """Boolean mask of the iterative k-core: every kept user has >= user_k kept items and
    every kept item >= item_k kept users. Ids must be 0-based ints; repeats until stable."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    if user_k <= 1 and item_k <= 1:
        return keep
    n_u = int(users.max()) + 1 if len(users) else 0
    n_i = int(items.max()) + 1 if len(items) else 0
    while True:
        ucount = np.bincount(users[keep], minlength=n_u)
        icount = np.bincount(items[keep], minlength=n_i)
        new = keep & (ucount[users] >= user_k) & (icount[items] >= item_k)
        if new.sum() == keep.sum():
            return new
        keep = new


def reindex(ids: np.ndarray, order: Order = "sorted") -> tuple[np.ndarray, np.ndarray]:
    """Map original ids to contiguous 0-based codes.

    order="sorted": code k is the k-th smallest original id; "appearance": order of first
    occurrence. Returns (codes int64, originals) with originals[codes] == ids.
    """
    ids = np.asarray(ids)
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    if order == "sorted":
        return inv, uniq
    if order == "appearance":
        by_first = np.argsort(first, kind="stable")
        rank = np.empty_like(by_first)
        rank[by_first] = np.arange(len(by_first))
        return rank[inv].astype(np.int64), uniq[by_first]
    raise ConfigError(f"unknown id order {order!r}; use 'sorted' or 'appearance'", field="order")


def build_interactions(
    frame: pd.DataFrame,
    name: str = "",
    *,
    min_rating: float | None = None,
    user_k: int = 0,
    item_k: int = 0,
    drop_duplicates: bool = True,
    order: Order = "sorted",
    user_order: Order | None = None,
) -> Interactions:
    """Raw frame (columns user, item[, rating, timestamp]) -> cleaned :class:`Interactions`.

    Steps: binarize by ``min_rating`` (None keeps all), dedupe, iterative user/item k-core,
    re-index users and items to 0..n-1 (``order`` for items, ``user_order`` for users,
    default same as ``order``). Rows keep their file order.
    """
    if not {"user", "item"} <= set(frame.columns):
        raise DataError(f"frame needs columns user and item, has {list(frame.columns)}")
    frame = binarize(frame, min_rating)
    if drop_duplicates:
        frame = dedupe(frame)
    if len(frame) == 0:
        raise DataError(
            f"dataset {name!r} has no interactions left after cleaning "
            "(check min_rating / k-core settings)"
        )
    u_codes, _ = reindex(frame["user"].to_numpy(), "sorted")
    i_codes, _ = reindex(frame["item"].to_numpy(), "sorted")
    keep = kcore_mask(u_codes, i_codes, user_k, item_k)
    if not keep.all():
        frame = frame.loc[keep].reset_index(drop=True)
    if len(frame) == 0:
        raise DataError(
            f"dataset {name!r} is empty after the k-core "
            f"(user_k={user_k}, item_k={item_k}); lower them"
        )
    users, user_ids = reindex(frame["user"].to_numpy(), user_order or order)
    items, item_ids = reindex(frame["item"].to_numpy(), order)
    ratings = frame["rating"].to_numpy(np.float64) if "rating" in frame.columns else None
    times = frame["timestamp"].to_numpy(np.int64) if "timestamp" in frame.columns else None
    return Interactions(
        users=users,
        items=items,
        n_users=len(user_ids),
        n_items=len(item_ids),
        user_ids=user_ids,
        item_ids=item_ids,
        ratings=ratings,
        timestamps=times,
        name=name,
    )
