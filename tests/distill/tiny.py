"""A tiny split with a BPR teacher and student, shared by the distiller tests."""

from __future__ import annotations

import numpy as np
import torch

from recpress.data.types import Split, to_csr
from recpress.distill.knowledge import Knowledge
from recpress.models.base import TripletBatch
from recpress.models.bpr import BPRMF


def tiny(n_users=4, n_items=12, per_user=3, seed=0):
    """(split, teacher d=8, student d=4, knowledge): `per_user` train items and 1 valid item."""
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(n_users), per_user)
    i = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    train = to_csr(u, i, n_users, n_items)
    v = np.arange(n_users)
    vi = np.array([next(j for j in range(n_items) if train[x, j] == 0) for x in v])
    valid = to_csr(v, vi, n_users, n_items)
    test = to_csr(np.array([], int), np.array([], int), n_users, n_items)
    split = Split(train, valid, test, np.arange(n_users), np.arange(n_items))
    teacher = BPRMF(8, init_std=1.0).build(split, torch.Generator().manual_seed(seed))
    student = BPRMF(4, init_std=1.0).build(split, torch.Generator().manual_seed(99))
    return split, teacher, student, Knowledge.from_teacher(teacher, split)


def synthetic_trajectories(split, n_checkpoints: int = 3, k: int = 6, seed: int = 0):
    """Trajectories in the agreed format (``epochs``, ``lists`` (C, n_users, k) int32, training
    items excluded, ``k``, ``fingerprint``): checkpoint c holds the masked top-k lists of a
    random BPR d=8 model of seed ``seed + c``."""
    from types import SimpleNamespace

    lists = [
        Knowledge.from_teacher(
            BPRMF(8, init_std=1.0).build(split, torch.Generator().manual_seed(seed + c)), split
        ).user_topk(k)
        for c in range(n_checkpoints)
    ]
    return SimpleNamespace(
        epochs=[10 * (c + 1) for c in range(n_checkpoints)],
        lists=torch.stack(lists),
        k=k,
        fingerprint=split.fingerprint(),
    )


def batch(users):
    """A TripletBatch of these users (positives and negatives are item 0)."""
    u = torch.as_tensor(users)
    return TripletBatch(u, torch.zeros_like(u), torch.zeros_like(u))


def check_fit_finite_deterministic_and_resumes(
    make_distiller, weight: float, tmp_path, trajectories: int = 0
) -> None:
    """A BPR d=4 student with ``make_distiller()`` (weight λ) on a tiny split: 3 epochs are
    finite, the same for the same seed, different for another, and a run stopped after 2 epochs
    resumes to the same per-epoch losses. ``trajectories``: give the teacher that many
    synthetic trajectory checkpoints (top-10 lists)."""
    import math

    from recpress.distill.registry import prepare_distillers
    from recpress.training import Trainer

    split, _, _, kn = tiny(n_users=12, n_items=20)
    if trajectories:
        kn.attach_trajectories(synthetic_trajectories(split, trajectories, k=10, seed=5))

    def fit(run_dir, seed: int, epochs: int) -> list[float]:
        model, pairs = BPRMF(4), [(make_distiller(), weight)]
        prepare_distillers(pairs, kn, split, student=model, seed=seed)
        cfg = dict(epochs=epochs, batch_size=8, eval_every=1, device="cpu", ks=[5], seed=seed)
        res = Trainer(**cfg, selection_metric="recall@5").fit(
            model, split, pairs, run_dir=run_dir, progress=False
        )
        return [r["loss"] for r in res.history]

    a = fit(tmp_path / "a", 0, 3)
    assert len(a) == 3 and all(math.isfinite(x) for x in a)
    assert a == fit(tmp_path / "b", 0, 3)
    assert a != fit(tmp_path / "c", 1, 3)
    fit(tmp_path / "d", 0, 2)
    assert fit(tmp_path / "d", 0, 3) == a  # resumed from epoch 2's checkpoint
