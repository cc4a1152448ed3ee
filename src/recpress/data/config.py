"""`DataConfig`: which data and which split protocol; `load_split_for` loads it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recpress.data.types import Split


class DataConfig(BaseModel):
    """Which data and which split protocol.

    ``dataset`` is a registry name (``recpress datasets`` lists them); ``path`` overrides where
    its files are looked up. Your own files: ``interactions`` (one file, split by ``protocol``)
    or ``train``/``valid``/``test`` (a fixed split), read as ``format``; then ``dataset`` is
    only a label. ``protocol`` None means the dataset's default (``fixed`` for a
    dataset that ships its split, ``loo`` otherwise).
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str = "citeulike-t-td"
    path: str | None = None
    protocol: str | None = None
    split_seed: int = 0
    min_rating: float | None = None
    kcore: int = Field(0, ge=0)
    interactions: str | None = Field(None, description="your own interactions file")
    train: str | None = Field(None, description="your own training file (fixed split)")
    valid: str | None = None
    test: str | None = None
    format: str | None = Field(
        None, description="users-dat, pairs, movielens, lightgcn, recbole or table"
    )
    columns: dict[str, str] | None = Field(
        None, description="table format: column names for user, item, rating, timestamp"
    )


def load_split_for(config: DataConfig) -> Split:
    """Load the split a data config names (raises DataError / ConfigError on bad input)."""
    from recpress.data.files import load_files_split
    from recpress.data.registry import load_split

    d = config
    clean: dict[str, Any] = {}
    if d.min_rating is not None:
        clean["min_rating"] = d.min_rating
    if d.kcore:
        clean.update(user_k=d.kcore, item_k=d.kcore)
    if d.interactions or d.train or d.valid or d.test:
        return load_files_split(
            interactions=d.interactions,
            train=d.train,
            valid=d.valid,
            test=d.test,
            fmt=d.format,
            columns=d.columns,
            protocol=d.protocol,
            seed=d.split_seed,
            name=d.dataset,
            **clean,
        )
    return load_split(d.dataset, protocol=d.protocol, seed=d.split_seed, path=d.path, **clean)
