"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from recpress.errors import ConfigError
from recpress.evaluation import (
    METRICS,
    compute_metrics,
    hr_at_k,
    metric_name,
    mrr_at_k,
    ndcg_at_k,
    parse_metric_name,
    precision_at_k,
    recall_at_k,
)


def H(*rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_hand_case_two_hits_of_three_targets():
    hits = H([1, 0, 1, 0, 0])
    n = torch.tensor([3])
    assert recall_at_k(hits, n, 5).item() == pytest.approx(2 / 3)
    assert precision_at_k(hits, n, 5).item() == pytest.approx(2 / 5)
    assert hr_at_k(hits, n, 5).item() == 1.0
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(hits, n, 5).item() == pytest.approx(dcg / idcg)
    assert ndcg_at_k(hits, n, 5).item() == pytest.approx(0.7039180890341347)
    assert mrr_at_k(hits, n, 5).item() == 1.0
    # K=2: one hit at rank 1 only; IDCG over min(3, 2) = 2 ranks
    assert recall_at_k(hits, n, 2).item() == pytest.approx(1 / 3)
    assert ndcg_at_k(hits, n, 2).item() == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_fewer_targets_than_k():
    hits = H([0, 0, 1, 0, 0])
    n = torch.tensor([1])
    assert recall_at_k(hits, n, 5).item() == 1.0
    assert precision_at_k(hits, n, 5).item() == pytest.approx(0.2)  # denominator K, not |T|
    assert ndcg_at_k(hits, n, 5).item() == pytest.approx(0.5)  # 1/log2(3+1), IDCG = 1
    assert mrr_at_k(hits, n, 5).item() == pytest.approx(1 / 3)
    for f in (recall_at_k, precision_at_k, hr_at_k, ndcg_at_k, mrr_at_k):
        assert f(hits, n, 2).item() == 0.0


def test_more_targets_than_k():
    hits = H([1, 1, 1])
    n = torch.tensor([10])
    assert recall_at_k(hits, n, 3).item() == pytest.approx(0.3)
    assert precision_at_k(hits, n, 3).item() == 1.0
    assert ndcg_at_k(hits, n, 3).item() == pytest.approx(1.0)  # IDCG over min(10, 3)
    assert mrr_at_k(hits, n, 3).item() == 1.0


def test_compute_metrics_matches_single_functions_and_names():
    g = torch.Generator().manual_seed(1)
    hits = torch.rand(50, 20, generator=g) < 0.2
    n = torch.randint(1, 30, (50,), generator=g)
    out = compute_metrics(hits, n, ks=(1, 5, 20), metrics=METRICS)
    assert list(out) == [metric_name(m, k) for m in METRICS for k in (1, 5, 20)]
    single = {
        "recall": recall_at_k,
        "ndcg": ndcg_at_k,
        "hr": hr_at_k,
        "precision": precision_at_k,
        "mrr": mrr_at_k,
    }
    for m, f in single.items():
        for k in (1, 5, 20):
            torch.testing.assert_close(out[f"{m}@{k}"], f(hits, n, k))


def test_single_target_identities():
    hits = H([0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0])
    n = torch.tensor([1, 1, 1])
    out = compute_metrics(hits, n, ks=(4,))
    torch.testing.assert_close(out["recall@4"], out["hr@4"])
    torch.testing.assert_close(
        out["ndcg@4"], torch.tensor([1 / math.log2(5), 0.0, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(out["mrr@4"], torch.tensor([0.25, 0.0, 1.0], dtype=torch.float64))


def test_rejects_users_without_targets_and_bad_k():
    with pytest.raises(ValueError):
        recall_at_k(H([1, 0]), torch.tensor([0]), 2)
    with pytest.raises(ValueError):
        compute_metrics(H([1, 0]), torch.tensor([1]), ks=(3,))
    with pytest.raises(ConfigError):
        compute_metrics(H([1, 0]), torch.tensor([1]), ks=(1,), metrics=("map",))


def test_metric_names():
    assert metric_name("recall", 50) == "recall@50"
    assert parse_metric_name("NDCG@20") == ("ndcg", 20)
    for bad in ("recall", "foo@10", "recall@0", "recall@x"):
        with pytest.raises(ConfigError):
            parse_metric_name(bad)
