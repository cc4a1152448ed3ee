"""HetComp: agreement, DKC rule, ensemble targets, P_u order and both losses vs per-user loops;
the curriculum in the distiller, bad input, resume and a short fit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recpress.distill.hetcomp import (
    HetComp,
    Workspace,
    dkc_update,
    dot_excluded_lse,
    ensemble_targets,
    excluded_lse,
    ndcg_agreement,
    order_positives,
    overall_loss,
    rank_loss,
)
from recpress.distill.knowledge import Knowledge
from recpress.distill.registry import DISTILLERS, make_distillers, prepare_distillers
from recpress.errors import ConfigError
from tests.distill.tiny import (
    batch,
    check_fit_finite_deterministic_and_resumes,
    synthetic_trajectories,
    tiny,
)

torch.set_num_threads(1)


def perms(n_rows: int, n_items: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n_items, generator=g)[:width] for _ in range(n_rows)])


# -- agreement ---------------------------------------------------------------------------------
def slow_ndcg(s: list[int], pi: list[int]) -> float:
    m = len(s)
    ref = set(pi[:m])
    gains = [(2 ** math.exp(-t / 10) - 1) / math.log2(t + 2) for t in range(m)]
    return sum(g for t, g in enumerate(gains) if s[t] in ref and s[t] >= 0) / sum(gains)


def test_ndcg_agreement_matches_a_loop():
    s = perms(5, 30, 8, 0)
    s[1, 3] = -1
    lists = perms(2 * 3 * 5, 30, 12, 1).view(2, 3, 5, 12)
    lists[0, 1, 2, 5] = -1
    got = ndcg_agreement(s, lists)
    assert got.shape == (2, 3, 5) and got.dtype == torch.float64
    for x in range(2):
        for c in range(3):
            for u in range(5):
                want = slow_ndcg(s[u].tolist(), lists[x, c, u].tolist())
                assert got[x, c, u].item() == pytest.approx(want, abs=1e-12)
    tail = s[:, 4:].contiguous()  # S against itself: 1 (the −1 is at position 3)
    same = ndcg_agreement(tail, tail.unsqueeze(0))
    assert torch.allclose(same, torch.ones_like(same))


# -- DKC rule ----------------------------------------------------------------------------------
def slow_dkc(v, d_last, n_ckpt, dist, epoch, p, alpha, first):
    v, d_last = v.clone(), d_last.clone()
    n_t, _, n_u = dist.shape
    for x in range(n_t):
        last = int(n_ckpt[x]) - 1
        for u in range(n_u):
            if first:
                d_last[x, u] = dist[x, min(1, last), u]
                continue
            if v[x, u] >= last:
                continue
            d_next = float(dist[x, int(v[x, u]) + 1, u])
            th = alpha * 0.995 ** (epoch // p)
            if d_next == 0 or d_last[x, u] / d_next > th or d_last[x, u] / d_next < 1:
                v[x, u] += 1
                d_last[x, u] = dist[x, min(int(v[x, u]) + 1, last), u]
    return v, d_last


@pytest.mark.parametrize("epoch", [10, 20, 100, 110])
def test_dkc_update_matches_a_loop(epoch):
    g = torch.Generator().manual_seed(epoch)
    n_t, c_max, n_u = 3, 4, 40
    n_ckpt = torch.tensor([4, 2, 1])
    dist = torch.rand(n_t, c_max, n_u, generator=g, dtype=torch.float64)
    dist[:, :, :5] = 0.0  # the d_next = 0 guard
    dist[0, :, 5:10] = 0.5  # ratios of exactly 1: kept (before epoch 100)
    v = torch.minimum(
        torch.randint(0, 4, (n_t, n_u), generator=g), (n_ckpt - 1).unsqueeze(1).expand(-1, n_u)
    )
    d_last = torch.rand(n_t, n_u, generator=g, dtype=torch.float64)
    d_last[0, 5:10] = 0.5
    for first in (True, False):
        got = dkc_update(v, d_last, n_ckpt, dist, epoch, 10, 1.05, first)
        want = slow_dkc(v, d_last, n_ckpt, dist, epoch, 10, 1.05, first)
        assert torch.equal(got[0], want[0])
        assert torch.allclose(got[1], want[1], rtol=0, atol=0)
    advanced = dkc_update(v, d_last, n_ckpt, dist, epoch, 10, 1.05, False)[0] - v
    if epoch >= 100:  # th < 1: every unfinished pair moves on
        assert torch.equal(advanced, (v < (n_ckpt - 1).unsqueeze(1)).long())
    else:
        assert int(advanced[0, 5:10].sum()) == 0 and int(advanced[:, :5].sum()) > 0


# -- targets and positives ---------------------------------------------------------------------
def slow_targets(lists, k, temperature):
    n_t, n_u, _ = lists.shape
    out = []
    for u in range(n_u):
        imp: dict[int, float] = {}
        for x in range(n_t):
            for r, i in enumerate(lists[x, u].tolist()):
                if i >= 0:
                    imp[i] = imp.get(i, 0.0) + math.exp(-r / temperature)
        best = sorted(imp, key=lambda i: (-imp[i], i))[:k]
        out.append(best + [-1] * (k - len(best)))
    return torch.tensor(out)


def test_ensemble_targets_match_a_loop_and_one_teacher_is_its_list():
    lists = perms(3 * 6, 15, 7, 2).view(3, 6, 7)
    lists[1, 2, 4:] = -1
    for k in (3, 7, 12):
        got = ensemble_targets(lists, k, 5.0)
        assert torch.equal(got, slow_targets(lists, k, 5.0))
    one = lists[:1]
    one[0, 2, 5:] = -1
    assert torch.equal(ensemble_targets(one, 7, 10.0), one[0].long())


def test_positives_ordered_by_the_teachers_ensemble():
    items = torch.tensor([[4, 1, 7, 2], [3, 0, -1, -1], [5, -1, -1, -1]])
    a = torch.tensor([[0.1, 0.9, 0.5, 0.3], [2.0, 1.0, 9.0, 9.0], [1.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[0.9, 0.8, 0.1, 0.0], [1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # no teacher scores: file order, truncated and −1 padded
    assert order_positives(items, [], 2, 10.0).tolist() == [[4, 1], [3, 0], [5, -1]]
    # one teacher: its own order
    assert order_positives(items, [a], 3, 10.0).tolist() == [[1, 7, 2], [3, 0, -1], [5, -1, -1]]
    # two teachers: importances exp(−rank/T) summed; ties in file order
    got = order_positives(items, [a, b], 4, 1.0)
    for u in range(3):
        n = int((items[u] >= 0).sum())
        imp = [0.0] * n
        for s in (a, b):
            ranked = sorted(range(n), key=lambda j: (-float(s[u, j]), j))
            for r, j in enumerate(ranked):
                imp[j] += math.exp(-r / 1.0)
        want = [int(items[u, j]) for j in sorted(range(n), key=lambda j: (-imp[j], j))]
        assert got[u].tolist() == want + [-1] * (4 - n)


# -- losses ------------------------------------------------------------------------------------
def loss_case(seed=0, n_u=4, n_items=25):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(n_u, n_items, generator=g, dtype=torch.float64) * 3).requires_grad_()
    observed = [sorted(perms(1, n_items, 3 + u % 3, seed + u)[0].tolist()) for u in range(n_u)]
    rest = [[i for i in perms(1, n_items, n_items, seed + 9 + u)[0].tolist() if i not in o]
            for u, o in enumerate(observed)]  # fmt: skip
    targets = torch.tensor([r[:8] for r in rest])
    targets[1, 6:] = -1
    positives = torch.tensor([(o + [-1] * 5)[:5] for o in observed])
    positives[0, 1:] = -1
    excluded = torch.zeros(n_u, n_items, dtype=torch.bool)
    for u in range(n_u):
        excluded[u, observed[u]] = True
        excluded[u, [t for t in targets[u].tolist() if t >= 0]] = True
    return scores, excluded, positives, targets, observed


def slow_lse(values):
    m = max(values)
    return m + math.log(sum(math.exp(x - m) for x in values))


def test_overall_loss_matches_the_set_formula():
    scores, excluded, positives, targets, observed = loss_case()
    got = overall_loss(scores, excluded, positives, targets)
    s = scores.detach()
    for u in range(scores.shape[0]):
        t = [i for i in targets[u].tolist() if i >= 0]
        n_u = [j for j in range(s.shape[1]) if j not in observed[u] and j not in t]
        want = 0.0
        for i in [p for p in positives[u].tolist() if p >= 0] + t:
            want -= float(s[u, i]) - slow_lse([float(s[u, i])] + [float(s[u, j]) for j in n_u])
        assert got[u].item() == pytest.approx(want, rel=1e-10)
    got.sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


def slow_pl(s_u, ranked, rest):
    out = 0.0
    for k, i in enumerate(ranked):
        out -= float(s_u[i]) - slow_lse(
            [float(s_u[j]) for j in ranked[k:]] + [float(s_u[j]) for j in rest]
        )
    return out  # fmt: skip


@pytest.mark.parametrize("top,head", [(5, 2), (8, 3), (50, 10)])
def test_rank_loss_matches_the_set_formula(top, head):
    scores, excluded, positives, targets, observed = loss_case(1)
    got = rank_loss(scores, excluded, positives, targets, top, head)
    s = scores.detach()
    for u in range(scores.shape[0]):
        t = [i for i in targets[u].tolist() if i >= 0]
        p = [i for i in positives[u].tolist() if i >= 0]

        def rest(n, t=t, u=u):
            return [j for j in range(s.shape[1]) if j not in observed[u] and j not in t[:n]]

        top_, head_ = min(top, 8), min(head, top, 8)
        want = slow_pl(s[u], p, rest(top_)) + 0.5 * (
            slow_pl(s[u], t[:top_], rest(top_)) + slow_pl(s[u], t[:head_], rest(head_))
        )
        assert got[u].item() == pytest.approx(want, rel=1e-10)
    got.sum().backward()
    assert torch.isfinite(scores.grad).all()


def test_excluded_lse_equals_the_masked_logsumexp_with_its_gradient():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(5, 30, generator=g) * 4
    excluded = torch.rand(5, 30, generator=g) < 0.3
    excluded[2, :29] = True  # one kept entry
    excluded[2, 29] = False
    excluded[4] = True  # none kept: −inf, no gradient
    scores[3, excluded[3]] += 500.0  # kept mass underflows next to the excluded max
    rows, cols = excluded.nonzero(as_tuple=True)
    a = scores.clone().requires_grad_()
    b = scores.clone().requires_grad_()
    fast = excluded_lse(a, rows, cols)
    ref = torch.logsumexp(b.masked_fill(excluded, -math.inf), dim=1)
    assert torch.allclose(fast[:4], ref[:4], rtol=1e-6, atol=1e-5) and torch.isneginf(fast[4])
    w = torch.arange(1.0, 6.0)
    (fast[:4] * w[:4]).sum().backward()
    (ref[:4] * w[:4]).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    a.grad = None
    excluded_lse(a, rows, cols)[4].backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_dot_excluded_lse_and_a_reused_workspace():
    g = torch.Generator().manual_seed(5)
    u = torch.randn(4, 3, generator=g, requires_grad=True)
    items = torch.randn(12, 3, generator=g, requires_grad=True)
    excluded = torch.rand(4, 12, generator=g) < 0.4
    rows, cols = excluded.nonzero(as_tuple=True)
    ws = Workspace()
    for _ in range(2):  # the second call reuses the buffer
        got = dot_excluded_lse(u, items, rows, cols, ws)
        (got * torch.arange(1.0, 5.0)).sum().backward()
        gu, gi = u.grad.clone(), items.grad.clone()
        u.grad = items.grad = None
    ref = torch.logsumexp((u @ items.T).masked_fill(excluded, -math.inf), dim=1)
    (ref * torch.arange(1.0, 5.0)).sum().backward()
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(gu, u.grad, atol=1e-6) and torch.allclose(gi, items.grad, atol=1e-6)
    # a loose shift bound (one huge excluded item): the kept mass underflows, the row is redone
    far = torch.tensor([[30.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    table = torch.tensor([[9.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.5, 0.0]])
    got = dot_excluded_lse(far, table, torch.tensor([0, 1]), torch.tensor([0, 0]))
    ref = torch.logsumexp(far.detach() @ table[1:].T, dim=1)
    assert torch.allclose(got.detach(), ref, atol=1e-5)
    first = dot_excluded_lse(u, items, rows, cols, ws)
    dot_excluded_lse(u, items, rows, cols, ws)  # takes the workspace over
    with pytest.raises(RuntimeError, match="backward"):
        first.sum().backward()


def test_losses_are_finite_for_huge_scores():
    scores, excluded, positives, targets, _ = loss_case(2)
    big = (scores.detach() * 1e3).float().requires_grad_()
    for f in (overall_loss, rank_loss):
        out = f(big, excluded, positives, targets).sum()
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(big.grad).all()
        big.grad = None


# -- the distiller -----------------------------------------------------------------------------
def prepared(n_checkpoints=(3, 2), p=1, **params):
    split, teacher, student, kn = tiny(n_users=6, n_items=20)
    teachers = []
    for x, c in enumerate(n_checkpoints):
        k = Knowledge.from_teacher(teacher, split)
        k.attach_trajectories(synthetic_trajectories(split, c, k=8, seed=20 * x))
        teachers.append(k)
    d = HetComp(K=8, dkc_k=4, p=p, rank_top=4, rank_head=2, **params)
    prepare_distillers([(d, 0.005)], [teachers], split, student)
    return d, student, split, teachers


def test_registered_with_reimplementation_defaults():
    assert DISTILLERS["hetcomp"] is HetComp and HetComp.multi_teacher
    d = HetComp()
    assert (d.K, d.dkc_k, d.p, d.alpha, d.overall_weight, d.T_e) == (100, 50, 10, 1.05, 2.0, 10.0)
    assert HetComp.default_weight == 0.005
    ((got, w),) = make_distillers("hetcomp", params={"hetcomp": {"K": 20, "dkc_k": 10}})
    assert w == 0.005 and got.get_params()["K"] == 20
    with pytest.raises(ValueError, match="dkc_k"):
        HetComp(K=10, dkc_k=20)


def test_prepare_builds_state_targets_and_positives():
    d, _, split, teachers = prepared()
    assert d.lists.shape == (2, 3, 6, 8) and d.n_ckpt.tolist() == [3, 2]
    assert torch.equal(d.lists[1, 2], d.lists[1, 1])  # the shorter trajectory repeats its last
    assert d.v.shape == (2, 6) and int(d.v.sum()) == 0 and int(d.phase) == 1
    first = torch.stack([t.trajectories().lists[0] for t in teachers])
    assert torch.equal(d.targets, ensemble_targets(first, 8, 10.0))
    for u in range(6):
        obs = set(split.train[u].indices.tolist())
        assert set(d.targets[u].tolist()).isdisjoint(obs)
        assert set(d.positives[u].tolist()) - {-1} <= obs


def test_dkc_schedule_phase_and_targets_follow_v():
    d, student, _, teachers = prepared(p=2)
    g = torch.Generator()
    d.on_epoch_start(student, 1, g)  # not a DKC epoch
    assert not bool(d.started)
    d.on_epoch_start(student, 2, g)  # first call: d_last only
    assert bool(d.started) and int(d.v.sum()) == 0 and float(d.d_last.sum()) > 0
    for e in (4, 6, 100, 102):  # th < 1 from epoch 100 on: everything ends
        d.on_epoch_start(student, e, g)
        lists = [t.trajectories().lists for t in teachers]
        current = torch.stack([lists[x][d.v[x], torch.arange(6)] for x in range(2)])
        assert torch.equal(d.targets, ensemble_targets(current, 8, 10.0))
    assert d.v.tolist() == [[2] * 6, [1] * 6] and int(d.phase) == 2


def test_loss_is_the_phase_formula_on_unique_users():
    d, student, split, _ = prepared()
    users = torch.tensor([0, 2, 2, 5])
    uniq = torch.tensor([0, 2, 5])

    def excluded():
        ex = torch.zeros(3, split.n_items, dtype=torch.bool)
        for r, u in enumerate(uniq.tolist()):
            ex[r, split.train[u].indices] = True
            ex[r, d.targets[u]] = True
        return ex

    with torch.no_grad():
        s = student.score(uniq)
        want1 = 2.0 * overall_loss(s, excluded(), d.positives[uniq], d.targets[uniq]).sum()
        got1 = d.loss(student, batch(users), 0)
        d.phase.fill_(2)
        want2 = rank_loss(s, excluded(), d.positives[uniq], d.targets[uniq], 4, 2).sum()
        got2 = d.loss(student, batch(users), 0)
    assert got1.item() == pytest.approx(want1.item(), rel=1e-5)
    assert got2.item() == pytest.approx(want2.item(), rel=1e-5)


def test_single_teacher_and_clamped_scores():
    split, teacher, student, kn = tiny(n_users=6, n_items=20)
    kn.attach_trajectories(synthetic_trajectories(split, 2, k=8, seed=3))
    d = HetComp(K=6, dkc_k=3, p=1, clamp_scores=0.5)
    prepare_distillers([(d, 0.005)], kn, split, student)
    assert torch.equal(d.targets, kn.trajectories().lists[0, :, :6].long())
    loss = d.loss(student, batch([0, 1, 3]), 0)
    loss.backward()
    assert torch.isfinite(loss)


def test_bad_input_is_one_config_error():
    split, teacher, student, kn = tiny(n_users=6, n_items=20)
    with pytest.raises(ConfigError, match="recpress trajectories"):
        prepare_distillers([(HetComp(K=6, dkc_k=3), 0.005)], kn, split, student)
    kn.attach_trajectories(synthetic_trajectories(split, 2, k=5, seed=3))
    with pytest.raises(ConfigError, match="fewer than K=6"):
        prepare_distillers([(HetComp(K=6, dkc_k=3), 0.005)], kn, split, student)
    with pytest.raises(ConfigError, match=r"epochs \[30\]"):
        prepare_distillers([(HetComp(K=5, dkc_k=3, checkpoints=[10, 30]), 1)], kn, split, student)
    other = synthetic_trajectories(split, 2, k=8)
    other.fingerprint = "0123456789abcdef"
    kn.attach_trajectories(other)
    with pytest.raises(ConfigError, match="0123456789abcdef"):
        prepare_distillers([(HetComp(K=6, dkc_k=3), 0.005)], kn, split, student)


def test_checkpoint_state_restores_the_curriculum():
    a, student, _, _ = prepared(p=1)
    g = torch.Generator()
    for e in (1, 2, 3):
        a.on_epoch_start(student, e, g)
    b, _, _, _ = prepared(p=1)
    b.load_state_dict(a.state_dict())
    for key, value in a.extra_state_tensors().items():
        assert torch.equal(getattr(b, key), value)
    c, _, _, _ = prepared(p=1)
    c.load_extra_state_tensors(a.extra_state_tensors())
    with torch.no_grad():
        assert torch.equal(c.loss(student, batch([1, 4]), 3), a.loss(student, batch([1, 4]), 3))


def test_fit_is_finite_deterministic_and_resumes(tmp_path):
    check_fit_finite_deterministic_and_resumes(
        lambda: HetComp(K=10, dkc_k=5, p=1, rank_top=5, rank_head=2),
        0.005,
        tmp_path,
        trajectories=3,
    )


# -- several teachers through the run config and the CLI ---------------------------------------
@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
    """(data file, {name: run dir}) of two BPR teachers (d=8, d=16) on the same tiny data."""
    from recpress.experiments.run import train_run
    from tests.run_dirs.tinyruns import tiny_config, write_pairs

    root = tmp_path_factory.mktemp("hetcomp_teachers")
    data_file = write_pairs(root / "tiny.tsv")
    runs = {"small": root / "small", "wide": root / "wide"}
    for dim, path in zip((8, 16), runs.values(), strict=True):
        train_run(tiny_config(data_file, dim=dim), path, progress=False)
    return data_file, runs


@pytest.fixture
def with_trajectories(monkeypatch):
    """Every teacher run reads synthetic 3-checkpoint trajectories (seeded by its path);
    returns the list of run directories read."""
    import recpress.runs as runs_module
    from recpress.runs import load_run

    read = []

    def fake(run_dir):
        read.append(Path(run_dir))
        split = load_run(run_dir).split
        return synthetic_trajectories(split, 3, k=12, seed=len(str(run_dir)))

    monkeypatch.setattr(runs_module, "read_trajectories", fake, raising=False)
    return read


def hetcomp_student(teachers, teacher_of=None, **kw):
    from recpress.experiments.config import student_config

    values = {
        "distill.params": {"hetcomp": {"K": 10, "dkc_k": 5, "p": 1}},
        "profile": False,
        "train.eval_every": 1,
    }
    return student_config(teachers, "hetcomp", 4, epochs=2, teacher_of=teacher_of, values=values)


def test_hetcomp_learns_from_every_teacher_by_default(teacher_runs, with_trajectories, tmp_path):
    from recpress.experiments.run import train_run

    _, runs = teacher_runs
    metrics = train_run(hetcomp_student(runs), tmp_path / "s", progress=False)
    assert metrics["distill"]["teacher_of"] == {"hetcomp": ["small", "wide"]}
    assert sorted(with_trajectories) == sorted(runs.values())
    assert math.isfinite(metrics["valid"]["recall@10"])
    one = train_run(hetcomp_student(runs, {"hetcomp": ["wide"]}), tmp_path / "o", progress=False)
    assert one["distill"]["teacher_of"] == {"hetcomp": ["wide"]}


def test_multi_teacher_bad_input(teacher_runs, tmp_path):
    from recpress.experiments.run import train_run
    from tests.run_dirs.tinyruns import tiny_config, write_pairs

    data_file, runs = teacher_runs
    with pytest.raises(ConfigError, match="names teacher 'big', but the teachers are: small, wide"):
        hetcomp_student(runs, {"hetcomp": ["small", "big"]})
    # a teacher run without trajectories: the command that makes them
    with pytest.raises(ConfigError, match="recpress trajectories"):
        train_run(hetcomp_student(runs), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()  # refused before the run directory exists
    # a teacher of another split: refused by name, with both fingerprints
    other = tmp_path / "other"
    train_run(tiny_config(write_pairs(tmp_path / "o.tsv", n_users=61), epochs=1), other)
    config = hetcomp_student({**runs, "other": other})
    with pytest.raises(ConfigError, match=f"teacher {other} was trained on a split") as err:
        train_run(config, tmp_path / "s2", progress=False)
    assert err.value.field == "distill.teachers.other"
    # a single-teacher method given a list
    from recpress.experiments.config import student_config

    bad = student_config(runs, "rrd", 4, teacher_of={"rrd": ["small", "wide"]})
    with pytest.raises(ConfigError, match="learns from one"):
        train_run(bad, tmp_path / "s3", progress=False)


def test_cli_hetcomp_with_unnamed_teacher_paths(teacher_runs, with_trajectories, tmp_path, capsys):
    import yaml

    from recpress.cli import main

    _, runs = teacher_runs
    out = tmp_path / "cli"
    argv = ["distill", "--method", "hetcomp", "--dim", "4", "--out", str(out), "--epochs", "1"]
    argv += ["--teachers", ",".join(str(p) for p in runs.values()), "--model", "bpr"]
    argv += ["--no-progress", "--set", "profile=false", "--set", "distill.params.hetcomp.K=10"]
    argv += ["--set", "distill.params.hetcomp.dkc_k=5"]
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["distill"]["teachers"] == {n: str(p) for n, p in runs.items()}
    assert cfg["model"]["name"] == "bpr" and cfg["model"]["embedding_dim"] == 4


def test_without_bpr_the_objective_is_the_kd_term_alone():
    from recpress.training.objective import TrainingObjective

    d, student, _, _ = prepared()
    b = batch([0, 2, 5])
    with torch.no_grad():
        kd = d.loss(student, b, 0)
        both = TrainingObjective(student, [(d, 0.005)])(b, 0)
        d.bpr = False
        alone = TrainingObjective(student, [(d, 0.005)])(b, 0)
    assert alone.item() == pytest.approx(0.005 * kd.item(), rel=1e-6)
    assert both.item() == pytest.approx(0.005 * kd.item() + student(b).sum().item(), rel=1e-6)


def test_teachers_trained_with_trajectories_feed_hetcomp(teacher_runs, tmp_path):
    """The real path: teachers whose training stored lists at two epochs (no stand-ins)."""
    from recpress.experiments.run import train_run
    from recpress.runs import read_trajectories
    from tests.run_dirs.tinyruns import tiny_config

    data_file, _ = teacher_runs
    runs = {}
    for name, dim in (("a", 8), ("b", 6)):
        runs[name] = tmp_path / name
        cfg = tiny_config(data_file, dim=dim, epochs=3)
        cfg.train = cfg.train.model_copy(update={"trajectory_epochs": [0, 2], "trajectory_k": 12})
        train_run(cfg, runs[name], progress=False)
    metrics = train_run(hetcomp_student(runs), tmp_path / "s", progress=False)
    assert metrics["distill"]["teacher_of"] == {"hetcomp": ["a", "b"]}
    assert read_trajectories(runs["a"]).epochs == [0, 2]
    assert math.isfinite(metrics["valid"]["recall@10"])
