"""Split protocols: Interactions -> Split (train / valid / test), vectorised and seeded.

Protocols (select by name):

* ``loo`` (alias ``loo-full``): per user, 1 random test item and 1 random validation item; the
  rest is training. Users with fewer than ``min_items`` (default 3) interactions stay entirely
  in train.
* ``ratio``: per user, shuffle; test = first floor(f_test*n), valid = next floor(f_valid*n),
  train = rest. ``fractions=(train, valid, test)``, default (0.6, 0.2, 0.2).
  ``ratio-hetcomp`` is ``ratio`` with (0.6, 0.2, 0.2) and ``drop_cold=True``: validation/test
  items with no training interaction anywhere are dropped, then users whose validation or test
  set became empty lose both (their training items stay). Only there is union != data.
* ``temporal``: per user in time order (ties by row order). Without ``fractions``: last item ->
  test, second to last -> valid (users with < ``min_items`` stay in train). With
  ``fractions=(f_train, f_valid, f_test)``: train = first max(floor(f_train*n), 1), valid up to
  position floor((f_train+f_valid)*n), test = rest. ``order="file"`` uses row order instead of
  timestamps. ``ordered-811`` = temporal, fractions (0.8, 0.1, 0.1), file order.
* ``fixed``: the parts are given (``parts=(train, valid, test)`` frames with columns user,
  item of original ids, or ``paths=`` of three ``user<TAB>item`` files); their union must
  equal the data.

Random protocols draw one uniform key per interaction from ``numpy.random.default_rng(seed)``
and rank within user by (user, key) with ``np.lexsort``: no per-user Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recpress.data.readers import read_pairs_tsv
from recpress.data.types import Interactions, Split, to_csr
from recpress.errors import ConfigError, DataError, unknown_name

__all__ = ["PROTOCOLS", "split", "split_from_parts"]

TRAIN, VALID, TEST, DROP = 0, 1, 2, 3


def _ranks(users: np.ndarray, n_users: int, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of each interaction within its user, ordered by `keys` (first = primary),
    and each interaction's user count."""
    order = np.lexsort(tuple(reversed(keys)) + (users,))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users), dtype=np.int64) - starts[users[order]]
    return rank, counts[users]


def _floor(frac: float, n: np.ndarray) -> np.ndarray:
    return np.floor(frac * n + 1e-9).astype(np.int64)


def _fractions(opts: dict[str, Any], default: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(x) for x in opts.pop("fractions", default))
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(
            f"fractions must be three non-negative numbers (train, valid, test) summing to 1, "
            f"got {fr}",
            field="fractions",
        )
    return fr  # type: ignore[return-value]


def split_from_parts(
    inter: Interactions, part: np.ndarray, protocol: str, dataset: str | None = None
) -> Split:
    """Build a Split from a per-interaction label array (0 train, 1 valid, 2 test, 3 dropped)."""
    mats = [
        to_csr(inter.users[part == k], inter.items[part == k], inter.n_users, inter.n_items)
        for k in (TRAIN, VALID, TEST)
    ]
    return Split(
        train=mats[0],
        valid=mats[1],
        test=mats[2],
        user_ids=inter.user_ids,
        item_ids=inter.item_ids,
        dataset=inter.name if dataset is None else dataset,
        protocol=protocol,
    )


def _loo(inter: Interactions, seed: int, opts: dict[str, Any]) -> np.ndarray:
    min_items = int(opts.pop("min_items", 3))
    key = np.random.default_rng(seed).random(len(inter))
    rank, count = _ranks(inter.users, inter.n_users, key)
    part = np.full(len(inter), TRAIN, dtype=np.int8)
    ok = count >= max(min_items, 3)
    part[ok & (rank == 0)] = TEST
    part[ok & (rank == 1)] = VALID
    return part


def _ratio(inter: Interactions, seed: int, opts: dict[str, Any], drop_cold: bool) -> np.ndarray:
    _, f_valid, f_test = _fractions(opts, (0.6, 0.2, 0.2))
    drop_cold = bool(opts.pop("drop_cold", drop_cold))
    key = np.random.default_rng(seed).random(len(inter))
    rank, count = _ranks(inter.users, inter.n_users, key)
    n_test = _floor(f_test, count)
    n_valid = _floor(f_valid, count)
    part = np.full(len(inter), TRAIN, dtype=np.int8)
    part[rank < n_test + n_valid] = VALID
    part[rank < n_test] = TEST
    if drop_cold:
        warm = np.zeros(inter.n_items, dtype=bool)
        warm[inter.items[part == TRAIN]] = True
        part[(part != TRAIN) & ~warm[inter.items]] = DROP
        has_v = np.bincount(inter.users[part == VALID], minlength=inter.n_users) > 0
        has_t = np.bincount(inter.users[part == TEST], minlength=inter.n_users) > 0
        lose = ~(has_v & has_t)
        part[((part == VALID) | (part == TEST)) & lose[inter.users]] = DROP
    return part


def _temporal(inter: Interactions, opts: dict[str, Any], order: str) -> np.ndarray:
    order = opts.pop("order", order)
    pos = np.arange(len(inter), dtype=np.int64)
    if order == "time":
        if inter.timestamps is None:
            raise ConfigError(
                f"protocol 'temporal' needs timestamps, but dataset {inter.name!r} has none; "
                "use order='file' (row order) or a random protocol such as 'loo'",
                field="protocol",
            )
        rank, count = _ranks(inter.users, inter.n_users, inter.timestamps, pos)
    elif order == "file":
        rank, count = _ranks(inter.users, inter.n_users, pos)
    else:
        raise ConfigError(f"unknown order {order!r}; use 'time' or 'file'", field="order")
    part = np.full(len(inter), TRAIN, dtype=np.int8)
    if "fractions" not in opts:
        min_items = int(opts.pop("min_items", 3))
        ok = count >= max(min_items, 3)
        back = count - 1 - rank
        part[ok & (back == 0)] = TEST
        part[ok & (back == 1)] = VALID
        return part
    f_train, f_valid, _ = _fractions(opts, (0.8, 0.1, 0.1))
    n_train = np.maximum(_floor(f_train, count), 1)
    n_tv = np.maximum(_floor(f_train + f_valid, count), n_train)
    part[rank >= n_train] = VALID
    part[rank >= n_tv] = TEST
    return part


def _map_ids(orig: np.ndarray, ids: np.ndarray, what: str, where: object) -> np.ndarray:
    """Internal codes of original ids; unknown ids -> DataError."""
    sorter = np.argsort(orig, kind="stable")
    srt = orig[sorter]
    pos = np.clip(np.searchsorted(srt, ids), 0, len(srt) - 1)
    bad = np.flatnonzero(srt[pos] != ids)
    if len(bad):
        raise DataError(
            f"{what} id {ids[bad[0]]!r} (row {int(bad[0]) + 1}) is not in the dataset",
            path=where,
            line=int(bad[0]) + 1,
        )
    return sorter[pos].astype(np.int64)


def _fixed(inter: Interactions, opts: dict[str, Any]) -> np.ndarray:
    parts = opts.pop("parts", None)
    paths = opts.pop("paths", None)
    if parts is None and paths is None:
        raise ConfigError(
            "protocol 'fixed' needs parts=(train, valid, test) frames or paths=(3 files)",
            field="protocol",
        )
    if parts is None:
        paths = [Path(p) for p in paths]
        parts = [read_pairs_tsv(p) for p in paths]
    else:
        paths = ["train", "valid", "test"]
    if len(parts) != 3:
        raise ConfigError("fixed split needs exactly three parts", field="parts")
    key_data = inter.users * inter.n_items + inter.items
    order = np.argsort(key_data, kind="stable")
    key_sorted = key_data[order]
    part = np.full(len(inter), -1, dtype=np.int8)
    for label, (frame, where) in enumerate(zip(parts, paths, strict=True)):
        u = _map_ids(inter.user_ids, np.asarray(frame["user"]), "user", where)
        i = _map_ids(inter.item_ids, np.asarray(frame["item"]), "item", where)
        k = u * inter.n_items + i
        pos = np.clip(np.searchsorted(key_sorted, k), 0, max(len(key_sorted) - 1, 0))
        miss = np.flatnonzero(key_sorted[pos] != k)
        if len(miss):
            raise DataError("pair is not in the dataset", path=where, line=int(miss[0]) + 1)
        idx = order[pos]
        if (part[idx] != -1).any():
            raise DataError(
                "split parts overlap or repeat a pair; parts must be disjoint", path=where
            )
        part[idx] = label
    if (part == -1).any():
        raise DataError(
            f"{int((part == -1).sum())} interactions are in no part; the union of the fixed "
            "parts must equal the dataset"
        )
    return part


PROTOCOLS: tuple[str, ...] = (
    "fixed",
    "loo",
    "loo-full",
    "ordered-811",
    "ratio",
    "ratio-hetcomp",
    "temporal",
)


def split(interactions: Interactions, protocol: str, seed: int = 0, **opts: Any) -> Split:
    """Split `interactions` by the named protocol (see module docstring for options)."""
    opts = dict(opts)
    if protocol in ("loo", "loo-full"):
        part = _loo(interactions, seed, opts)
    elif protocol == "ratio":
        part = _ratio(interactions, seed, opts, drop_cold=False)
    elif protocol == "ratio-hetcomp":
        opts.setdefault("fractions", (0.6, 0.2, 0.2))
        part = _ratio(interactions, seed, opts, drop_cold=True)
    elif protocol == "temporal":
        part = _temporal(interactions, opts, "time")
    elif protocol == "ordered-811":
        opts.setdefault("fractions", (0.8, 0.1, 0.1))
        part = _temporal(interactions, opts, "file")
    elif protocol == "fixed":
        part = _fixed(interactions, opts)
    else:
        raise unknown_name("split protocol", protocol, PROTOCOLS, field="protocol")
    if opts:
        raise ConfigError(
            f"unknown option(s) for protocol {protocol!r}: {', '.join(sorted(opts))}",
            field="protocol",
        )
    return split_from_parts(interactions, part, protocol)
