"""`Recommender.epoch_batches`: the triplet default is today's epoch, user batches, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpress.data.sampling import epoch_triples
from recpress.data.types import Split, to_csr
from recpress.models import BPRMF
from recpress.models.base import TripletBatch, UserBatch, shard_range
from tests.conftest import random_split


class _UserModel(BPRMF):
    batch_kind = "users"


def test_triplet_batches_are_the_epoch_triples_sliced():
    split = random_split(30, 40, per_user=5, seed=1)
    users, pos, neg = epoch_triples(split, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    batches = list(BPRMF().epoch_batches(split, g, batch_size=64))
    assert all(isinstance(b, TripletBatch) for b in batches)
    assert [len(b) for b in batches] == [64, 64, 22]
    assert torch.equal(torch.cat([b.users for b in batches]), users)
    assert torch.equal(torch.cat([b.pos for b in batches]), pos)
    assert torch.equal(torch.cat([b.neg for b in batches]), neg)
    # the generator advanced exactly as epoch_triples advances it
    g2 = torch.Generator().manual_seed(7)
    epoch_triples(split, g2)
    assert torch.equal(g.get_state(), g2.get_state())


def test_user_batches_visit_every_active_user_once():
    split = random_split(30, 40, per_user=5, seed=1)
    rows, cols = split.train.nonzero()
    keep = rows != 4  # user 4 has no training row
    train = to_csr(rows[keep], cols[keep], 30, 40)
    split = Split(train, split.valid, split.test, split.user_ids, split.item_ids)
    batches = list(_UserModel().epoch_batches(split, torch.Generator().manual_seed(0), 8))
    assert all(isinstance(b, UserBatch) for b in batches)
    assert [len(b) for b in batches] == [8, 8, 8, 5]
    seen = torch.cat([b.users for b in batches])
    assert sorted(seen.tolist()) == [u for u in range(30) if u != 4]
    again = list(_UserModel().epoch_batches(split, torch.Generator().manual_seed(0), 8))
    assert torch.equal(torch.cat([b.users for b in again]), seen)
    assert not torch.equal(seen, torch.arange(30)[torch.arange(30) != 4])  # shuffled


@pytest.mark.parametrize("kind", [BPRMF, _UserModel])
def test_shards_are_disjoint_equal_parts_of_one_epoch(kind):
    split = random_split(30, 40, per_user=5, seed=2)
    full = list(kind().epoch_batches(split, torch.Generator().manual_seed(3), 10**6))[0]
    parts = [
        torch.cat(
            [
                b.users
                for b in kind().epoch_batches(
                    split, torch.Generator().manual_seed(3), 7, shard=(r, 4)
                )
            ]
        )
        for r in range(4)
    ]
    n = len(full) // 4
    assert all(len(p) == n for p in parts)
    assert torch.equal(torch.cat(parts), full.users[: 4 * n])


def test_shard_range_checks():
    assert shard_range(10, (0, 1)) == (0, 10)
    assert shard_range(10, (2, 3)) == (6, 9)
    with pytest.raises(ValueError):
        shard_range(10, (3, 3))


def test_user_batch_to_and_len():
    b = UserBatch(torch.tensor(np.array([1, 2, 3])))
    assert len(b.to("cpu")) == 3


@pytest.mark.parametrize("name", ["multvae", "cdae"])
def test_distilling_into_a_user_batch_student_is_refused(name):
    from recpress.distill import make_distillers
    from recpress.distill.registry import check_student
    from recpress.errors import ConfigError
    from recpress.models import make_model

    student = make_model(name)
    assert student.batch_kind == "users"
    with pytest.raises(ConfigError, match="triplet batches") as err:
        check_student(make_distillers("rd"), student)
    assert repr(name) in str(err.value) and "teacher" in str(err.value)
    check_student([], student)  # no distillation: fine


def test_a_student_config_from_a_user_batch_teacher_needs_another_model(tmp_path):
    from recpress.errors import ConfigError
    from recpress.experiments.config import student_config

    (tmp_path / "config.yaml").write_text("model: {name: multvae}\ntrain: {batch_size: 128}\n")
    with pytest.raises(ConfigError, match="can be a teacher but not a student") as err:
        student_config(tmp_path, "rd", 8)
    assert "--model bpr" in str(err.value)
    with pytest.raises(ConfigError, match="--model"):
        student_config(tmp_path, "rd", 8, model="cdae")
    config = student_config(tmp_path, "rd", 8, model="bpr")
    assert config.model.name == "bpr" and config.model.params["embedding_dim"] == 8
