"""Statistics over seeds and between methods (docs/methods.md §2.4: mean ± std, paired t-test).

* `mean_std`: mean and sample standard deviation (ddof=1 by default) of one metric over seeds.
* `aggregate_seeds`: the same for every metric of several runs (dicts or `EvalResult`s).
* `paired_ttest`: two-sided paired t-test (``scipy.stats.ttest_rel``) on per-user values of one
  metric for two methods evaluated on the same users; returns t, p, mean difference (a − b), n.
* `one_sided_ttest_below`: one-sample one-sided t-test of seed values against a single
  reference value (H1: the mean is below it), e.g. our seeds against an author's logged run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

from recpress.evaluation.ranking import EvalResult


def mean_std(values: Iterable[float], ddof: int = 1) -> tuple[float, float]:
    """(mean, std) of `values` with ``ddof`` (1 = sample std). std is NaN when len <= ddof."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(arr.std(ddof=ddof)) if arr.size > ddof else float("nan")
    return float(arr.mean()), std


def format_mean_std(mean: float, std: float, digits: int = 4) -> str:
    """``"0.1234 ± 0.0012"``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def aggregate_seeds(
    runs: Sequence[Mapping[str, float] | EvalResult], ddof: int = 1
) -> dict[str, dict[str, float]]:
    """Mean ± std over runs (one per seed) for every metric present in all runs.

    Returns ``{"recall@50": {"mean": m, "std": s, "n": n_runs}, ...}``.
    """
    dicts = [r.metrics if isinstance(r, EvalResult) else dict(r) for r in runs]
    if not dicts:
        raise ValueError("aggregate_seeds needs at least one run")
    names = [k for k in dicts[0] if all(k in d for d in dicts[1:])]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        m, s = mean_std((d[name] for d in dicts), ddof=ddof)
        out[name] = {"mean": m, "std": s, "n": len(dicts)}
    return out


@dataclass(frozen=True)
class TTestResult:
    """t-test outcome: statistic t, p-value (two-sided for `paired_ttest`, one-sided for
    `one_sided_ttest_below`), mean difference, number of pairs or values."""

    t: float
    p: float
    mean_diff: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_user(x: EvalResult, metric: str | None) -> tuple[np.ndarray, np.ndarray]:
    if metric is None:
        raise ValueError("pass metric=... (e.g. 'recall@50') when comparing EvalResults")
    if x.per_user is None:
        raise ValueError("EvalResult has no per-user values; evaluate(..., per_user=True)")
    if metric not in x.per_user:
        raise KeyError(f"metric {metric!r} not in per-user results: {sorted(x.per_user)}")
    return np.asarray(x.users), np.asarray(x.per_user[metric], dtype=np.float64)


def paired_ttest(
    a: EvalResult | Sequence[float] | np.ndarray,
    b: EvalResult | Sequence[float] | np.ndarray,
    metric: str | None = None,
) -> TTestResult:
    """Two-sided paired t-test of per-user metric values, method `a` vs method `b`.

    Args:
        a, b: per-user values aligned element-wise (same users, same order), or two
            `EvalResult`s computed with ``per_user=True``; for results, `metric` names the
            metric and the users are matched by id (the intersection is used).
        metric: metric name such as "ndcg@20" (required for `EvalResult` inputs).

    Returns:
        `TTestResult` with t and p from ``scipy.stats.ttest_rel(a, b)``, ``mean_diff =
        mean(a − b)`` and the number of pairs n. When all differences are zero t and p are NaN.
    """
    if isinstance(a, EvalResult) or isinstance(b, EvalResult):
        if not (isinstance(a, EvalResult) and isinstance(b, EvalResult)):
            raise TypeError("pass two EvalResults or two arrays, not one of each")
        ua, va = _per_user(a, metric)
        ub, vb = _per_user(b, metric)
        common, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
        xa, xb = va[ia], vb[ib]
    else:
        xa = np.asarray(a, dtype=np.float64).ravel()
        xb = np.asarray(b, dtype=np.float64).ravel()
        if xa.shape != xb.shape:
            raise ValueError(f"paired samples differ in length: {xa.size} vs {xb.size}")
    n = int(xa.size)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    diff = xa - xb
    if np.all(diff == 0):
        t, p = float("nan"), float("nan")
    else:
        res = _sps.ttest_rel(xa, xb)
        t, p = float(res.statistic), float(res.pvalue)
    return TTestResult(t=t, p=p, mean_diff=float(diff.mean()), n=n)


def one_sided_ttest_below(values: Sequence[float] | np.ndarray, reference: float) -> TTestResult:
    """One-sample one-sided t-test of H0: μ ≥ `reference` against H1: μ < `reference`.

    With n values of mean m and sample std s: t = (m − reference) / (s/√n) and
    p = P(T_{n−1} ≤ t) (Student's t with n − 1 degrees of freedom). A small p says the mean is
    significantly below the reference. Returns `TTestResult` with ``mean_diff = m − reference``;
    t and p are NaN with one value (no spread to test against). When all values are equal,
    t is ±inf (p = 0 or 1) or NaN if they equal the reference.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("one_sided_ttest_below needs at least one value")
    n, diff = int(x.size), float(x.mean() - float(reference))
    if n < 2:
        return TTestResult(t=float("nan"), p=float("nan"), mean_diff=diff, n=n)
    if np.all(x == x[0]):
        if diff == 0:
            return TTestResult(t=float("nan"), p=float("nan"), mean_diff=0.0, n=n)
        return TTestResult(
            t=float("inf") if diff > 0 else float("-inf"), p=1.0 if diff > 0 else 0.0,
            mean_diff=diff, n=n,
        )  # fmt: skip
    t = diff / (float(x.std(ddof=1)) / np.sqrt(n))
    return TTestResult(t=float(t), p=float(_sps.t.cdf(t, df=n - 1)), mean_diff=diff, n=n)


__all__ = [
    "mean_std",
    "format_mean_std",
    "aggregate_seeds",
    "paired_ttest",
    "one_sided_ttest_below",
    "TTestResult",
]
