"""Fixtures for the serving tests: a tiny model on a generated split with string ids, its
artifact, and a 2-epoch ml-100k run directory (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recpress.data.types import Split, to_csr
from recpress.models import BPRMF
from recpress.serving.artifact import Artifact


def string_id_split(n_users: int = 40, n_items: int = 60, per_user: int = 8, seed: int = 0):
    """Generated split whose original ids are strings (users "u<k>", items "i<k>")."""
    rng = np.random.default_rng(seed)
    rows, cols = {"t": [], "v": [], "s": []}, {"t": [], "v": [], "s": []}
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user + 2, replace=False)
        rows["t"] += [u] * per_user
        cols["t"] += list(items[:per_user])
        for part, item in (("v", items[per_user]), ("s", items[per_user + 1])):
            rows[part].append(u)
            cols[part].append(item)
    csr = {p: to_csr(np.array(rows[p]), np.array(cols[p]), n_users, n_items) for p in rows}
    return Split(
        train=csr["t"],
        valid=csr["v"],
        test=csr["s"],
        user_ids=np.array([f"u{k}" for k in range(n_users)]),
        item_ids=np.array([f"i{k}" for k in range(n_items)]),
        dataset="generated",
        protocol="loo",
    )


@pytest.fixture(scope="session")
def small_split() -> Split:
    return string_id_split()


@pytest.fixture(scope="session")
def small_model(small_split: Split) -> BPRMF:
    g = torch.Generator().manual_seed(0)
    model = BPRMF(embedding_dim=8, init_std=1.0).build(small_split, generator=g)
    return model.eval()


@pytest.fixture
def small_artifact(tmp_path: Path, small_model: BPRMF, small_split: Split) -> Path:
    art = Artifact.from_model(small_model, small_split, metrics={"test": {"recall@50": 0.5}})
    return art.save(tmp_path / "artifact")


@pytest.fixture(scope="session")
def ml_run(tmp_path_factory, data_root: Path) -> Path:
    """A 2-epoch BPR dim-8 run on ml-100k (leave-one-out)."""
    from recpress.experiments.config import RunConfig
    from recpress.experiments.run import train_run

    out = tmp_path_factory.mktemp("runs") / "ml100k-bpr8"
    cfg = RunConfig.model_validate(
        {
            "data": {"dataset": "ml-100k", "path": str(data_root / "ml-100k")},
            "model": {"embedding_dim": 8},
            "train": {"epochs": 2, "eval_every": 1, "device": "cpu"},
        }
    )
    train_run(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def neumf_run(tmp_path_factory) -> Path:
    """A 2-epoch NeuMF (d=8, 2 MLP layers) run on a generated 60 × 80 pairs file (loo split):
    a model-form export (no dot-product form)."""
    from recpress.experiments.run import train_run
    from tests.run_dirs.tinyruns import tiny_config, write_pairs

    root = tmp_path_factory.mktemp("neumf")
    cfg = tiny_config(
        write_pairs(root / "pairs.tsv"),
        model={"name": "neumf", "embedding_dim": 8, "layers": 2, "init_std": 0.5},
        train={"epochs": 2, "eval_every": 2, "batch_size": 128, "device": "cpu"},
    )
    train_run(cfg, root / "run", progress=False)
    return root / "run"
