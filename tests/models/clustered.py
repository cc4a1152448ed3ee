"""A small generated split with real structure (user groups that like item groups)."""

from __future__ import annotations

import numpy as np
import torch

from recpress.data.types import Split, to_csr
from recpress.evaluation import evaluate
from recpress.models import Recommender
from recpress.training import TrainConfig, Trainer


def clustered_split(
    n_users: int = 60, n_items: int = 40, groups: int = 4, per_user: int = 6, seed: int = 0
) -> Split:
    """User u is in group u % groups and interacts only with items i, i % groups == its group:
    `per_user` train items, then 1 valid and 1 test item, all distinct."""
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[int], list[int]]] = {p: ([], []) for p in ("t", "v", "s")}
    for u in range(n_users):
        pool = np.arange(u % groups, n_items, groups)
        items = rng.choice(pool, size=per_user + 2, replace=False)
        for part, chosen in (("t", items[:per_user]), ("v", items[-2:-1]), ("s", items[-1:])):
            parts[part][0].extend([u] * len(chosen))
            parts[part][1].extend(chosen.tolist())

    def csr(part: str):
        rows, cols = parts[part]
        return to_csr(np.array(rows), np.array(cols), n_users, n_items)

    return Split(
        csr("t"), csr("v"), csr("s"), np.arange(n_users), np.arange(n_items), "clustered", "loo"
    )


def fit_beats_random(model: Recommender, epochs: int = 10, lr: float = 1e-2, **split_kw) -> None:
    """Train `model` a few epochs on a clustered split; its valid Recall@10 must beat random
    scores and the training loss must fall."""
    split = clustered_split(**split_kw)
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        weight_decay=0.0,
        batch_size=64,
        eval_every=epochs,
        patience=None,
        ks=[10],
        selection_metric="recall@10",
        device="cpu",
    )
    result = Trainer(config).fit(model, split, progress=False)
    losses = [row["loss"] for row in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    generator = torch.Generator().manual_seed(0)
    rand = evaluate(
        lambda u: torch.rand(len(u), split.n_items, generator=generator),
        split,
        ks=[10],
        phase="valid",
    )
    trained = evaluate(model, split, ks=[10], phase="valid")
    assert trained.metrics["recall@10"] > rand.metrics["recall@10"] + 0.2, (
        trained.metrics,
        rand.metrics,
    )
