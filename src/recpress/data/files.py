"""A user's own data files → Split: one interactions file (split by a protocol), or three
ready-made train / valid / test files (the ``fixed`` protocol)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recpress.data.cleaning import build_interactions
from recpress.data.readers import (
    read_lightgcn,
    read_movielens,
    read_pairs_tsv,
    read_recbole_inter,
    read_table,
    read_users_dat,
)
from recpress.data.splits import split
from recpress.data.types import Split
from recpress.errors import ConfigError, DataError, unknown_name

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "users-dat": read_users_dat,
    "pairs": read_pairs_tsv,
    "movielens": read_movielens,
    "lightgcn": read_lightgcn,
    "recbole": read_recbole_inter,
    "table": read_table,
}
FORMATS = tuple(READERS)


def guess_format(path: str | Path) -> str:
    """Format from the file name: .inter → recbole, .csv/.parquet → table, u.data /
    ratings.dat → movielens, users.dat → users-dat, .tsv/.txt → pairs."""
    name = Path(path).name.lower()
    if name.endswith(".inter"):
        return "recbole"
    if name.endswith((".csv", ".parquet", ".pq")):
        return "table"
    if name in ("u.data", "ratings.dat"):
        return "movielens"
    if name == "users.dat":
        return "users-dat"
    return "pairs"


def read_file(path: str | Path, fmt: str | None = None, columns: dict[str, str] | None = None):
    """Read one interactions file in format `fmt` (guessed from the name when None)."""
    fmt = fmt or guess_format(path)
    if fmt not in READERS:
        raise unknown_name("file format", fmt, FORMATS, field="data.format")
    if fmt == "table":
        cols = {"user": "user", "item": "item", **(columns or {})}
        return read_table(
            path, cols["user"], cols["item"], cols.get("rating"), cols.get("timestamp")
        )
    if columns:
        raise ConfigError("data.columns applies to the 'table' format only", field="data.columns")
    return READERS[fmt](path)


def load_files_split(
    *,
    interactions: str | Path | None = None,
    train: str | Path | None = None,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    fmt: str | None = None,
    columns: dict[str, str] | None = None,
    protocol: str | None = None,
    seed: int = 0,
    name: str = "",
    **clean: Any,
) -> Split:
    """Split from a user's files.

    Either ``interactions`` (one file, split by ``protocol``, default ``loo``) or all of
    ``train``, ``valid``, ``test`` (protocol ``fixed``). Every user with a validation or test
    item must have at least one training item.
    """
    if interactions is not None:
        if train or valid or test:
            raise ConfigError("give either data.interactions or data.train/valid/test, not both")
        frame = read_file(interactions, fmt, columns)
        inter = build_interactions(frame, name or Path(interactions).stem, **clean)
        return split(inter, protocol or "loo", seed=seed)
    if not (train and valid and test):
        raise ConfigError(
            "a fixed split needs all three files: data.train, data.valid and data.test",
            field="data",
        )
    if protocol not in (None, "fixed"):
        raise ConfigError("three split files mean protocol 'fixed'", field="data.protocol")
    paths = [Path(p) for p in (train, valid, test)]
    frames = [read_file(p, fmt, columns) for p in paths]
    for frame, path in zip(frames[1:], paths[1:], strict=True):
        seen = np.isin(frame["user"].to_numpy(), frames[0]["user"].to_numpy())
        if not seen.all():
            bad = int(np.flatnonzero(~seen)[0])
            raise DataError(
                f"user {frame['user'].iloc[bad]!r} has no training items (it is not in "
                f"{paths[0]}); add its interactions to the training file or remove it here",
                path=path,
                line=bad + 1,
            )
    inter = build_interactions(
        pd.concat(frames, ignore_index=True), name or paths[0].parent.name, **clean
    )
    return split(inter, "fixed", parts=frames)
