"""DCD: ranks and error weights, sampling properties, stable RRD, loss vs loop reference, fit."""

from __future__ import annotations

import math

import pytest
import torch

from recpress.distill.dual_correction import DCD, error_weights, rrd_terms, within_list_ranks
from recpress.distill.registry import DISTILLERS
from recpress.models.base import TripletBatch
from recpress.models.bpr import BPRMF
from recpress.training.trainer import Trainer
from tests.distill.tiny import batch, tiny

torch.set_num_threads(1)


def test_defaults():
    assert DISTILLERS["dcd"] is DCD
    d = DCD()
    assert (d.k, d.n_list, d.eps, d.rank_scope, d.item_side, d.sampling) == (
        100,
        500,
        0.1,
        "within",
        True,
        "sample",
    )
    assert (d.reduction, d.user_weighting, DCD.default_weight) == ("sum", "unique", 0.01)


def test_within_list_ranks_and_error_weights_by_hand():
    s = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    r = within_list_ranks(s)
    assert r.tolist() == [[3, 0, 2, 1]]
    under, over = error_weights(r, 0.5)
    # m = 0..3: r − m = 3, −1, 0, −2
    assert under[0].tolist() == pytest.approx([math.tanh(1.5), 1e-5, 1e-5, 1e-5])
    assert over[0].tolist() == pytest.approx([1e-5, math.tanh(0.5), 1e-5, math.tanh(1.0)])


def naive_rrd(s_ord, s_oth):
    total = 0.0
    for k in range(len(s_ord)):
        z = sum(math.exp(x) for x in s_ord[k:]) + sum(math.exp(x) for x in s_oth)
        total -= s_ord[k] - math.log(z)
    return total


def test_rrd_terms_match_loop_and_are_stable():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 5, generator=g)
    got = rrd_terms(a, b)
    for row in range(3):
        assert float(got[row]) == pytest.approx(
            naive_rrd(a[row].tolist(), b[row].tolist()), rel=1e-5
        )
    big = (a * 1e4).requires_grad_()
    out = rrd_terms(big, b * 1e4)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(big.grad).all()


def test_samples_within_list_and_under_sorted():
    d = DCD(k=4, n_list=10)
    g = torch.Generator().manual_seed(0)
    under = torch.rand(6, 10, generator=g).clamp_min(1e-5)
    over = torch.rand(6, 10, generator=g).clamp_min(1e-5)
    pi, om = d.sample_positions(under, over, g)
    assert pi.shape == (6, 4) and om.shape == (6, 4)
    assert ((pi >= 0) & (pi < 10)).all() and ((om >= 0) & (om < 10)).all()
    assert (pi[:, 1:] > pi[:, :-1]).all()  # sorted by teacher rank, no repeats
    assert all(len(set(r)) == 4 for r in om.tolist())
    # floor: sampling works even with a single positive weight
    few = torch.full((1, 10), 1e-5)
    few[0, 7] = 0.9
    pi, _ = d.sample_positions(few, few, g)
    assert 7 in pi[0].tolist()


def ref_side(student, lists, under, over, rows, k, item_side):
    total = 0.0
    for x in rows:
        pi = sorted(sorted(range(under.shape[1]), key=lambda m: -float(under[x, m]))[:k])
        om = sorted(range(over.shape[1]), key=lambda m: -float(over[x, m]))[:k]

        def sc(m, x=x):
            y = int(lists[x, m])
            u, i = (y, x) if item_side else (x, y)
            return float(student.score_items(torch.tensor([u]), torch.tensor([[i]])))

        total += naive_rrd([sc(m) for m in pi], [sc(m) for m in om])
    return total


@pytest.mark.parametrize("scope", ["within", "full"])
def test_loss_matches_loop_deterministic(scope):
    split, teacher, student, kn = tiny()
    d = DCD(k=2, n_list=5, eps=0.5, rank_scope=scope, sampling="deterministic", item_weight=0.5)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    for u in range(4):  # student ranks → weights, by loops
        lst = d.user_lists[u].tolist()
        s = [float(student.score_items(torch.tensor([u]), torch.tensor([[i]]))) for i in lst]
        if scope == "full":
            pool = student.score(torch.tensor([u]))[0].tolist()
            s = [pool[i] for i in lst]
        else:
            pool = s
        for m in range(5):
            r = sum(1 for y in pool if y > s[m])
            want = max(math.tanh(max(0.5 * (r - m), 0.0)), 1e-5)
            assert float(d.user_under[u, m]) == pytest.approx(want, rel=1e-5)
    b = TripletBatch(
        torch.tensor([0, 1, 1, 3]), torch.tensor([5, 5, 2, 7]), torch.tensor([0, 0, 0, 0])
    )
    got = float(d.loss(student, b, 0).detach())
    want = ref_side(student, d.user_lists, d.user_under, d.user_over, [0, 1, 3], 2, False)
    want += 0.5 * ref_side(student, d.item_lists, d.item_under, d.item_over, [2, 5, 7], 2, True)
    assert got == pytest.approx(want, rel=1e-4)


def test_sampled_loss_finite_gradients_student_only():
    split, teacher, student, kn = tiny()
    with torch.no_grad():
        student.user_emb.weight.mul_(1e3)
        student.item_emb.weight.mul_(1e3)
    d = DCD(k=3, n_list=6)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    loss = d.loss(student, batch([0, 1, 2, 3]), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.item_emb.weight.grad.to_dense()).all()
    assert all(p.grad is None for p in teacher.parameters())


def test_two_epoch_fit(tmp_path):
    split, teacher, _, kn = tiny(n_users=12, n_items=20)
    d = DCD(k=3, n_list=8)
    d.prepare(teacher, split, kn)
    cfg = dict(epochs=2, batch_size=8, eval_every=1, device="cpu", ks=[5])
    res = Trainer(**cfg, selection_metric="recall@5").fit(
        BPRMF(4), split, [(d, 0.01)], run_dir=tmp_path, progress=False
    )
    assert res.epochs_run == 2 and all(math.isfinite(r["loss"]) for r in res.history)
