"""CD: tournament sampling properties, soft targets by hand, loss vs loop reference, fit."""

from __future__ import annotations

import math

import pytest
import torch

from recpress.distill.collaborative import CD, first_distinct, rank_cdf, tournament_pairs
from recpress.distill.registry import DISTILLERS
from recpress.models.bpr import BPRMF
from recpress.training.trainer import Trainer
from tests.distill.tiny import batch, tiny

torch.set_num_threads(1)


def test_defaults_are_reimplementation_column():
    assert DISTILLERS["cd"] is CD
    d = CD()
    assert (d.n_candidates, d.temperature, d.n_distill, d.t1, d.t2, d.guide) == (
        3000,
        20.0,
        2,
        2.0,
        0.0,
        "student",
    )
    assert (d.reduction, d.user_weighting, CD.default_weight) == ("sum", "rows", 0.5)


def test_tournament_picks_higher_scored_item_of_each_pair():
    g = torch.Generator().manual_seed(0)
    guide_scores = torch.sort(torch.randn(5, 30), dim=1, descending=True).values
    n_valid = torch.tensor([30, 30, 10, 2, 1])
    r1, r2, win = tournament_pairs(rank_cdf(30, 30 * 2.0), n_valid, 50, g)
    for row in range(5):
        assert int(r1[row].max()) < n_valid[row] and int(r2[row].max()) < n_valid[row]
        for a, b, w in zip(r1[row].tolist(), r2[row].tolist(), win[row].tolist(), strict=True):
            best = a if guide_scores[row, a] >= guide_scores[row, b] else b
            assert w == best


def test_rank_distribution_favours_top_ranks():
    g = torch.Generator().manual_seed(0)
    r1, _, _ = tournament_pairs(rank_cdf(100, 10.0), torch.tensor([100]), 20000, g)
    counts = torch.bincount(r1[0], minlength=100).double()
    expect = torch.softmax(-torch.arange(1, 101, dtype=torch.float64) / 10.0, 0) * 20000
    assert float(counts[:5].sum()) == pytest.approx(float(expect[:5].sum()), rel=0.1)
    assert counts[50:].sum() < counts[:5].sum()


def test_first_distinct_matches_loop():
    vals = torch.tensor([[3, 3, 1, 3, 2], [4, 4, 4, 4, 4], [0, 1, 0, 2, 1]])
    out, n = first_distinct(vals, 2)
    for row in range(3):
        seen = []
        for v in vals[row].tolist():
            if v not in seen:
                seen.append(v)
        assert n[row] == len(seen)
        want = (seen + [seen[0]] * 2)[:2]
        assert out[row].tolist() == want


def test_soft_targets_by_hand():
    d = CD()
    t = torch.tensor([0.0, 2.0, -4.0])
    assert d.soft_targets(t).tolist() == pytest.approx(
        [0.5, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(2))]
    )
    d2 = CD(t1=1.0, t2=1.0)
    assert d2.soft_targets(torch.tensor([0.0])).tolist() == pytest.approx([1 / (1 + math.exp(-1))])


@pytest.mark.parametrize("guide", ["student", "teacher", "random"])
def test_selection_and_loss_match_loop(guide):
    split, teacher, student, kn = tiny()
    d = CD(n_candidates=6, n_distill=3, guide=guide)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(3))
    model = student if guide == "student" else teacher
    for u in range(4):
        sel = d.selected[u].tolist()
        assert len(set(sel)) == 3
        assert not set(sel) & set(split.train[u].indices.tolist())
        if guide != "random":  # inside the guide's top-6 unobserved
            s = model.score(torch.tensor([u]))[0].detach().clone()
            s[torch.as_tensor(split.train[u].indices)] = -float("inf")
            assert set(sel) <= set(torch.topk(s, 6).indices.tolist())
    users = [0, 1, 1, 3]
    got = float(d.loss(student, batch(users), 0).detach())
    want = 0.0
    for u in users:
        for j in d.selected[u].tolist():
            t = float(teacher.score_items(torch.tensor([u]), torch.tensor([[j]])))
            s = float(student.score_items(torch.tensor([u]), torch.tensor([[j]])))
            w = 1 / (1 + math.exp(-(t + 0.0) / 2.0))
            p = 1 / (1 + math.exp(-s))
            want += -(w * math.log(p) + (1 - w) * math.log(1 - p))
    assert got == pytest.approx(want, rel=1e-5)


def test_huge_scores_and_gradients():
    split, teacher, student, kn = tiny()
    with torch.no_grad():
        student.user_emb.weight.mul_(1e3)
        student.item_emb.weight.mul_(1e3)
    d = CD(n_candidates=6)
    d.prepare(teacher, split, kn)
    d.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    loss = d.loss(student, batch([0, 1, 2, 3]), 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(student.item_emb.weight.grad.to_dense()).all()
    assert all(p.grad is None for p in teacher.parameters())


def test_two_epoch_fit(tmp_path):
    split, teacher, _, kn = tiny(n_users=12, n_items=20)
    d = CD(n_candidates=8)
    d.prepare(teacher, split, kn)
    cfg = dict(epochs=2, batch_size=8, eval_every=1, device="cpu", ks=[5])
    res = Trainer(**cfg, selection_metric="recall@5").fit(
        BPRMF(4), split, [(d, 0.5)], run_dir=tmp_path, progress=False
    )
    assert res.epochs_run == 2 and all(math.isfinite(r["loss"]) for r in res.history)
