"""RCE-KD: lists, interesting sample, loss and gradients vs slow loops, resume, a short fit."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from recpress.distill.rce_kd import RCEKD, interesting_weights, sample_interesting
from recpress.distill.registry import DISTILLERS, make_distillers
from tests.distill.tiny import batch, check_fit_finite_deterministic_and_resumes, tiny

torch.set_num_threads(1)


def score(model, u, i):
    return model.score_items(torch.tensor([u]), torch.tensor([[i]]))[0, 0]


def slow_ce(t, s, tau):
    """−Σ_i softmax(t/τ)_i log softmax(s/τ)_i, one term at a time (t plain floats)."""
    zt = sum(math.exp(x / tau) for x in t)
    zs = sum(torch.exp(x / tau) for x in s)
    return sum(
        -(math.exp(a / tau) / zt) * torch.log(torch.exp(b / tau) / zs)
        for a, b in zip(t, s, strict=True)
    )


def slow_rce(d, student, teacher, users, tau, beta, k):
    """The RCE-KD loss written with Python sets and loops over users and items."""
    total = torch.zeros(())
    for u in users:
        s_set = [int(x) for x in d.student_top[u]]
        a_set = [int(x) for x in d.interesting[u]]
        t_set = [int(x) for x in d.teacher_lists[u]]
        c_set = a_set + [i for i in t_set if i not in a_set and i not in s_set]
        overlap = len(set(t_set) & set(a_set)) / k
        w = math.exp(-beta * overlap)
        with torch.no_grad():
            t_s = [float(score(teacher, u, i)) for i in s_set]
            t_c = [float(score(teacher, u, i)) for i in c_set]
        loss_s = slow_ce(t_s, [score(student, u, i) for i in s_set], tau)
        loss_t = slow_ce(t_c, [score(student, u, i) for i in c_set], tau)
        total = total + (1 - w) * loss_s + w * loss_t
    return total


def test_registered_with_reference_defaults():
    assert DISTILLERS["rce-kd"] is RCEKD
    d = RCEKD()
    assert (d.K, d.L, d.mxK, d.T_s, d.beta, d.tau) == (50, 50, 200, 10.0, 3.0, 1.0)
    assert (d.mask_train, d.reduction, d.user_weighting) == (False, "sum", "rows")
    assert RCEKD.default_weight == 500.0
    ((got, w),) = make_distillers("rce-kd", params={"rce-kd": {"K": 3, "L": 2, "mxK": 6}})
    assert w == 500.0 and got.get_params()["mxK"] == 6
    with pytest.raises(ValueError, match="mxK"):
        RCEKD(K=10, mxK=5)


def test_lists_unmasked_teacher_once_student_every_epoch():
    split, teacher, student, kn = tiny()
    d = RCEKD(K=3, L=2, mxK=6)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    for u in range(4):
        assert (
            d.teacher_lists[u].tolist()
            == torch.topk(teacher.score(torch.tensor([u]))[0], 3)[1].tolist()
        )
        top = torch.topk(student.score(torch.tensor([u]))[0], 6)[1].tolist()
        assert d.student_top[u].tolist() == top[:3]
        assert set(d.interesting[u].tolist()) <= set(top)
    before = d.student_top.clone()
    with torch.no_grad():
        student.item_emb.weight.mul_(-1.0)
    d.on_epoch_start(student, 1, torch.Generator().manual_seed(0))
    assert not torch.equal(before, d.student_top)


def test_weights_match_loop():
    gen = torch.Generator().manual_seed(3)
    s = torch.stack([torch.randperm(12, generator=gen)[:8] for _ in range(5)])
    t = torch.stack([torch.randperm(12, generator=gen)[:4] for _ in range(5)])
    for cap in (50, 2):
        got = interesting_weights(s, t, 10.0, cap)
        for u in range(5):
            tu = set(t[u].tolist())
            for j in range(8):
                c = min(sum(int(x) in tu for x in s[u, j:].tolist()), cap)
                assert got[u, j].item() == pytest.approx(math.exp((c + 1) / 10.0))


def test_sample_never_repeats_and_follows_weights():
    gen = torch.Generator().manual_seed(0)
    s = torch.arange(8).repeat(4000, 1)
    t = torch.tensor([[1, 3, 6, 11]]).repeat(4000, 1)
    got = sample_interesting(s, t, 5, 1.0, 50, gen)
    assert (got[:, 1:] > got[:, :-1]).all()  # student order, hence distinct
    # one draw per row: frequencies ∝ exp((c + 1)/T_s)
    one = sample_interesting(s, t, 1, 1.0, 50, gen).flatten()
    freq = torch.bincount(one, minlength=8).double() / one.numel()
    w = interesting_weights(s[:1], t[:1], 1.0, 50)[0]
    assert torch.allclose(freq, w / w.sum(), atol=0.03)


@pytest.mark.parametrize(
    "tau,beta,weighting,near",
    [
        (1.0, 3.0, "rows", False),
        (0.5, 1.0, "rows", False),
        (2.0, 3.0, "unique", False),
        (1.0, 3.0, "rows", True),
    ],
)
def test_loss_and_gradients_match_loop(tau, beta, weighting, near):
    split, teacher, student, kn = tiny()
    if near:  # a student close to the teacher: S_u overlaps T_u, so the union mask matters
        student = copy.deepcopy(teacher).requires_grad_(True).train()
        noise = torch.randn(
            student.item_emb.weight.shape, generator=torch.Generator().manual_seed(0)
        )
        with torch.no_grad():
            student.item_emb.weight.add_(0.05 * noise)
    d = RCEKD(K=3, L=2, mxK=6, T_s=1.0, tau=tau, beta=beta, user_weighting=weighting)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(1))
    users = [0, 1, 1, 3, 2, 1]
    ref_users = users if weighting == "rows" else [0, 1, 2, 3]
    if near:
        assert not bool(d.keep_teacher.all())
    got = d.loss(student, batch(users), 0)
    got.backward()
    g_got = [p.grad.to_dense().clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    ref = slow_rce(d, student, teacher, ref_users, tau, beta, 3)
    ref.backward()
    g_ref = [p.grad.to_dense() for p in student.parameters()]
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(g_got, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in teacher.parameters())


def test_union_mask_excludes_teacher_items_in_a_or_s():
    split, teacher, student, kn = tiny()
    d = RCEKD(K=3, L=2, mxK=6)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(2))
    for u in range(4):
        a, s = set(d.interesting[u].tolist()), set(d.student_top[u].tolist())
        for k, i in enumerate(d.teacher_lists[u].tolist()):
            assert bool(d.keep_teacher[u, k]) == (i not in a and i not in s)
        overlap = len(a & set(d.teacher_lists[u].tolist())) / 3
        assert d.user_weight[u].item() == pytest.approx(math.exp(-3.0 * overlap))


def test_state_restores_exactly():
    split, teacher, student, kn = tiny()
    a = RCEKD(K=3, L=2, mxK=6)
    a.prepare(teacher, split, kn)
    a.on_epoch_start(student, 0, torch.Generator().manual_seed(5))
    b = RCEKD(K=3, L=2, mxK=6)
    b.prepare(teacher, split, kn)
    b.load_state_dict(a.state_dict())
    c = RCEKD(K=3, L=2, mxK=6)
    c.prepare(teacher, split, kn)
    c.load_extra_state_tensors(a.extra_state_tensors())
    for other in (b, c):
        for key, value in a.extra_state_tensors().items():
            assert torch.equal(value, getattr(other, key))
        assert torch.equal(
            a.loss(student, batch([0, 1, 2]), 0), other.loss(student, batch([0, 1, 2]), 0)
        )


def test_three_epoch_fit_finite_deterministic_and_resumes(tmp_path):
    check_fit_finite_deterministic_and_resumes(lambda: RCEKD(K=3, L=2, mxK=6), 1.0, tmp_path)


def test_defaults_capped_at_a_small_catalogue_and_mask_train():
    split, teacher, student, kn = tiny()
    d = RCEKD()  # K = L = 50, mxK = 200 > 12 items: capped, as KD's k
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    assert d.student_top.shape == (4, 12) and d.interesting.shape == (4, 12)
    assert torch.isfinite(d.loss(student, batch([0, 1, 2]), 0))
    m = RCEKD(K=3, L=2, mxK=6, mask_train=True)
    m.prepare(teacher, split, kn)
    m.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    for u in range(4):
        seen = set(split.train[u].indices.tolist())
        assert not seen & set(m.teacher_lists[u].tolist())
        assert not seen & set(m.student_top[u].tolist()) and not seen & set(
            m.interesting[u].tolist()
        )
