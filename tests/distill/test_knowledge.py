"""Teacher knowledge cache and external teachers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpress.distill import make_distillers, prepare_distillers
from recpress.distill.knowledge import Knowledge
from recpress.distill.registry import check_requires
from recpress.distill.teachers import load_teacher
from recpress.errors import ConfigError
from recpress.models import BPRMF, TripletBatch
from tests.conftest import random_split, shape_split
from tests.topk_checks import assert_same_topk


@pytest.fixture
def tiny():
    split = random_split(n_users=15, n_items=25, per_user=6, seed=2)
    teacher = BPRMF(embedding_dim=5, init_std=1.0).build(split, torch.Generator().manual_seed(1))
    return split, teacher


def exact_scores(teacher, split, mask=True) -> torch.Tensor:
    """float64 teacher scores (n_users, n_items), training items -inf when `mask`."""
    with torch.no_grad():
        scores = teacher.user_emb.weight.double() @ teacher.item_emb.weight.double().T
    if mask:
        scores = scores.masked_fill(torch.as_tensor(split.train.toarray() > 0), -torch.inf)
    return scores


def brute_user_topk(teacher, split, n, mask=True):
    scores = exact_scores(teacher, split, mask)
    out = []
    for u in range(split.n_users):  # explicit per-user sort
        order = sorted(range(split.n_items), key=lambda i: -float(scores[u, i]))
        out.append(order[:n])
    return torch.tensor(out, dtype=torch.int32)


def assert_same_lists(got: torch.Tensor, want: torch.Tensor, scores: torch.Tensor) -> None:
    """Lists equal up to ties: the teacher's fp32 product (chunked) may round an ulp away from
    the exact scores, which can reorder items tied within that rounding."""
    rows = torch.arange(len(scores)).unsqueeze(1)
    g, w = got.long(), want.long()
    assert_same_topk(scores[rows, g], g, scores[rows, w], w, scores=scores)


def test_user_topk_masks_train_and_matches_bruteforce(tiny, tmp_path):
    split, teacher = tiny
    know = Knowledge.from_teacher(teacher, split, cache_dir=tmp_path)
    got = know.user_topk(10)
    assert got.dtype == torch.int32 and got.shape == (15, 10)
    assert_same_lists(got, brute_user_topk(teacher, split, 10), exact_scores(teacher, split))
    train = split.train.toarray()
    assert not any(train[u, i] for u in range(15) for i in got[u].tolist())
    assert_same_lists(
        know.user_topk(10, mask_train=False),
        brute_user_topk(teacher, split, 10, mask=False),
        exact_scores(teacher, split, mask=False),
    )


def test_item_topk_matches_bruteforce(tiny):
    split, teacher = tiny
    know = Knowledge.from_teacher(teacher, split)
    got = know.item_topk(4)
    scores = exact_scores(teacher, split).T  # (n_items, n_users), training pairs -inf
    train = split.train.toarray().T
    want = []
    for i in range(split.n_items):  # explicit per-item sort over users without the item
        allowed = [u for u in range(split.n_users) if not train[i, u]]
        want.append(sorted(allowed, key=lambda u: -float(scores[i, u]))[:4])
    assert_same_lists(got, torch.tensor(want), scores)


def test_cache_reused_and_larger_n_sliced(tiny, tmp_path, monkeypatch):
    split, teacher = tiny
    first = Knowledge.from_teacher(teacher, split, cache_dir=tmp_path)
    full = first.user_topk(12)
    assert first.computed == 1
    assert (tmp_path / "user_topk_n12_masked.safetensors").is_file()

    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(Knowledge, "_compute_user", boom)
    second = Knowledge.from_teacher(teacher, split, cache_dir=tmp_path)
    assert torch.equal(second.user_topk(12), full)
    assert torch.equal(second.user_topk(5), full[:, :5])  # served by slicing
    assert second.computed == 0
    # a cache of another split is not trusted
    other = random_split(n_users=15, n_items=25, per_user=6, seed=3)
    third = Knowledge.from_teacher(teacher, other, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):
        third.user_topk(5)


def test_embeddings_frozen(tiny):
    split, teacher = tiny
    know = Knowledge.from_teacher(teacher, split)
    assert know.has_embeddings and know.has_scores
    emb = know.user_embeddings()
    assert emb.shape == (15, 5) and not emb.requires_grad
    s = know.score_items(torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 4]]))
    assert s.shape == (2, 2) and not s.requires_grad


def test_npz_embedding_teacher(tiny, tmp_path):
    split, teacher = tiny
    path = tmp_path / "teacher.npz"
    np.savez(
        path,
        user_embeddings=teacher.user_emb.weight.detach().numpy(),
        item_embeddings=teacher.item_emb.weight.detach().numpy(),
    )
    know = load_teacher(path, split)
    assert know.has_embeddings
    assert_same_lists(
        know.user_topk(6), brute_user_topk(teacher, split, 6), exact_scores(teacher, split)
    )
    pairs = make_distillers(
        "de+rrd", None, {"de": {"n_experts": 2}, "rrd": {"K": 2, "L": 3, "N": 6}}
    )
    prepare_distillers(
        pairs, know, split, student=BPRMF(embedding_dim=3).build(shape_split(15, 25))
    )


def test_list_only_teacher(tiny, tmp_path):
    split, teacher = tiny
    lists = brute_user_topk(teacher, split, 8).numpy()
    path = tmp_path / "lists.npz"
    np.savez(path, topk=lists)
    know = load_teacher(path, split)
    assert not know.has_embeddings and not know.has_scores
    with pytest.raises(ConfigError, match="'de' needs teacher embeddings"):
        check_requires(make_distillers("de+rrd"), know)
    with pytest.raises(ConfigError, match="embeddings"):
        know.user_embeddings(needed_by="de")
    with pytest.raises(ConfigError, match="'ir-rrd'"):
        know.item_topk(4, needed_by="ir-rrd")
    student = BPRMF(embedding_dim=3).build(shape_split(15, 25))
    pairs = make_distillers("rrd", None, {"rrd": {"K": 3, "L": 3, "N": 8}})
    prepare_distillers(pairs, know, split, student=student)
    rrd = pairs[0][0]
    rrd.on_epoch_start(student, 0, torch.Generator().manual_seed(0))
    batch = TripletBatch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert torch.isfinite(rrd.loss(student, batch, 0))
    with pytest.raises(ConfigError, match="only 8"):
        make_distillers("rrd", None, {"rrd": {"K": 3, "N": 20}})[0][0].prepare(None, split, know)


def test_npz_of_wrong_shape(tiny, tmp_path):
    split, _ = tiny
    path = tmp_path / "bad.npz"
    np.savez(path, user_embeddings=np.zeros((3, 2)), item_embeddings=np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="users"):
        load_teacher(path, split)
