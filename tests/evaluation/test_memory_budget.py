"""Chunks sized by a memory budget: same metrics and teacher lists under a small budget (many
chunks) as under a large one (one chunk); the chunk formula; peak memory in metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recpress.data import load_split
from recpress.distill.knowledge import Knowledge
from recpress.errors import ConfigError
from recpress.evaluation import evaluate
from recpress.evaluation.ranking import DEFAULT_CHUNK_ELEMENTS, chunk_rows
from recpress.models import BPRMF
from recpress.training.memory import peak_memory


@pytest.fixture(scope="module")
def wide():
    """300 users x 20,000 items (a wide catalogue) and a random BPR model on it."""
    split = load_split("synthetic:300x20000x6000:0")
    model = BPRMF(embedding_dim=8)
    model.build(split, generator=torch.Generator().manual_seed(0))
    return split, model


def test_chunk_rows_formula():
    assert chunk_rows(25_000) * 25_000 <= DEFAULT_CHUNK_ELEMENTS
    assert chunk_rows(1000, memory_budget_mb=1) == 2**20 // (1000 * 4 * 2)
    assert chunk_rows(10**9, memory_budget_mb=1) == 1
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        chunk_rows(10, memory_budget_mb=0)


def test_env_budget(monkeypatch):
    monkeypatch.setenv("RECPRESS_MEMORY_BUDGET_MB", "2")
    assert chunk_rows(1000) == 2 * 2**20 // 8000


def test_small_budget_same_metrics_in_many_chunks(wide):
    split, model = wide
    small = evaluate(model, split, ks=(10, 50), memory_budget_mb=1.0, per_user=True)
    big = evaluate(model, split, ks=(10, 50), memory_budget_mb=1024.0, per_user=True)
    assert small.n_chunks > 5 and big.n_chunks == 1
    for name, value in big.metrics.items():
        assert small.metrics[name] == pytest.approx(value, abs=1e-9)
        np.testing.assert_allclose(small.per_user[name], big.per_user[name], atol=1e-9)


def test_teacher_lists_same_under_small_budget(wide):
    split, model = wide
    small = Knowledge(split, teacher=model, memory_budget_mb=1.0)
    big = Knowledge(split, teacher=model, memory_budget_mb=1024.0)
    assert small._chunk() < split.n_users <= big._chunk()
    a, b = small.user_topk(20), big.user_topk(20)
    # the same items (ties aside: compare the teacher scores of the listed items)
    sa = model.score_items(torch.arange(split.n_users), a.long())
    sb = model.score_items(torch.arange(split.n_users), b.long())
    torch.testing.assert_close(sa, sb, atol=1e-6, rtol=0)
    train = split.train
    rows = np.repeat(np.arange(split.n_users), 20)
    assert not np.asarray(train[rows, a.numpy().ravel()]).any()  # training items excluded


def test_peak_memory_reports_rss():
    mem = peak_memory()
    assert mem["peak_rss_mb"] > 10
