"""Top-K ranking metrics computed from a hit matrix, vectorised over users.

Conventions shared by every function here (docs/methods.md §2.1, §2.3):

* ``hits`` is a bool (or 0/1) tensor of shape (U, Kmax): ``hits[u, r]`` is True when the item
  ranked r + 1 for user u (after masking) is one of u's targets T_u. Columns beyond the ranked
  list must be False.
* ``n_targets`` is a tensor (U,) holding |T_u| >= 1. Users without targets are not part of the
  evaluated population and must be dropped by the caller; these functions raise if they see one.
* h_u@K = sum_{r <= K} hits[u, r - 1] is the number of hits in the top K.
* **User population**: the evaluator (``recpress.evaluation.evaluate``) passes only users with
  |T_u| >= 1 in the evaluated phase and at least one training item; reported values are the
  arithmetic mean of the per-user values over that population (users without targets are not
  counted as 0).
* **Masking rule**: the ranked list is built after the excluded items (by default training items,
  plus validation items at test time) have had their scores set to -inf, so they never occupy a
  rank. Ties between equal scores are broken by ``torch.topk`` order (implementation-defined);
  use distinct scores when an exact list matters.

All functions return float64 tensors of shape (U,) on the device of ``hits``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from recpress.errors import ConfigError

#: metric families in canonical order
METRICS: tuple[str, ...] = ("recall", "ndcg", "hr", "precision", "mrr")


def metric_name(metric: str, k: int) -> str:
    """Canonical name of a metric at a cut-off: ``metric_name("recall", 50) == "recall@50"``."""
    return f"{metric}@{int(k)}"


def parse_metric_name(name: str) -> tuple[str, int]:
    """Inverse of `metric_name`: ``"ndcg@20" -> ("ndcg", 20)``; raises ConfigError if malformed."""
    metric, sep, k = str(name).partition("@")
    metric = metric.strip().lower()
    if not sep or metric not in METRICS or not k.strip().isdigit() or int(k) < 1:
        raise ConfigError(
            f"bad metric name {name!r}; expected '<metric>@<K>' with metric in "
            f"{', '.join(METRICS)} and K >= 1, e.g. 'recall@50'"
        )
    return metric, int(k)


def _check(
    hits: torch.Tensor, n_targets: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if hits.dim() != 2:
        raise ValueError(f"hits must be 2-D (U, Kmax), got shape {tuple(hits.shape)}")
    n_targets = torch.as_tensor(n_targets, device=hits.device)
    if n_targets.shape != hits.shape[:1]:
        raise ValueError(
            f"n_targets must have shape ({hits.shape[0]},), got {tuple(n_targets.shape)}"
        )
    if not 1 <= int(k) <= hits.shape[1]:
        raise ValueError(f"K={k} outside 1..{hits.shape[1]} (the width of the hit matrix)")
    if n_targets.numel() and bool((n_targets < 1).any()):
        raise ValueError("every user needs |T_u| >= 1; drop users without targets first")
    return hits.to(torch.float64), n_targets.to(torch.float64)


def _discounts(kmax: int, device: torch.device) -> torch.Tensor:
    """1 / log2(r + 1) for ranks r = 1..kmax, float64."""
    ranks = torch.arange(1, kmax + 1, dtype=torch.float64, device=device)
    return 1.0 / torch.log2(ranks + 1.0)


def hits_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """h_u@K: the number of targets among the top K, float64 (U,)."""
    return hits[:, : int(k)].to(torch.float64).sum(1)


def recall_at_k(hits: torch.Tensor, n_targets: torch.Tensor, k: int) -> torch.Tensor:
    """Recall@K = h_u@K / |T_u|.

    Denominator: the user's number of targets |T_u| (not min(|T_u|, K)), so a user with more
    than K targets cannot reach 1. Population and masking: see the module docstring.
    """
    h, n = _check(hits, n_targets, k)
    return h[:, :k].sum(1) / n


def precision_at_k(hits: torch.Tensor, n_targets: torch.Tensor, k: int) -> torch.Tensor:
    """Precision@K = h_u@K / K.

    Denominator: K for every user (not min(K, |T_u|) as in the TD release's "P@K"), so a user
    with fewer than K targets cannot reach 1. Population and masking: see the module docstring.
    """
    h, _ = _check(hits, n_targets, k)
    return h[:, :k].sum(1) / float(k)


def hr_at_k(hits: torch.Tensor, n_targets: torch.Tensor, k: int) -> torch.Tensor:
    """HR@K (hit ratio) = 1[h_u@K > 0]: 1 if any target is in the top K, else 0.

    No denominator per user (an indicator); the reported value is the fraction of evaluated
    users with a hit. Population and masking: see the module docstring.
    """
    h, _ = _check(hits, n_targets, k)
    return (h[:, :k].sum(1) > 0).to(torch.float64)


def ndcg_at_k(hits: torch.Tensor, n_targets: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@K = DCG@K / IDCG@K with binary gains and log2 discount.

    DCG@K = sum_{r=1..K} 1[L_u[r] in T_u] / log2(r + 1);
    IDCG@K = sum_{r=1..min(|T_u|, K)} 1 / log2(r + 1) (the DCG of a perfect list).
    Denominator: IDCG over min(|T_u|, K) ideal hits. Population and masking: module docstring.
    """
    h, n = _check(hits, n_targets, k)
    disc = _discounts(k, h.device)
    dcg = (h[:, :k] * disc).sum(1)
    idcg_table = disc.cumsum(0)
    ideal = n.clamp(max=k).to(torch.long) - 1
    return dcg / idcg_table[ideal]


def mrr_at_k(hits: torch.Tensor, n_targets: torch.Tensor, k: int) -> torch.Tensor:
    """MRR@K = 1 / r* where r* is the rank of the first target within the top K, else 0.

    Per-user reciprocal rank (no denominator beyond r*); the reported value is its mean over
    evaluated users. Population and masking: see the module docstring.
    """
    h, _ = _check(hits, n_targets, k)
    inv_rank = 1.0 / torch.arange(1, k + 1, dtype=torch.float64, device=h.device)
    # reciprocal ranks decrease with r, so the largest one among the hits is the first hit's
    return (h[:, :k] * inv_rank).amax(1)


#: single-metric functions by family name
METRIC_FUNCTIONS = {
    "recall": recall_at_k,
    "precision": precision_at_k,
    "hr": hr_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
}


def check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    """Validate metric family names (case-insensitive); returns them lower-cased, deduplicated."""
    out: list[str] = []
    for m in metrics:
        name = str(m).strip().lower()
        if name not in METRICS:
            raise ConfigError(f"unknown metric {m!r}; known: {', '.join(METRICS)}", field="metrics")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("no metrics requested", field="metrics")
    return tuple(out)


def check_ks(ks: Iterable[int] | int) -> tuple[int, ...]:
    """Validate cut-offs: positive integers, returned sorted and deduplicated."""
    if isinstance(ks, int):
        ks = (ks,)
    try:
        vals = sorted({int(k) for k in ks})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"ks must be positive integers, got {ks!r}", field="ks") from exc
    if not vals or vals[0] < 1:
        raise ConfigError(f"ks must be positive integers, got {ks!r}", field="ks")
    return tuple(vals)


def compute_metrics(
    hits: torch.Tensor,
    n_targets: torch.Tensor,
    ks: Sequence[int] | int,
    metrics: Sequence[str] = METRICS,
) -> dict[str, torch.Tensor]:
    """Per-user values of every requested metric at every K, in one vectorised pass.

    Args:
        hits: bool (U, Kmax) hit matrix, Kmax >= max(ks).
        n_targets: (U,) target counts |T_u| >= 1.
        ks: cut-offs K.
        metrics: families among ``recall, ndcg, hr, precision, mrr``.

    Returns:
        ``{"recall@10": (U,) float64, ...}``, keyed by `metric_name`, ordered by metric then K.
        Formulas, denominators, population and masking: see the single-metric functions and the
        module docstring. The mean over users of each tensor is the reported value.
    """
    ks = check_ks(ks)
    metrics = check_metrics(metrics)
    h, n = _check(hits, n_targets, ks[-1])
    kmax = ks[-1]
    h = h[:, :kmax]
    dev = h.device
    ranks = torch.arange(1, kmax + 1, dtype=torch.float64, device=dev)
    disc = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = h.cumsum(1)  # h_u@K at column K-1
    out: dict[str, torch.Tensor] = {}
    cum_dcg = idcg_table = first_rr = None
    if "ndcg" in metrics:
        cum_dcg = (h * disc).cumsum(1)
        idcg_table = disc.cumsum(0)
    if "mrr" in metrics:
        # reciprocal ranks decrease with r: the running max is 1/r* of the first hit so far
        first_rr = (h / ranks).cummax(1).values
    for m in metrics:
        for k in ks:
            hk = cum_hits[:, k - 1]
            if m == "recall":
                val = hk / n
            elif m == "precision":
                val = hk / float(k)
            elif m == "hr":
                val = (hk > 0).to(torch.float64)
            elif m == "ndcg":
                ideal = n.clamp(max=k).to(torch.long) - 1
                val = cum_dcg[:, k - 1] / idcg_table[ideal]
            else:  # mrr
                val = first_rr[:, k - 1]
            out[metric_name(m, k)] = val
    return out


__all__ = [
    "METRICS",
    "METRIC_FUNCTIONS",
    "metric_name",
    "parse_metric_name",
    "hits_at_k",
    "recall_at_k",
    "precision_at_k",
    "hr_at_k",
    "ndcg_at_k",
    "mrr_at_k",
    "compute_metrics",
    "check_metrics",
    "check_ks",
]
