"""Tiny generated interaction data and short training runs, for run-directory tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recpress.experiments.config import RunConfig, parse_config


def write_pairs(path: Path, n_users: int = 60, n_items: int = 80, per_user: int = 10) -> Path:
    """A ``user<TAB>item`` file: `per_user` distinct random items for each user."""
    rng = np.random.default_rng(0)
    lines = [
        f"{u}\t{i}"
        for u in range(n_users)
        for i in sorted(rng.choice(n_items, per_user, replace=False))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(data_file: Path, dim: int = 8, epochs: int = 2, **sections) -> RunConfig:
    """A BPR run on `data_file` (loo split) with `dim` and `epochs`, no profile."""
    data = {
        "data": {"dataset": "tiny", "interactions": str(data_file), "format": "pairs"},
        "model": {"name": "bpr", "embedding_dim": dim},
        "train": {"epochs": epochs, "eval_every": epochs, "batch_size": 128, "device": "cpu"},
        "profile": False,
        **sections,
    }
    return parse_config(RunConfig, data, "tiny config")
