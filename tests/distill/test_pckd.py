"""PCKD: DE term + consistency regulariser vs slow loops, stop-gradients, list sample, resume."""

from __future__ import annotations

import math

import pytest
import torch

from recpress.distill.distillation_experts import DistillationExperts
from recpress.distill.experts import annealed_tau
from recpress.distill.pckd import PCKD, consistency_loss
from recpress.distill.registry import DISTILLERS, make_distillers, prepare_distillers
from recpress.models.base import TripletBatch
from tests.distill.tiny import check_fit_finite_deterministic_and_resumes, tiny

torch.set_num_threads(1)

SMALL = dict(n_experts=3, mxK=6, Q=3)


def make(split, student, kn, **kw):
    d = PCKD(**{**SMALL, **kw})
    prepare_distillers([(d, 1.0)], kn, split, student=student)
    return d


def the_batch():
    return TripletBatch(
        torch.tensor([0, 1, 1, 3, 2, 1]),
        torch.tensor([0, 4, 4, 7, 2, 9]),
        torch.tensor([5, 5, 11, 3, 0, 8]),
    )


def slow_mix(bank, e_s, e_t, noise, tau):
    """Σ_m z_m E_m(e_s) with explicit loops over the experts; z from the uniform draws."""
    alpha = torch.softmax(bank.selector.weight @ e_t + bank.selector.bias, 0)
    logits = torch.stack(
        [
            (torch.log(alpha[m] + 1e-10) - math.log(-math.log(float(noise[m])))) / tau
            for m in range(bank.n_experts)
        ]
    )
    z = torch.softmax(logits, 0)
    out = 0.0
    for m in range(bank.n_experts):
        out = out + z[m] * (torch.relu(e_s @ bank.w1[m] + bank.b1[m]) @ bank.w2[m] + bank.b2[m])
    return out


def slow_pckd(d, student, batch, epoch, gen):
    """L_DE + α·Reg, one entity / row / list item at a time, the same uniform draws."""
    tau = annealed_tau(epoch, d.max_epochs)
    m = d.n_experts
    users = sorted(set(batch.users.tolist()))
    items = sorted(set(batch.pos.tolist())) + sorted(set(batch.neg.tolist()))
    noise_u = torch.rand((len(users), m), generator=gen)
    noise_i = torch.rand((len(items), m), generator=gen)
    su, si = student.user_emb.weight, student.item_emb.weight
    total = 0.0
    for n, u in enumerate(users):
        mix = slow_mix(d.user_experts, su[u], d.t_user[u], noise_u[n], tau)
        total = total + ((d.t_user[u] - mix) ** 2).sum()
    for n, i in enumerate(items):
        mix = slow_mix(d.item_experts, si[i], d.t_item[i], noise_i[n], tau)
        total = total + 0.5 * ((d.t_item[i] - mix) ** 2).sum()
    rows = batch.users.tolist() if d.user_weighting == "rows" else users
    q_all = sorted({int(q) for u in rows for q in d.list_items[u]})
    noise_q = torch.rand((len(q_all), m), generator=gen)
    reg = 0.0
    for u in rows:
        eu = su[u].detach()
        post_u = slow_mix(d.user_experts, eu, d.t_user[u], noise_u[users.index(u)], tau)
        pre, post = [], []
        for q in d.list_items[u].tolist():
            eq = si[q].detach()
            post_q = slow_mix(d.item_experts, eq, d.t_item[q], noise_q[q_all.index(q)], tau)
            pre.append(float(eu @ eq))
            post.append(post_u @ post_q)
        if d.variant == "list":
            zt = sum(math.exp(x / d.tau_ce) for x in pre)
            zs = sum(torch.exp(x / d.tau_ce) for x in post)
            for a, b in zip(pre, post, strict=True):
                reg = reg - math.exp(a / d.tau_ce) / zt * torch.log(torch.exp(b / d.tau_ce) / zs)
        else:
            for a in range(len(pre)):
                for b in range(a + 1, len(pre)):
                    x = (post[a] - post[b]) * (pre[a] - pre[b])
                    reg = reg - torch.log(torch.sigmoid(x))
    return total + d.alpha * reg


def test_registered_with_reference_defaults():
    assert DISTILLERS["pckd"] is PCKD
    d = PCKD()
    assert (d.n_experts, d.alpha, d.T, d.mxK, d.Q, d.tau_ce) == (30, 0.1, 10.0, 100, 5, 0.1)
    assert (d.variant, d.mask_train, d.reduction) == ("list", False, "sum")
    assert PCKD.default_weight == 0.05
    ((got, w),) = make_distillers("pckd", params={"pckd": {"variant": "pair", "Q": 2}})
    assert w == 0.05 and got.get_params()["variant"] == "pair"
    with pytest.raises(ValueError, match="variant"):
        PCKD(variant="triple")


def test_alpha_zero_is_de_exactly():
    split, _, student, kn = tiny()
    p = make(split, student, kn, alpha=0.0)
    de = DistillationExperts(n_experts=3)
    prepare_distillers([(de, 1.0)], kn, split, student=student)
    de.load_state_dict(p.state_dict(), strict=False)
    for d in (p, de):
        d.on_epoch_start(student, 2, torch.Generator().manual_seed(4))
    p._gen, de._gen = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(p.loss(student, the_batch(), 2), de.loss(student, the_batch(), 2))


@pytest.mark.parametrize(
    "variant,weighting,epoch",
    [("list", "rows", 0), ("list", "unique", 3), ("pair", "rows", 0), ("pair", "rows", 3)],
)
def test_loss_and_gradients_match_loop(variant, weighting, epoch):
    split, _, student, kn = tiny()
    d = make(split, student, kn, alpha=0.7, variant=variant, user_weighting=weighting)
    d.on_epoch_start(student, epoch, torch.Generator().manual_seed(1))
    d._gen = torch.Generator().manual_seed(21)
    got = d.loss(student, the_batch(), epoch)
    params = list(student.parameters()) + list(d.parameters())
    g_got = torch.autograd.grad(got, params, allow_unused=True)
    ref = slow_pckd(d, student, the_batch(), epoch, torch.Generator().manual_seed(21))
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b in zip(g_got, g_ref, strict=True):
        a = torch.zeros(()) if a is None else a.to_dense()
        b = torch.zeros(()) if b is None else b.to_dense()
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_regulariser_gradient_reaches_only_the_projectors():
    split, _, student, kn = tiny()
    grads = {}
    for alpha in (0.0, 5.0):
        d = make(split, student, kn, alpha=alpha)
        d.on_epoch_start(student, 0, torch.Generator().manual_seed(1))
        d._gen = torch.Generator().manual_seed(3)
        params = list(student.parameters()) + list(d.parameters())
        grads[alpha] = torch.autograd.grad(d.loss(student, the_batch(), 0), params)
    n_student = len(list(student.parameters()))
    for a, b in zip(grads[0.0][:n_student], grads[5.0][:n_student], strict=True):
        assert torch.equal(a.to_dense(), b.to_dense())  # student embeddings: DE term only
    changed = [
        not torch.equal(a, b)
        for a, b in zip(grads[0.0][n_student:], grads[5.0][n_student:], strict=True)
    ]
    assert all(changed)  # every expert and selection-network tensor gets the regulariser


def test_consistency_loss_variants_match_loop():
    gen = torch.Generator().manual_seed(0)
    pre, post = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    got_list = consistency_loss(pre, post, 0.1, "list")
    got_pair = consistency_loss(pre, post, 0.1, "pair")
    for r in range(3):
        p = [math.exp(float(x) / 0.1) for x in pre[r]]
        s = [math.exp(float(x) / 0.1) for x in post[r]]
        ref = -sum(a / sum(p) * math.log(b / sum(s)) for a, b in zip(p, s, strict=True))
        assert got_list[r].item() == pytest.approx(ref, rel=1e-5)
        pair = 0.0
        for a in range(4):
            for b in range(a + 1, 4):
                x = float((post[r, a] - post[r, b]) * (pre[r, a] - pre[r, b]))
                pair += math.log1p(math.exp(-x))
        assert got_pair[r].item() == pytest.approx(pair, rel=1e-5)


def test_list_sample_distinct_from_teacher_top_and_biased():
    split, teacher, student, kn = tiny()
    d = make(split, student, kn)
    for u in range(4):  # unmasked teacher top-mxK
        top = torch.topk(teacher.score(torch.tensor([u]))[0], 6)[1]
        assert d.teacher_lists[u].tolist() == top.tolist()
    counts = torch.zeros(6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        d.on_epoch_start(student, 0, gen)
        for u in range(4):
            row = d.list_items[u].tolist()
            assert len(set(row)) == 3 and set(row) <= set(d.teacher_lists[u].tolist())
            for q in row:
                counts[d.teacher_lists[u].tolist().index(q)] += 1
    assert counts[0] > counts[2] > counts[5]


def test_state_restores_exactly():
    split, _, student, kn = tiny()
    a = make(split, student, kn)
    a.on_epoch_start(student, 0, torch.Generator().manual_seed(5))
    b = make(split, student, kn)
    b.load_state_dict(a.state_dict())
    c = make(split, student, kn)
    c.load_extra_state_tensors(a.extra_state_tensors())
    assert torch.equal(a.list_items, b.list_items) and torch.equal(a.list_items, c.list_items)


def test_three_epoch_fit_finite_deterministic_and_resumes(tmp_path):
    check_fit_finite_deterministic_and_resumes(
        lambda: PCKD(n_experts=3, mxK=6, Q=3), 0.05, tmp_path
    )


def test_defaults_capped_at_a_small_catalogue_and_mask_train():
    split, _, student, kn = tiny()
    d = PCKD(n_experts=3)  # mxK = 100 > 12 items: capped
    prepare_distillers([(d, 1.0)], kn, split, student=student)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    assert d.teacher_lists.shape == (4, 12) and d.list_items.shape == (4, 5)
    assert torch.isfinite(d.loss(student, the_batch(), 0))
    m = make(split, student, kn, mask_train=True, mxK=5)
    m.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    for u in range(4):
        seen = set(split.train[u].indices.tolist())
        assert not seen & (set(m.teacher_lists[u].tolist()) | set(m.list_items[u].tolist()))
