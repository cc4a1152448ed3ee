"""DE, RRD, IR-RRD and their composition against slow explicit references on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from recpress.distill import make_distillers, prepare_distillers
from recpress.distill.distillation_experts import DistillationExperts
from recpress.distill.experts import annealed_tau
from recpress.distill.knowledge import Knowledge
from recpress.distill.relaxed_ranking import (
    ItemRankingRRD,
    RelaxedRankingDistillation,
    rank_sample,
    relaxed_ranking_loss,
)
from recpress.errors import ConfigError
from recpress.models import BPRMF, TripletBatch
from recpress.training import Trainer
from tests.conftest import random_split


# -- slow references ---------------------------------------------------------------------------
def slow_rrd(s_int: list[float], s_un: list[float]) -> float:
    """−log of the permutation probability of the interesting list, uninteresting below it:
    P = Π_k exp(s_k) / (Σ_{l ≥ k} exp(s_l) + Σ_j exp(s_j))."""
    logp = 0.0
    for k in range(len(s_int)):
        denom = sum(math.exp(s_int[m]) for m in range(k, len(s_int)))
        denom += sum(math.exp(x) for x in s_un)
        logp += math.log(math.exp(s_int[k]) / denom)
    return -logp


def slow_expert_error(bank, e_s, e_t, u):
    """‖e_t − Σ_m z_m E_m(e_s)‖² with an explicit loop over the experts; u = uniform draws."""
    alpha = torch.softmax(bank.selector.weight @ e_t + bank.selector.bias, 0)
    return alpha, [
        (m, torch.relu(e_s @ bank.w1[m] + bank.b1[m]) @ bank.w2[m] + bank.b2[m])
        for m in range(bank.n_experts)
    ]


@torch.no_grad()
def slow_de(de, student, batch, tau, gen):
    users = torch.unique(batch.users)
    items = torch.cat([torch.unique(batch.pos), torch.unique(batch.neg)])
    noise_u = torch.rand((users.numel(), de.n_experts), generator=gen)
    noise_i = torch.rand((items.numel(), de.n_experts), generator=gen)
    total = 0.0
    for _side, ids, noise, bank, t_emb, s_emb, w in (
        ("u", users, noise_u, de.user_experts, de.t_user, student.user_emb.weight, 1.0),
        ("i", items, noise_i, de.item_experts, de.t_item, student.item_emb.weight, 0.5),
    ):
        for n, x in enumerate(ids.tolist()):
            alpha, outs = slow_expert_error(bank, s_emb[x], t_emb[x], None)
            logits = []
            for m in range(de.n_experts):
                g = -math.log(-math.log(float(noise[n, m])))
                logits.append((math.log(float(alpha[m]) + 1e-10) + g) / tau)
            mx = max(logits)
            z = [math.exp(v - mx) for v in logits]
            z = [v / sum(z) for v in z]
            mixed = sum(z[m] * outs[m][1] for m in range(de.n_experts))
            total += w * float(((t_emb[x] - mixed) ** 2).sum())
    return total


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def setup():
    torch.manual_seed(0)
    split = random_split(n_users=12, n_items=30, per_user=5, seed=1)
    g = torch.Generator().manual_seed(0)
    teacher = BPRMF(embedding_dim=6, init_std=0.5).build(split, g)
    student = BPRMF(embedding_dim=3, init_std=0.5).build(split, g)
    know = Knowledge.from_teacher(teacher, split)
    batch = TripletBatch(
        torch.tensor([0, 1, 1, 4, 7, 0]),
        torch.tensor([3, 5, 5, 8, 9, 2]),
        torch.tensor([11, 12, 3, 14, 15, 11]),
    )
    return split, teacher, student, know, batch


# -- RRD ---------------------------------------------------------------------------------------
def test_rrd_formula_matches_permutation_probability():
    gen = torch.Generator().manual_seed(3)
    s_int = torch.randn(4, 5, generator=gen, dtype=torch.float64) * 2
    s_un = torch.randn(4, 3, generator=gen, dtype=torch.float64) * 2
    got = relaxed_ranking_loss(s_int, s_un)
    for r in range(4):
        assert got[r].item() == pytest.approx(
            slow_rrd(s_int[r].tolist(), s_un[r].tolist()), rel=1e-5
        )


def test_rrd_stable_with_huge_scores():
    s_int = torch.tensor([[1000.0, 999.0, 1200.0]], requires_grad=True)
    s_un = torch.tensor([[1001.0, -1000.0]], requires_grad=True)
    loss = relaxed_ranking_loss(s_int, s_un).sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(s_int.grad).all() and torch.isfinite(s_un.grad).all()
    # shift invariance: the loss depends on score differences only
    ref = slow_rrd([0.0, -1.0, 200.0 - 200.0 + 200.0], [1.0, -2000.0])
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_rrd_missing_entries_are_skipped():
    s_int = torch.tensor([[2.0, 1.0, 0.5]])
    s_un = torch.tensor([[0.1, -0.3]])
    valid = torch.tensor([[True, True, False]])
    got = relaxed_ranking_loss(s_int, s_un, valid)
    assert got.item() == pytest.approx(slow_rrd([2.0, 1.0], [0.1, -0.3]), rel=1e-5)


def test_rrd_distiller_loss_and_sampling(setup):
    split, _, student, know, batch = setup
    rrd = RelaxedRankingDistillation(K=3, L=4, N=8)
    prepare_distillers([(rrd, 1.0)], know, split, student=student)
    rrd.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    lists = know.user_topk(8)
    assert torch.equal(rrd.interesting, lists[:, :3].long())
    train = split.train.toarray()
    for u in range(split.n_users):  # uninteresting: distinct, not trained, not in the list
        un = rrd.uninteresting[u].tolist()
        assert len(set(un)) == 4
        assert not any(train[u, j] for j in un)
        assert not set(un) & set(lists[u].tolist())
    got = rrd.loss(student, batch, 0)
    ref = 0.0
    with torch.no_grad():
        for u in sorted(set(batch.users.tolist())):
            s = lambda j: float(student.user_emb.weight[u] @ student.item_emb.weight[j])  # noqa: E731, B023
            ref += slow_rrd(
                [s(j) for j in rrd.interesting[u].tolist()],
                [s(j) for j in rrd.uninteresting[u].tolist()],
            )
    assert got.item() == pytest.approx(ref, rel=1e-4)


def test_rank_sample_sorted_distinct_and_biased_to_top():
    lists = torch.arange(50).repeat(2000, 1)
    got = rank_sample(lists, 5, 10.0, torch.Generator().manual_seed(0))
    assert (got[:, 1:] > got[:, :-1]).all()  # sorted, hence distinct
    counts = torch.bincount(got.flatten(), minlength=50).float()
    assert counts[:10].sum() > counts[10:20].sum() > counts[30:].sum()


def test_rrd_sample_mode_checkpoints_exactly(setup):
    split, _, student, know, _ = setup
    a = RelaxedRankingDistillation(K=3, L=4, N=8, interesting="sample")
    prepare_distillers([(a, 1.0)], know, split, student=student)
    a.on_epoch_start(student, 0, torch.Generator().manual_seed(5))
    b = RelaxedRankingDistillation(K=3, L=4, N=8, interesting="sample")
    prepare_distillers([(b, 1.0)], know, split, student=student)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.interesting, b.interesting)
    assert torch.equal(a.uninteresting, b.uninteresting)


def test_ir_rrd_item_side_matches_loop(setup):
    split, _, student, know, batch = setup
    ir = ItemRankingRRD(K=3, L=4, N=8, K_I=2, L_I=3, N_I=5, item_weight=0.5)
    prepare_distillers([(ir, 1.0)], know, split, student=student)
    ir.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    users = torch.unique(batch.users)
    user_side = ir._user_side(student, users).item()
    items = sorted(
        set(torch.cat([ir.interesting[users], ir.uninteresting[users]], 1).flatten().tolist())
    )
    ref = 0.0
    with torch.no_grad():
        for i in items:
            s = lambda u: float(student.user_emb.weight[u] @ student.item_emb.weight[i])  # noqa: E731,B023
            ref += slow_rrd(
                [s(u) for u in ir.item_interesting[i].tolist()],
                [s(u) for u in ir.item_uninteresting[i].tolist()],
            )
    got = ir.loss(student, batch, 0).item()
    assert got == pytest.approx(user_side + 0.5 * ref, rel=1e-4)


# -- DE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch", [0, 3])
def test_de_matches_explicit_per_expert_loop(setup, epoch):
    split, _, student, know, batch = setup
    de = DistillationExperts(n_experts=4)
    prepare_distillers([(de, 1.0)], know, split, student=student)
    de.on_epoch_start(student, epoch, torch.Generator().manual_seed(11))
    got = de.loss(student, batch, epoch).item()
    tau = annealed_tau(epoch, 1000)
    ref = slow_de(de, student, batch, tau, torch.Generator().manual_seed(11))
    assert got == pytest.approx(ref, rel=1e-4)


def test_de_aux_parameter_count():
    """docs/methods.md §4.0 worked value: d_s 20, d_t 200, M 30 → 1,482,660 aux parameters."""
    split = random_split(n_users=4, n_items=6, per_user=2)
    teacher = BPRMF(embedding_dim=200).build(split)
    student = BPRMF(embedding_dim=20)
    de = DistillationExperts()
    prepare_distillers([(de, 1.0)], Knowledge.from_teacher(teacher, split), split, student=student)
    assert de.num_aux_parameters() == 1_482_660


# -- composition, gradients, frozen teacher ----------------------------------------------------
def test_composition_equals_weighted_sum(setup):
    split, _, student, know, batch = setup
    pairs = make_distillers(
        "de+rrd", None, {"de": {"n_experts": 3}, "rrd": {"K": 3, "L": 4, "N": 8}}
    )
    assert [(d.name, w) for d, w in pairs] == [("de", 0.01), ("rrd", 1e-3)]
    prepare_distillers(pairs, know, split, student=student, seed=0)
    for d, _ in pairs:
        d.on_epoch_start(student, 1, torch.Generator().manual_seed(2))
    (de, w_de), (rrd, w_rrd) = pairs
    de._gen = torch.Generator().manual_seed(9)
    total = sum(w * d.loss(student, batch, 1) for d, w in pairs)
    de._gen = torch.Generator().manual_seed(9)
    alone = w_de * de.loss(student, batch, 1) + w_rrd * rrd.loss(student, batch, 1)
    assert total.item() == pytest.approx(alone.item(), rel=1e-6)


def test_teacher_frozen_and_aux_get_gradients(setup):
    split, teacher, student, know, batch = setup
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    pairs = make_distillers(
        "de+rrd", None, {"de": {"n_experts": 3}, "rrd": {"K": 3, "L": 4, "N": 8}}
    )
    prepare_distillers(pairs, know, split, student=student)
    for d, _ in pairs:
        d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    loss = student.loss(batch).sum() + sum(w * d.loss(student, batch, 0) for d, w in pairs)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    de = pairs[0][0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in de.parameters())
    assert student.user_emb.weight.grad is not None
    # a short training run leaves the teacher untouched and counts aux parameters apart
    Trainer(
        epochs=2,
        batch_size=16,
        eval_every=1,
        device="cpu",
        ks=[5, 10],
        selection_metric="recall@10",
    ).fit(student, split, distillers=pairs, progress=False)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for d, _ in pairs for p in d.parameters()}


# -- registry errors ---------------------------------------------------------------------------
def test_registry_errors():
    with pytest.raises(ConfigError, match="known: .*de.*rrd"):
        make_distillers("de+nope")
    with pytest.raises(ConfigError, match="unknown parameter.*'rrd'.*K="):
        make_distillers("rrd", None, {"rrd": {"KK": 3}})
    with pytest.raises(ConfigError, match="finite"):
        make_distillers("rrd", {"rrd": float("nan")})
    with pytest.raises(ConfigError, match="does not use"):
        make_distillers("rrd", {"de": 0.1})
    with pytest.raises(ConfigError, match="bad parameter"):
        make_distillers("rrd", None, {"rrd": {"K": -1}})
    assert make_distillers("none") == []


# -- DE fast paths -----------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [1.0, 0.05, 1e-4])
def test_de_mixture_paths_match_einsum(tau):
    from recpress.distill.distillation_experts import expert_mixture
    from recpress.distill.experts import ExpertBank, gumbel_softmax

    g = torch.Generator().manual_seed(0)
    bank = ExpertBank(5, 4, 7, None, g).double()
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    t = torch.randn(40, 7, generator=g, dtype=torch.float64)
    with torch.no_grad():
        z = gumbel_softmax(torch.log(bank.selection(t) + 1e-10), tau, g).double()
    bank.requires_grad_(False)
    hidden = torch.relu(torch.einsum("nd,mdh->nmh", x, bank.w1) + bank.b1)
    ref = torch.einsum("nm,nmt->nt", z, torch.einsum("nmh,mht->nmt", hidden, bank.w2) + bank.b2)
    dense = expert_mixture(bank, x, z, sparse=False)
    torch.testing.assert_close(dense, ref, rtol=1e-12, atol=1e-12)
    for mode in (None, True):
        got = expert_mixture(bank, x, z, sparse=mode)
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-7 * float(ref.abs().max()))
    # gradients agree too (sparse path: within the dropped weights)
    for mode in (False, True):
        xs = x.clone().requires_grad_(True)
        expert_mixture(bank, xs, z, sparse=mode).square().sum().backward()
        xr = x.clone().requires_grad_(True)
        h = torch.relu(torch.einsum("nd,mdh->nmh", xr, bank.w1) + bank.b1)
        out = torch.einsum("nm,nmt->nt", z, torch.einsum("nmh,mht->nmt", h, bank.w2) + bank.b2)
        out.square().sum().backward()
        torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-6, atol=1e-6)


def test_de_bf16_experts_close_to_fp32_and_validated():
    from recpress.distill.experts import ExpertBank, dense_mixture

    g = torch.Generator().manual_seed(1)
    fp32 = ExpertBank(6, 8, 32, None, g)
    bf16 = ExpertBank(6, 8, 32, None, None, precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    x = torch.randn(200, 8, generator=g)
    z = torch.softmax(torch.randn(200, 6, generator=g), -1)
    grads = []
    for bank in (fp32, bf16):
        xs = x.clone().requires_grad_(True)
        out = dense_mixture(bank, xs, z)
        assert out.dtype == torch.float32  # parameters and outputs stay fp32
        out.square().sum().backward()
        grads.append((out.detach(), xs.grad, bank.w2.grad))
    for a, b in zip(grads[0], grads[1], strict=True):
        assert b.dtype == torch.float32
        rel = float((a - b).norm() / a.norm())
        assert 1e-6 < rel < 2e-2  # bf16 rounding: not exact, but close
    with pytest.raises(ValueError, match="precision"):
        ExpertBank(2, 2, 2, precision="fp16")
    # "auto" is bf16 exactly where the device runs bf16 natively, fp32 elsewhere
    import recpress.distill.experts as experts

    auto = ExpertBank(6, 8, 32, None, None, precision="auto")
    auto.load_state_dict(fp32.state_dict())
    for native, like in ((True, bf16), (False, fp32)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(experts, "_cpu_bf16", lambda native=native: native)
            assert experts.uses_bf16("auto", torch.device("cpu")) is native
            torch.testing.assert_close(dense_mixture(auto, x, z), dense_mixture(like, x, z))
    assert not experts.uses_bf16("fp32", torch.device("cpu"))
    with pytest.raises(ConfigError, match="expert_precision"):
        make_distillers("de", None, {"de": {"expert_precision": "int8"}})


def test_rrd_fast_path_matches_logcumsumexp_reference():
    from recpress.distill.relaxed_ranking import _rrd_reference

    gen = torch.Generator().manual_seed(4)
    s_int = (torch.randn(50, 7, generator=gen) * 5).requires_grad_(True)
    s_un = (torch.randn(50, 6, generator=gen) * 5).requires_grad_(True)
    valid = torch.rand(50, 7, generator=gen) > 0.2
    fast = relaxed_ranking_loss(s_int, s_un, valid)
    s_masked = torch.where(valid, s_int, torch.full_like(s_int, -1e30))
    ref_terms = _rrd_reference(s_masked, s_un, valid)
    ref = -torch.where(valid, ref_terms, torch.zeros_like(ref_terms)).sum(1)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-5)
    g_fast = torch.autograd.grad(fast.sum(), (s_int, s_un))
    g_ref = torch.autograd.grad(ref.sum(), (s_int, s_un))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gather_dot_matches_autograd_and_reads_rows_once():
    from recpress.distill.relaxed_ranking import _dot_gathered

    gen = torch.Generator().manual_seed(6)
    emb = torch.nn.Embedding(9, 4, sparse=True).double()
    vec = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(9, (5, 7), generator=gen)
    got = _dot_gathered(emb, idx, 9, vec)
    w = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    (got * w).sum().backward()
    g_emb, g_vec = emb.weight.grad.coalesce(), vec.grad.clone()
    assert g_emb.indices().numel() == torch.unique(idx).numel()  # one row per distinct id
    emb.weight.grad, vec.grad = None, None
    ref = (emb.weight[idx] * vec.unsqueeze(1)).sum(-1)
    (ref * w).sum().backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(g_emb.to_dense(), emb.weight.grad.to_dense())
    torch.testing.assert_close(g_vec, vec.grad)
