"""`DistillerContract`: the tests every registered distiller passes (subclass it, set the method).

A test class inherits the contract and provides the ``method`` fixture; the registry-wide class
in ``test_distiller_contract.py`` does so for every entry of ``DISTILLERS``. ``TINY_PARAMS``
shrinks the list lengths of a method to the 40-item generated split (a method not listed runs
with its defaults).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recpress.distill.knowledge import Knowledge
from recpress.distill.registry import make_distillers, prepare_distillers
from recpress.errors import ConfigError
from recpress.models import BPRMF, TripletBatch
from tests.conftest import random_split

N_USERS, N_ITEMS = 30, 40

TINY_PARAMS: dict[str, dict] = {
    "cd": {"n_candidates": 20, "n_distill": 3},
    "dcd": {"k": 5, "n_list": 20},
    "de": {"n_experts": 2},
    "htd": {"n_groups": 2},
    "ir-rrd": {"K": 3, "L": 3, "N": 20, "K_I": 3, "L_I": 3, "N_I": 20},
    "hetcomp": {"K": 10, "dkc_k": 5, "p": 1, "rank_top": 5, "rank_head": 2},
    "kd": {"k": 5},
    "pckd": {"n_experts": 2, "mxK": 10, "Q": 2},
    "rce-kd": {"K": 3, "L": 3, "mxK": 10, "count_cap": 5},
    "rd": {"k": 3, "n_dyn": 5, "start_epoch": 0},
    "rrd": {"K": 3, "L": 3, "N": 20},
    "unkd": {"n_groups": 2, "n_distill": 3, "n_candidates": 20},
}


def setup(method: str, seed: int = 0):
    """(distiller, student, split) prepared from a tiny BPR teacher (d=8; student d=4), with
    its first epoch started."""
    distiller, student, split = prepared(method, seed)
    distiller.on_epoch_start(student, 0, torch.Generator().manual_seed(seed + 2))
    return distiller, student, split


def unprepared_epoch(method: str, seed: int = 0):
    """Like `setup`, without the epoch start (the test drives the epochs)."""
    return prepared(method, seed)[:2]


def prepared(method: str, seed: int = 0):
    """(distiller, student, split): the distiller prepared, no epoch started."""
    split = random_split(N_USERS, N_ITEMS, per_user=5, seed=3)
    teacher = BPRMF(8, init_std=1.0).build(split, torch.Generator().manual_seed(seed)).eval()
    student = BPRMF(4, init_std=0.5).build(split, torch.Generator().manual_seed(seed + 1))
    params = TINY_PARAMS.get(method, {})
    pairs = make_distillers(method, None, {method: params} if params else None)
    knowledge = Knowledge.from_teacher(teacher, split)
    if pairs[0][0].multi_teacher:  # trajectory-based (HetComp): synthetic checkpoint lists
        from tests.distill.tiny import synthetic_trajectories

        knowledge.attach_trajectories(synthetic_trajectories(split, 3, k=10, seed=seed + 11))
    prepare_distillers(pairs, knowledge, split, student, seed=seed)
    return pairs[0][0], student, split


def a_batch(seed: int = 0, size: int = 32) -> TripletBatch:
    g = torch.Generator().manual_seed(seed)
    return TripletBatch(
        torch.randint(0, N_USERS, (size,), generator=g),
        torch.randint(0, N_ITEMS, (size,), generator=g),
        torch.randint(0, N_ITEMS, (size,), generator=g),
    )


class DistillerContract:
    """Contract tests; subclasses provide the ``method`` fixture (a key of DISTILLERS)."""

    def test_loss_is_a_finite_scalar_and_reaches_the_student(self, method):
        d, student, _ = setup(method)
        loss = d.loss(student, a_batch(), 0)
        assert loss.shape == () and torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads, f"{method}: no gradient reached the student"
        assert any(
            float(g.coalesce().values().abs().sum() if g.is_sparse else g.abs().sum()) > 0
            for g in grads
        )

    def test_same_seed_same_loss(self, method):
        (a, sa, _), (b, sb, _) = setup(method, 4), setup(method, 4)
        assert torch.equal(a.loss(sa, a_batch(1), 0).detach(), b.loss(sb, a_batch(1), 0).detach())

    def test_requires_is_honoured(self, method):
        d, student, split = setup(method)
        for missing in sorted(d.requires):
            stub = SimpleNamespace(
                provides=frozenset({"embeddings", "scores", "topk"}) - {missing},
                source="stub",
                teacher=None,
            )
            with pytest.raises(ConfigError, match=missing):
                prepare_distillers([(type(d)(**d.get_params()), 1.0)], stub, split, student)

    def test_resume_at_an_epoch_boundary_is_exact(self, method):
        """State after epoch 0 (module state, extra_state_tensors, the trainer's generator)
        restored into a fresh distiller gives the same epoch-1 loss."""
        a, sa = unprepared_epoch(method, 6)
        g = torch.Generator().manual_seed(7)
        a.on_epoch_start(sa, 0, g)
        a.loss(sa, a_batch(1), 0)
        a.on_epoch_end(0)
        state = {k: v.clone() for k, v in a.state_dict().items()}
        extra = {k: v.clone() for k, v in a.extra_state_tensors().items()}
        g_state = g.get_state()
        a.on_epoch_start(sa, 1, g)
        expected = a.loss(sa, a_batch(2), 1).detach()

        b, sb = unprepared_epoch(method, 6)
        b.on_epoch_start(sb, 0, torch.Generator().manual_seed(123))  # other samples first
        b.load_state_dict(state)
        b.load_extra_state_tensors(extra)
        g2 = torch.Generator()
        g2.set_state(g_state)
        b.on_epoch_start(sb, 1, g2)
        assert torch.equal(b.loss(sb, a_batch(2), 1).detach(), expected)
