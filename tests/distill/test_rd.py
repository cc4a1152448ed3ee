"""RD: position / discrepancy weights by hand, loss vs loop reference, sampling, fit."""

from __future__ import annotations

import math

import pytest
import torch

from recpress.distill.ranking_distillation import RD, position_weights, rd_weights
from recpress.distill.registry import DISTILLERS
from recpress.models.bpr import BPRMF
from recpress.training.trainer import Trainer
from tests.distill.tiny import batch, tiny

torch.set_num_threads(1)


def test_defaults():
    assert DISTILLERS["rd"] is RD
    d = RD()
    assert (d.k, d.lambda_a, d.mu, d.n_dyn, d.start_epoch, d.renormalize) == (
        10,
        1.0,
        0.1,
        100,
        10,
        True,
    )
    assert (d.reduction, d.user_weighting, RD.default_weight) == ("mean", "rows", 1.0)


def test_position_weights_by_hand():
    w = position_weights(3, 1.0)
    z = math.exp(-1) + math.exp(-2) + math.exp(-3)
    assert w.tolist() == pytest.approx([math.exp(-1) / z, math.exp(-2) / z, math.exp(-3) / z])


def test_discrepancy_weights_by_hand():
    # n_items 11, n_dyn 5: r̂ = floor(10·#above/5) = 2·#above
    s_list = torch.tensor([[0.5, 0.1, 2.0]])
    s_dyn = torch.tensor([[1.0, 0.0, 0.3, 0.2, -1.0]])
    # above: 0.5 → 1, 0.1 → 3, 2.0 → 0 ⇒ r̂ = 2, 6, 0; r−1 = 0, 1, 2
    wb = [math.tanh(0.1 * 2), math.tanh(0.1 * 5), 0.0]
    wa = position_weights(3, 1.0)
    raw = rd_weights(s_list, s_dyn, 11, wa, 0.1, hybrid=True, renormalize=False)
    assert raw[0].tolist() == pytest.approx([wa[i].item() * wb[i] for i in range(3)])
    ren = rd_weights(s_list, s_dyn, 11, wa, 0.1, hybrid=True, renormalize=True)
    z = sum(wa[i].item() * wb[i] for i in range(3))
    assert ren[0].tolist() == pytest.approx([wa[i].item() * wb[i] / z for i in range(3)])
    # all-zero discrepancy (student already ranks everything high): zero weights, no nan
    zero = rd_weights(torch.tensor([[9.0, 8.0, 7.0]]), s_dyn, 11, wa, 0.1, True, True)
    assert zero.tolist() == [[0.0, 0.0, 0.0]]
    plain = rd_weights(s_list, s_dyn, 11, wa, 0.1, hybrid=False, renormalize=True)
    assert plain[0].tolist() == pytest.approx(wa.tolist())


def ref_rd(student, lists, dyn, users, n_items, lam_a, mu, hybrid, renorm):
    total = 0.0
    k = lists.shape[1]
    for u in users:

        def sc(i, u=u):
            return float(student.score_items(torch.tensor([u]), torch.tensor([[int(i)]])))

        wa = [math.exp(-(r + 1) / lam_a) for r in range(k)]
        wa = [x / sum(wa) for x in wa]
        s = [sc(i) for i in lists[u]]
        w = list(wa)
        if hybrid:
            sd = [sc(j) for j in dyn[u]]
            for r in range(k):
                above = sum(1 for x in sd if x > s[r])
                rhat = ((n_items - 1) * above) // len(sd)
                w[r] = wa[r] * math.tanh(max(mu * (rhat - r), 0.0))
            if renorm:
                z = sum(w)
                w = [x / z if z > 0 else 0.0 for x in w]
        total += sum(w[r] * math.log1p(math.exp(-s[r])) for r in range(k))
    return total / len(users)


@pytest.mark.parametrize("epoch,renorm", [(0, True), (3, True), (3, False)])
def test_loss_matches_loop(epoch, renorm):
    split, teacher, student, kn = tiny()
    d = RD(k=3, n_dyn=6, start_epoch=2, mu=0.5, renormalize=renorm)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, epoch, torch.Generator().manual_seed(1))
    for u in range(4):  # teacher top-3 unobserved, teacher order; D_u unobserved
        s = teacher.score(torch.tensor([u]))[0].detach().clone()
        s[torch.as_tensor(split.train[u].indices)] = -float("inf")
        assert d.lists[u].tolist() == torch.topk(s, 3).indices.tolist()
        assert not set(d.dynamic[u].tolist()) & set(split.train[u].indices.tolist())
    users = [0, 1, 1, 3, 2]
    got = float(d.loss(student, batch(users), epoch).detach())
    want = ref_rd(student, d.lists, d.dynamic, users, 12, 1.0, 0.5, epoch >= 2, renorm)
    assert got == pytest.approx(want, rel=1e-5)


def test_huge_scores_and_gradients():
    split, teacher, student, kn = tiny()
    with torch.no_grad():
        student.user_emb.weight.mul_(1e3)
        student.item_emb.weight.mul_(-1e3)
    d = RD(k=3, n_dyn=6, start_epoch=0)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(1))
    loss = d.loss(student, batch([0, 1, 2, 3]), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.user_emb.weight.grad.to_dense()).all()
    assert all(p.grad is None for p in teacher.parameters())


def test_two_epoch_fit(tmp_path):
    split, teacher, _, kn = tiny(n_users=12, n_items=20)
    d = RD(k=3, n_dyn=8, start_epoch=1)
    d.prepare(teacher, split, kn)
    cfg = dict(epochs=2, batch_size=8, eval_every=1, device="cpu", ks=[5])
    res = Trainer(**cfg, selection_metric="recall@5").fit(
        BPRMF(4), split, [(d, 1.0)], run_dir=tmp_path, progress=False
    )
    assert res.epochs_run == 2 and all(math.isfinite(r["loss"]) for r in res.history)
