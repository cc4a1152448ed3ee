"""FTD / HTD against slow explicit references on tiny tensors (every flag combination)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recpress.distill.experts import ExpertBank, annealed_tau
from recpress.distill.topology import (
    FTD,
    HTD,
    ftd_loss,
    htd_entity_loss,
    htd_entity_loss_dense,
    htd_group_loss,
    mix_experts,
)
from recpress.models.base import TripletBatch
from recpress.models.bpr import BPRMF
from tests.conftest import shape_split

D = torch.float64


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b) / (na * nb)


def slow_ftd(es, et):
    n = es.shape[0]
    total = 0.0
    for a in range(n):
        for b in range(n):
            total += (_cos(et[a], et[b]) - _cos(es[a], es[b])) ** 2
    return total


def slow_entity(es, et, groups, pair_filter):
    n = es.shape[0]
    total = 0.0
    for a in range(n):
        for b in range(n):
            if groups[a] != groups[b]:
                continue
            ct = _cos(et[a], et[b])
            if pair_filter == "teacher_positive" and not ct > 0:
                continue
            total += (_cos(es[a], es[b]) - ct) ** 2
    return total


def slow_prototypes(e, groups):
    ids = sorted(set(groups.tolist()))
    protos = []
    for g in ids:
        members = [e[a] for a in range(e.shape[0]) if groups[a] == g]
        protos.append(sum(members) / len(members))
    return ids, protos


def slow_group(es, et, groups, choice, include_own):
    ids, ps = slow_prototypes(es, groups)
    _, pt = slow_prototypes(et, groups)
    total = 0.0
    if choice == "first":
        for k in range(len(ids)):
            for m in range(len(ids)):
                total += (_cos(ps[k], ps[m]) - _cos(pt[k], pt[m])) ** 2
        return total
    for k, g in enumerate(ids):
        for j in range(es.shape[0]):
            if groups[j] == g and not include_own:
                continue
            total += (_cos(ps[k], es[j]) - _cos(pt[k], et[j])) ** 2
    return total


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(3)
    n_u, n_i, d_s, d_t = 5, 7, 3, 6
    es = torch.randn(n_u + n_i, d_s, generator=g, dtype=D)
    et = torch.randn(n_u + n_i, d_t, generator=g, dtype=D)
    groups = torch.tensor([0, 1, 0, 1, 1, 2 + 0, 2 + 1, 2 + 1, 2 + 0, 2 + 1, 2 + 1, 2 + 1])
    return es, et, groups


def _normed(x):
    return torch.nn.functional.normalize(x, dim=-1)


def test_ftd_matches_explicit(tiny):
    es, et, _ = tiny
    assert float(ftd_loss(es, _normed(et))) == pytest.approx(slow_ftd(es, et), rel=1e-9)


def test_ftd_zero_when_student_is_scaled_teacher(tiny):
    _, et, _ = tiny
    assert float(ftd_loss(3.0 * et, _normed(et))) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("pair_filter", ["all", "teacher_positive"])
def test_entity_term_matches_explicit(tiny, pair_filter):
    es, et, groups = tiny
    got = float(htd_entity_loss(es, _normed(et), groups, pair_filter))
    assert got == pytest.approx(slow_entity(es, et, groups, pair_filter), rel=1e-9)


@pytest.mark.parametrize("gram", [None, False, True])
@pytest.mark.parametrize("pair_filter", ["all", "teacher_positive"])
def test_entity_term_unbalanced_groups(tiny, pair_filter, gram):
    es, et, _ = tiny
    groups = torch.tensor([0] * 7 + [5, 5, 1, 2, 2])  # sizes 7, 2, 2, 1: three size buckets
    got = float(htd_entity_loss(es, _normed(et), groups, pair_filter, gram=gram))
    assert got == pytest.approx(slow_entity(es, et, groups, pair_filter), rel=1e-9)
    dense = float(htd_entity_loss_dense(es, _normed(et), groups, pair_filter))
    assert dense == pytest.approx(slow_entity(es, et, groups, pair_filter), rel=1e-9)


@pytest.mark.parametrize("pair_filter", ["all", "teacher_positive"])
def test_entity_term_gradients_pairs_vs_gram_vs_autograd(pair_filter):
    """The hand-written pair backward and the Gram form match plain autograd on the pairs."""
    g = torch.Generator().manual_seed(7)
    es = torch.randn(40, 3, generator=g, dtype=D)
    nt = _normed(torch.randn(40, 5, generator=g, dtype=D))
    groups = torch.randint(0, 4, (40,), generator=g)
    ns_ref = es.clone().requires_grad_()
    ns = torch.nn.functional.normalize(ns_ref, dim=-1)
    same = groups[:, None] == groups[None, :]
    at = nt @ nt.T
    keep = same & (at > 0) if pair_filter == "teacher_positive" else same
    ref = ((ns @ ns.T - at).square() * keep).sum()
    ref.backward()
    forms = [False, True] if pair_filter == "all" else [False]
    for gram in [*forms, "dense"]:
        x = es.clone().requires_grad_()
        if gram == "dense":
            got = htd_entity_loss_dense(x, nt, groups, pair_filter)
        else:
            got = htd_entity_loss(x, nt, groups, pair_filter, gram=gram)
        got.backward()
        assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
        assert torch.allclose(x.grad, ns_ref.grad, atol=1e-10)


@pytest.mark.parametrize("pair_filter", ["all", "teacher_positive"])
def test_entity_term_tiled_pairs_match(monkeypatch, pair_filter):
    """Large pair blocks cut into upper-triangular tiles give the same value and gradient."""
    import recpress.distill.topology as topo

    g = torch.Generator().manual_seed(9)
    es = torch.randn(60, 3, generator=g, dtype=D)
    nt = _normed(torch.randn(60, 5, generator=g, dtype=D))
    groups = torch.randint(0, 3, (60,), generator=g)
    out = []
    for tile in (10_000, 7, 3):
        monkeypatch.setattr(topo, "_TILE", tile)
        x = es.clone().requires_grad_()
        loss = htd_entity_loss(x, nt, groups, pair_filter, gram=False)
        loss.backward()
        out.append((float(loss.detach()), x.grad))
    for value, grad in out[1:]:
        assert value == pytest.approx(out[0][0], rel=1e-12)
        assert torch.allclose(grad, out[0][1], atol=1e-12)
    assert out[0][0] == pytest.approx(slow_entity(es, nt, groups, pair_filter), rel=1e-9)


@pytest.mark.parametrize("d_t", [6, 70])
def test_ftd_gradient_matches_autograd_on_explicit_matrices(d_t):
    g = torch.Generator().manual_seed(2)
    es = torch.randn(30, 4, generator=g, dtype=D)
    nt = _normed(torch.randn(30, d_t, generator=g, dtype=D))
    ref_x = es.clone().requires_grad_()
    ns = _normed(ref_x)
    ref = (nt @ nt.T - ns @ ns.T).square().sum()
    ref.backward()
    x = es.clone().requires_grad_()
    got = ftd_loss(x, nt)
    got.backward()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    assert torch.allclose(x.grad, ref_x.grad, atol=1e-10)


def test_entity_term_mixed_gram_and_pairs(monkeypatch):
    """Some groups in Gram form, the rest as padded pairs: same value and gradient."""
    import recpress.distill.topology as topo

    g = torch.Generator().manual_seed(12)
    es = torch.randn(50, 3, generator=g, dtype=D)
    nt = _normed(torch.randn(50, 5, generator=g, dtype=D))
    groups = torch.tensor([0] * 20 + [1] * 12 + [2] * 9 + [3] * 5 + [4] * 3 + [5])
    groups = groups[torch.randperm(50, generator=g)]
    out = []
    for rule in (lambda m, d_s, d_t: False, lambda m, d_s, d_t: m > 6):
        monkeypatch.setattr(topo, "_use_gram", rule)
        x = es.clone().requires_grad_()
        loss = htd_entity_loss(x, nt, groups, "all")
        loss.backward()
        out.append((float(loss.detach()), x.grad))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-10)
    assert torch.allclose(out[1][1], out[0][1], atol=1e-10)
    assert out[0][0] == pytest.approx(slow_entity(es, nt, groups, "all"), rel=1e-9)


def test_gumbel_softmax_keeps_double_precision():
    from recpress.distill.experts import gumbel_softmax

    la = torch.log(torch.softmax(torch.randn(4, 3, dtype=D), -1))
    z = gumbel_softmax(la, 0.5, torch.Generator().manual_seed(0))
    u = torch.rand((4, 3), generator=torch.Generator().manual_seed(0)).double()
    assert z.dtype == D
    assert torch.allclose(z, torch.softmax((la - torch.log(-torch.log(u))) / 0.5, -1), atol=1e-14)
    assert gumbel_softmax(la.half(), 1.0).dtype == torch.float32


@pytest.mark.parametrize(
    "choice,include_own,detach",
    list(itertools.product(["second", "first"], [False, True], [False, True])),
)
def test_group_term_matches_explicit(tiny, choice, include_own, detach):
    es, et, groups = tiny
    got = float(htd_group_loss(es, et, groups, choice, include_own, detach))
    assert got == pytest.approx(slow_group(es, et, groups, choice, include_own), rel=1e-9)


def test_group_term_detached_prototypes_gradients(tiny):
    es, et, groups = tiny
    for choice, detach, expect_grad in [
        ("second", False, True),
        ("second", True, True),  # still flows through e^s_j
        ("first", False, True),
        ("first", True, False),  # reference Group(P,P): gradient-free
    ]:
        x = es.clone().requires_grad_(True)
        loss = htd_group_loss(x, et, groups, choice, False, detach)
        if not expect_grad:
            assert not loss.requires_grad
            continue
        loss.backward()
        assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_group_term_detach_changes_gradient_not_value(tiny):
    es, et, groups = tiny
    grads = []
    for detach in (False, True):
        x = es.clone().requires_grad_(True)
        htd_group_loss(x, et, groups, "second", False, detach).backward()
        grads.append(x.grad)
    assert not torch.allclose(grads[0], grads[1])


def _bank(d_s=3, d_t=6, k=2):
    return ExpertBank(k, d_s, d_t, generator=torch.Generator().manual_seed(1)).double()


def test_mix_experts_sparse_equals_dense():
    bank = _bank(k=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 3, generator=g, dtype=D)
    w = torch.softmax(torch.randn(9, 4, generator=g, dtype=D) / 0.01, dim=-1)  # nearly one-hot
    w[w < 1e-3] = 0.0
    dense = mix_experts(bank, x, w, threshold=0.0)
    sparse = mix_experts(bank, x, w, threshold=1e-6)
    assert torch.allclose(dense, sparse, atol=1e-12)
    slow = torch.stack(
        [
            sum(
                w[a, k] * (torch.relu(x[a] @ bank.w1[k] + bank.b1[k]) @ bank.w2[k] + bank.b2[k])
                for k in range(4)
            )
            for a in range(9)
        ]
    )
    assert torch.allclose(dense, slow, atol=1e-12)


@pytest.mark.parametrize("zero_frac", [0.0, 0.7, 1.0])
def test_mix_experts_sparse_gradients_match_dense(zero_frac):
    """Sparse dispatch (hand-written backward) = dense GEMMs, values and every gradient."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(13, 3, generator=g, dtype=D)
    w0 = torch.softmax(torch.randn(13, 5, generator=g, dtype=D), dim=-1)
    w0[torch.rand(13, 5, generator=g) < zero_frac] = 0.0
    target = torch.randn(13, 6, generator=g, dtype=D)
    results = []
    for threshold in (0.0, 1e-12):
        bank = _bank(k=5)
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out = mix_experts(bank, x, w, threshold=threshold, dense_above=1.0)
        (target - out).square().sum().backward()
        grads = [x.grad, w.grad, bank.w1.grad, bank.b1.grad, bank.w2.grad, bank.b2.grad]
        results.append((out.detach(), grads))
    (dense, gd), (sparse, gs) = results
    assert torch.allclose(dense, sparse, atol=1e-12)
    for a, b in zip(gd, gs, strict=True):
        skipped = w0 == 0  # no gradient through a skipped weight in the sparse path
        if a.shape == w0.shape:
            a, b = a.masked_fill(skipped, 0.0), b.masked_fill(skipped, 0.0)
        assert torch.allclose(a, b, atol=1e-10)


def test_dense_mixture_gradients_match_plain_autograd():
    from recpress.distill.experts import dense_mixture

    bank = _bank(k=4)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(11, 3, generator=g, dtype=D, requires_grad=True)
    w = torch.softmax(torch.randn(11, 4, generator=g, dtype=D), -1).requires_grad_()
    target = torch.randn(11, 6, generator=g, dtype=D)
    params = [x, w, bank.w1, bank.b1, bank.w2, bank.b2]
    hidden = torch.relu(torch.einsum("nd,mdh->nmh", x, bank.w1) + bank.b1)
    ref_out = torch.einsum("nm,nmt->nt", w, torch.einsum("nmh,mht->nmt", hidden, bank.w2) + bank.b2)
    ref = torch.autograd.grad((target - ref_out).square().sum(), params)
    out = dense_mixture(bank, x, w)
    got = torch.autograd.grad((target - out).square().sum(), params)
    assert torch.allclose(out, ref_out, atol=1e-12)
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


class _FixedKnowledge:
    def __init__(self, tu, ti):
        self._tu, self._ti = tu, ti

    def user_embeddings(self):
        return self._tu

    def item_embeddings(self):
        return self._ti


def _student(n_u, n_i, d_s, seed=0):
    return (
        BPRMF(embedding_dim=d_s, init_std=0.5)
        .build(shape_split(n_u, n_i), generator=torch.Generator().manual_seed(seed))
        .double()
    )


def _setup(n_u=5, n_i=7, d_s=3, d_t=6):
    g = torch.Generator().manual_seed(5)
    tu = torch.randn(n_u, d_t, generator=g, dtype=D)
    ti = torch.randn(n_i, d_t, generator=g, dtype=D)
    student = _student(n_u, n_i, d_s)
    batch = TripletBatch(
        users=torch.tensor([0, 1, 1, 3, 4, 0]),
        pos=torch.tensor([0, 2, 3, 3, 5, 6]),
        neg=torch.tensor([1, 1, 4, 6, 2, 0]),
    )
    return tu, ti, student, batch


def test_ftd_distiller_matches_explicit_and_grads_reach_student_only():
    tu, ti, student, batch = _setup()
    ftd = FTD()
    ftd.prepare(None, None, _FixedKnowledge(tu, ti))
    loss = ftd.loss(student, batch, epoch=0)
    users = torch.unique(batch.users)
    items = torch.unique(torch.cat([batch.pos, batch.neg]))
    es = torch.cat([student.user_emb.weight[users], student.item_emb.weight[items]]).detach()
    et = torch.cat([tu[users], ti[items]])
    # fp32 GEMMs against a float64 reference: rounding depends on the BLAS kernel
    assert float(loss.detach()) == pytest.approx(slow_ftd(es, et), rel=1e-5)
    loss.backward()
    gu = student.user_emb.weight.grad.to_dense()
    assert float(gu[users].abs().sum()) > 0
    assert float(gu[2].abs().sum()) == 0  # user 2 not in the batch
    assert list(ftd.parameters()) == []


def _slow_htd(htd, student, batch, epoch, tu, ti, gumbel_u):
    """Explicit HTD with loops; the Gumbel noise is replayed from a generator copy."""
    users = torch.unique(batch.users).tolist()
    items = torch.unique(torch.cat([batch.pos, batch.neg])).tolist()
    es = [student.user_emb.weight[u] for u in users] + [student.item_emb.weight[i] for i in items]
    et = [tu[u] for u in users] + [ti[i] for i in items]
    es_t, et_t = torch.stack(es).detach(), torch.stack(et)
    k_groups = htd.n_groups
    groups = []
    alphas = []
    for x, e_t in enumerate(et):
        bank = htd.user_bank if x < len(users) else htd.item_bank
        alpha = torch.softmax(bank.selector(e_t), dim=-1)
        alphas.append(alpha)
        groups.append(int(alpha.argmax()) + (0 if x < len(users) else k_groups))
    groups = torch.tensor(groups)
    ent = slow_entity(es_t, et_t, groups, htd.pair_filter)
    grp = slow_group(es_t, et_t, groups, htd.choice, htd.group_include_own)
    tau = annealed_tau(epoch, htd.tau_max_epochs)
    ga = 0.0
    n_u = len(users)
    for side, rows in ((0, range(n_u)), (1, range(n_u, len(et)))):
        bank = htd.user_bank if side == 0 else htd.item_bank
        uni = gumbel_u[side]
        for r, x in enumerate(rows):
            gumb = -torch.log(-torch.log(uni[r]))
            z = torch.softmax((torch.log(alphas[x] + 1e-10) + gumb) / tau, dim=-1)
            mix = sum(
                z[k] * (torch.relu(es_t[x] @ bank.w1[k] + bank.b1[k]) @ bank.w2[k] + bank.b2[k])
                for k in range(k_groups)
            )
            ga += float(((et[x] - mix) ** 2).sum().detach())
    return htd.gamma * (ent + grp) + (1 - htd.gamma) * ga


FLAG_COMBOS = list(
    itertools.product(
        ["second", "first"], ["all", "teacher_positive"], [False, True], [False, True]
    )
)


@pytest.mark.parametrize("choice,pair_filter,include_own,detach", FLAG_COMBOS)
@pytest.mark.parametrize("epoch", [0, 7])
@pytest.mark.parametrize("layout", ["grouped", "dense"])
def test_htd_matches_explicit_every_flag(choice, pair_filter, include_own, detach, epoch, layout):
    tu, ti, student, batch = _setup()
    htd = HTD(
        n_groups=2,
        choice=choice,
        pair_filter=pair_filter,
        group_include_own=include_own,
        detach_prototypes=detach,
        expert_threshold=0.0,
        layout=layout,
    ).double()
    htd.prepare(None, None, _FixedKnowledge(tu, ti), student=student)
    htd.double()
    gen = torch.Generator().manual_seed(11)
    htd.on_epoch_start(student, epoch, gen)
    replay = torch.Generator().manual_seed(11)
    n_u = len(torch.unique(batch.users))
    n_i = len(torch.unique(torch.cat([batch.pos, batch.neg])))
    gumbel_u = [
        torch.rand((n_u, 2), generator=replay).double(),
        torch.rand((n_i, 2), generator=replay).double(),
    ]
    loss = htd.loss(student, batch, epoch)
    expected = _slow_htd(htd, student, batch, epoch, tu, ti, gumbel_u)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-7)


def test_htd_gradients_reach_student_and_aux_only():
    tu, ti, student, batch = _setup()
    htd = HTD(n_groups=2, expert_threshold=0.0)
    htd.prepare(None, None, _FixedKnowledge(tu, ti), student=student)
    htd.double()
    htd.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    tu0 = tu.clone()
    htd.loss(student, batch, 0).backward()
    assert student.user_emb.weight.grad is not None
    for name, p in htd.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert not tu.requires_grad and torch.equal(tu, tu0)
    # aux = 2 sides × [K experts (d_s·h + h + h·d_t + d_t) + selector (d_t·K + K)], h = 4
    h = (6 + 3) // 2
    assert htd.num_aux_parameters() == 2 * (2 * (3 * h + h + h * 6 + 6) + 6 * 2 + 2)


@pytest.mark.parametrize("preset", ["reference", "paper"])
@pytest.mark.parametrize("epoch", [0, 16, 60])
def test_htd_dense_layout_matches_grouped(preset, epoch):
    """Same terms and gradients from both layouts on a larger batch with skewed groups. From
    epoch 16 (τ ≈ 0.03) the Gumbel weights are near one-hot, so the grouped layout dispatches the
    experts sparsely (threshold 1e-7) while the dense one zeroes the same skipped weights (at
    epoch 16 some of them are tiny but not zero)."""
    g = torch.Generator().manual_seed(3)
    n_u, n_i = 40, 60
    tu = torch.randn(n_u, 12, generator=g, dtype=D)
    ti = torch.randn(n_i, 12, generator=g, dtype=D)
    batch = TripletBatch(
        torch.randint(0, n_u, (64,), generator=g),
        torch.randint(0, n_i, (64,), generator=g),
        torch.randint(0, n_i, (64,), generator=g),
    )
    results = {}
    for layout in ("grouped", "dense"):
        student = _student(n_u, n_i, 4)
        htd = HTD(n_groups=5, preset=preset, layout=layout, seed=0)
        htd.prepare(None, None, _FixedKnowledge(tu, ti), student=student)
        htd.double()
        htd.on_epoch_start(student, epoch, torch.Generator().manual_seed(9))
        assert htd.uses_dense_layout(tu) == (layout == "dense")
        terms = htd.terms(student, batch, epoch)
        sum(terms.values()).backward()
        grads = [student.user_emb.weight.grad.to_dense(), student.item_emb.weight.grad.to_dense()]
        grads += [p.grad for p in htd.parameters()]
        results[layout] = ({k: float(v.detach()) for k, v in terms.items()}, grads)
    (t_g, g_g), (t_d, g_d) = results["grouped"], results["dense"]
    for key in t_g:
        assert t_d[key] == pytest.approx(t_g[key], rel=1e-9), key
    for a, b in zip(g_g, g_d, strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9)


def test_htd_auto_layout_is_grouped_on_cpu_and_dense_only_where_it_fits():
    htd = HTD()
    assert not htd.uses_dense_layout(torch.zeros(10, 3))
    meta = torch.empty(10, 3, device="meta")  # any non-CPU device
    assert htd.uses_dense_layout(meta)
    assert not htd.uses_dense_layout(torch.empty(8193, 3, device="meta"))
    assert HTD(layout="dense").uses_dense_layout(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="layout must be one of auto, grouped, dense"):
        HTD(layout="sparse")


def test_htd_presets_and_validation():
    ref = HTD(preset="reference")
    assert (ref.pair_filter, ref.group_include_own, ref.detach_prototypes) == (
        "teacher_positive",
        True,
        True,
    )
    paper = HTD()
    assert (paper.pair_filter, paper.group_include_own, paper.detach_prototypes) == (
        "all",
        False,
        False,
    )
    assert HTD(preset="reference", pair_filter="all").pair_filter == "all"
    with pytest.raises(ValueError, match="preset"):
        HTD(preset="nope")
    with pytest.raises(ValueError, match="pair_filter"):
        HTD(pair_filter="positive")
    with pytest.raises(ValueError, match="choice"):
        HTD(choice="third")


def test_tau_schedule_reference_values():
    htd = HTD()
    assert htd.tau(0) == 1.0 and htd.tau(1) == 1.0
    assert htd.tau(10) == pytest.approx(10 ** (-10 * 9 / 100))
    assert htd.tau(100) == pytest.approx(1e-10**0.99)
    assert math.isfinite(htd.tau(500))


def test_htd_few_steps_lower_the_loss_float32():
    """A few SGD steps on HTD alone (fp32, sparse expert path, tiny τ) stay finite and learn."""
    tu, ti, _, batch = _setup()
    student = BPRMF(embedding_dim=3).build(
        shape_split(5, 7), generator=torch.Generator().manual_seed(0)
    )
    htd = HTD(n_groups=2)
    htd.prepare(None, None, _FixedKnowledge(tu.float(), ti.float()), student=student)
    opt = torch.optim.SGD(list(student.parameters()) + list(htd.parameters()), lr=0.01)
    htd.on_epoch_start(student, 50, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(30):
        loss = htd.loss(student, batch, 50)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < losses[0]


def test_bucketed_expert_dispatch_with_skewed_counts_matches_dense():
    """One-hot weights with very unequal expert loads (1 to 120 rows, one expert unused): the
    padded, bucketed GEMMs give the dense mixture's values and every gradient."""
    g = torch.Generator().manual_seed(7)
    loads = [1, 2, 3, 120, 0, 40, 9]
    assign = torch.cat([torch.full((c,), k) for k, c in enumerate(loads)])
    assign = assign[torch.randperm(assign.numel(), generator=g)]
    n, k = assign.numel(), len(loads)
    x0 = torch.randn(n, 3, generator=g, dtype=D)
    w0 = torch.nn.functional.one_hot(assign, k).to(D) * 0.5 + 0.0
    target = torch.randn(n, 6, generator=g, dtype=D)
    results = []
    for threshold in (0.0, 1e-12):
        bank = _bank(k=k)
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        out = mix_experts(bank, x, w, threshold=threshold, dense_above=1.0)
        (target - out).square().sum().backward()
        grads = [x.grad, bank.w1.grad, bank.b1.grad, bank.w2.grad, bank.b2.grad]
        results.append((out.detach(), grads, w.grad))
    (dense, gd, wd), (sparse, gs, ws) = results
    assert torch.allclose(dense, sparse, atol=1e-12)
    for a, b in zip(gd, gs, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    used = w0 > 0
    assert torch.allclose(wd[used], ws[used], atol=1e-10)
    assert torch.count_nonzero(gs[1][4]) == 0  # the unused expert gets no gradient
