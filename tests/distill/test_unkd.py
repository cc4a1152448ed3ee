"""UnKD: popularity groups, per-group candidates, pair sampling, loss vs loop reference, fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recpress.distill.registry import DISTILLERS
from recpress.distill.unbiased import UnKD, group_sample_counts, popularity_groups
from recpress.models.bpr import BPRMF
from recpress.training.trainer import Trainer
from tests.distill.tiny import batch, tiny

torch.set_num_threads(1)


def ref_groups(pop, g):
    order = sorted(range(len(pop)), key=lambda i: (-pop[i], i))
    target = sum(pop) / g
    groups, cur, run = [], [], 0
    for i in order:
        if run + pop[i] > target and cur:
            groups.append(cur)
            cur, run = [], 0
        if run + pop[i] > target and not cur:
            groups.append([i])
            continue
        cur.append(i)
        run += pop[i]
    if cur:
        groups.append(cur)
    if len(groups) > 1 and sum(pop[i] for i in groups[-1]) < target / 2:
        last = groups.pop()
        groups[-1] += last
    return groups


def test_defaults():
    assert DISTILLERS["unkd"] is UnKD
    d = UnKD()
    assert (d.n_groups, d.n_distill, d.lambda_p, d.n_candidates, d.rank_temperature) == (
        4,
        30,
        0.0,
        1000,
        20.0,
    )
    assert (d.reduction, d.user_weighting, UnKD.default_weight) == ("mean", "rows", 1.0)
    assert group_sample_counts(30, np.array([5.0, 3.0, 2.0, 1.0]), 0.0) == [8, 8, 8, 8]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_match_loop_and_have_equal_totals(seed):
    rng = np.random.default_rng(seed)
    pop = rng.zipf(1.6, 200).clip(max=60)
    gid = popularity_groups(pop, 4)
    groups = ref_groups(pop.tolist(), 4)
    for g, members in enumerate(groups):
        assert sorted(np.flatnonzero(gid == g).tolist()) == sorted(members)
    totals = np.bincount(gid, weights=pop)
    target = pop.sum() / 4
    assert all(abs(t - target) <= max(pop.max(), target / 2) for t in totals)
    assert (np.diff([pop[gid == g].mean() for g in range(gid.max() + 1)]) <= 0).all()


def test_candidates_pairs_and_loss():
    split, teacher, student, kn = tiny(n_users=4, n_items=12, per_user=2)
    d = UnKD(n_groups=3, n_distill=6, n_candidates=3)
    d.prepare(teacher, split, kn)
    g = d.n_groups_
    assert d.candidates.shape == (4, g, 3) and d.counts == [2] * g
    gid = d.item_group.tolist()
    for u in range(4):
        t = teacher.score(torch.tensor([u]))[0].tolist()
        seen = set(split.train[u].indices.tolist())
        for grp in range(g):
            pool = sorted(
                [i for i in range(12) if gid[i] == grp and i not in seen], key=lambda i: -t[i]
            )
            n = int(d.n_valid[u, grp])
            assert d.candidates[u, grp, :n].tolist() == pool[:3]
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    assert d.pairs.shape == (4, 2 * g, 2)
    for u in range(4):
        for p in range(2 * g):
            grp = p // 2
            if not bool(d.pair_valid[u, p]):
                assert int(d.n_valid[u, grp]) < 2
                continue
            lst = d.candidates[u, grp].tolist()
            a, b = d.pairs[u, p].tolist()
            assert a != b and lst.index(a) < lst.index(b)  # i+ ranked above i-
    users = [0, 1, 1, 3]
    got = float(d.loss(student, batch(users), 0).detach())
    want = 0.0
    for u in users:
        terms = []
        for p in range(2 * g):
            if bool(d.pair_valid[u, p]):
                a, b = d.pairs[u, p].tolist()
                sa = float(student.score_items(torch.tensor([u]), torch.tensor([[a]])))
                sb = float(student.score_items(torch.tensor([u]), torch.tensor([[b]])))
                terms.append(math.log1p(math.exp(-(sa - sb))))
        want += sum(terms) / max(len(terms), 1)
    assert got == pytest.approx(want / len(users), rel=1e-5)


def test_pair_ranks_follow_exponential_law():
    split, teacher, student, kn = tiny(n_users=3, n_items=400, per_user=2)
    d = UnKD(n_groups=1, n_distill=2000, n_candidates=200)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    lst = d.candidates[0, 0]
    pos = {int(x): r for r, x in enumerate(lst.tolist())}
    hi = [pos[int(b)] for b in d.pairs[0, :, 1]]
    assert np.mean(hi) < 40  # max of two Exp(20)-like ranks: mean ≈ 30, far below uniform 100


def test_huge_scores_and_gradients():
    split, teacher, student, kn = tiny()
    with torch.no_grad():
        student.user_emb.weight.mul_(1e3)
        student.item_emb.weight.mul_(1e3)
    d = UnKD(n_groups=2, n_distill=4, n_candidates=4)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    loss = d.loss(student, batch([0, 1, 2, 3]), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.item_emb.weight.grad.to_dense()).all()
    assert all(p.grad is None for p in teacher.parameters())


def test_two_epoch_fit(tmp_path):
    split, teacher, _, kn = tiny(n_users=12, n_items=20)
    d = UnKD(n_groups=2, n_distill=4, n_candidates=5)
    d.prepare(teacher, split, kn)
    cfg = dict(epochs=2, batch_size=8, eval_every=1, device="cpu", ks=[5])
    res = Trainer(**cfg, selection_metric="recall@5").fit(
        BPRMF(4), split, [(d, 1.0)], run_dir=tmp_path, progress=False
    )
    assert res.epochs_run == 2 and all(math.isfinite(r["loss"]) for r in res.history)
