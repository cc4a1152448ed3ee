"""Mean ± std over seeds and the paired t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from recpress.evaluation import EvalResult, aggregate_seeds, format_mean_std, mean_std, paired_ttest


def test_mean_std_sample():
    m, s = mean_std([0.1, 0.2, 0.3])
    assert m == pytest.approx(0.2)
    assert s == pytest.approx(0.1)  # ddof=1
    assert mean_std([0.1, 0.2, 0.3], ddof=0)[1] == pytest.approx(np.std([0.1, 0.2, 0.3]))
    assert math.isnan(mean_std([0.5])[1])
    assert format_mean_std(0.12345, 0.00123) == "0.1235 ± 0.0012"


def test_aggregate_seeds():
    runs = [{"recall@50": 0.1, "ndcg@20": 0.2}, {"recall@50": 0.3, "ndcg@20": 0.4}]
    agg = aggregate_seeds(runs)
    assert agg["recall@50"]["mean"] == pytest.approx(0.2)
    assert agg["ndcg@20"]["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert agg["recall@50"]["n"] == 2


def test_paired_ttest_arrays_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.random(100)
    b = a - 0.05 + 0.1 * rng.random(100)
    res = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert res.t == pytest.approx(ref.statistic)
    assert res.p == pytest.approx(ref.pvalue)
    assert res.mean_diff == pytest.approx(np.mean(a - b))
    assert res.n == 100
    assert set(res.to_dict()) == {"t", "p", "mean_diff", "n"}


def _result(users, vals):
    return EvalResult(
        metrics={"ndcg@10": float(np.mean(vals))},
        n_users=len(users),
        users=np.asarray(users),
        phase="test",
        exclude=("train", "valid"),
        ks=(10,),
        per_user={"ndcg@10": np.asarray(vals, dtype=float)},
    )


def test_paired_ttest_eval_results_align_users():
    a = _result([0, 1, 2, 3], [0.5, 0.1, 0.9, 0.4])
    b = _result([1, 2, 3, 4], [0.0, 0.7, 0.1, 0.3])
    res = paired_ttest(a, b, metric="ndcg@10")
    ref = stats.ttest_rel([0.1, 0.9, 0.4], [0.0, 0.7, 0.1])
    assert res.n == 3
    assert res.t == pytest.approx(ref.statistic)
    assert res.mean_diff == pytest.approx(np.mean([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        paired_ttest(a, b)  # metric required


def test_paired_ttest_edge_cases():
    res = paired_ttest([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert math.isnan(res.t) and math.isnan(res.p) and res.mean_diff == 0.0
    with pytest.raises(ValueError):
        paired_ttest([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_ttest([0.1], [0.2])
