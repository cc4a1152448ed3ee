"""Full-ranking top-K evaluation: chunked, masked, vectorised, device-agnostic.

For each evaluated user the model scores the whole catalogue, the excluded items (by default the
user's training items, plus validation items at test time) get score -inf, the top-Kmax items
are taken with ``torch.topk`` and compared with the user's targets in the evaluated phase. The
metric formulas live in `recpress.evaluation.metrics` (docs/methods.md §2.1, §2.3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recpress.data.types import Split
from recpress.errors import ConfigError
from recpress.evaluation.metrics import (
    METRICS,
    check_ks,
    check_metrics,
    compute_metrics,
    metric_name,
)

#: phases that can be evaluated (the targets are that part of the split)
PHASES: tuple[str, ...] = ("valid", "test")
#: RecPress default masking per phase: training items at validation; training and validation
#: items at test. Pass `exclude` explicitly for a protocol's reference rule, e.g. `loo-full`
#: masks ("train", "test") at validation.
DEFAULT_EXCLUDE: dict[str, tuple[str, ...]] = {"valid": ("train",), "test": ("train", "valid")}
#: target number of score entries per chunk (users x items) when batch_size is not given;
#: 2**24 floats = 64 MiB, about 660 users on a 25k-item catalogue (bench/README.md, section
#: "Evaluation: chunk size"); the same as `chunk_rows` at `DEFAULT_MEMORY_BUDGET_MB`
DEFAULT_CHUNK_ELEMENTS: int = 2**24
#: working memory (MiB) one chunk of full-catalogue scores may take (evaluation, teacher top-N)
DEFAULT_MEMORY_BUDGET_MB: float = 128.0
#: live (rows, n_cols) buffers per chunk: the scores and the top-k / mask temporaries
CHUNK_COPIES: int = 2


def chunk_rows(
    n_cols: int,
    memory_budget_mb: float | None = None,
    bytes_per_entry: int = 4,
    copies: int = CHUNK_COPIES,
) -> int:
    """Rows (users) per chunk of a (rows, n_cols) score matrix under a memory budget.

    rows = max(1, ⌊budget · 2²⁰ / (n_cols · bytes_per_entry · copies)⌋). Budget None:
    ``$RECPRESS_MEMORY_BUDGET_MB`` if set, else `DEFAULT_MEMORY_BUDGET_MB` (fp32, 2 copies:
    `DEFAULT_CHUNK_ELEMENTS` entries).
    """
    if memory_budget_mb is None:
        memory_budget_mb = os.environ.get("RECPRESS_MEMORY_BUDGET_MB") or DEFAULT_MEMORY_BUDGET_MB
    try:
        budget = float(memory_budget_mb)
    except ValueError:
        budget = float("nan")
    if not budget > 0:
        raise ConfigError(
            f"memory_budget_mb must be > 0, got {memory_budget_mb}", field="memory_budget_mb"
        )
    per_row = max(int(n_cols), 1) * int(bytes_per_entry) * int(copies)
    return max(1, int(budget * 2**20) // per_row)


ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    """Outcome of one `evaluate` call.

    Attributes:
        metrics: ``{"recall@50": mean, ...}``: arithmetic mean of each per-user value over the
            evaluated users (NaN if there are none).
        n_users: number of evaluated users (|T_u| >= 1 in `phase` and >= 1 training item).
        users: int64 array (n_users,) of the evaluated internal user ids, ascending.
        phase: the evaluated part ("valid" or "test").
        exclude: the parts whose items were masked (score -inf) before ranking.
        ks: the cut-offs, ascending.
        n_users_without_targets: users with no target in `phase` (not evaluated).
        n_users_without_train: users with targets but no training item (not evaluated).
        per_user: when requested, ``{"recall@50": (n_users,) float64 array, ...}`` aligned with
            `users`; otherwise None.
        n_chunks: user chunks scored (see `chunk_rows`).
    """

    metrics: dict[str, float]
    n_users: int
    users: np.ndarray
    phase: str
    exclude: tuple[str, ...]
    ks: tuple[int, ...]
    n_users_without_targets: int = 0
    n_chunks: int = 0
    n_users_without_train: int = 0
    per_user: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def to_dict(self, per_user: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict; per-user arrays (as lists) and user ids only if `per_user`."""
        out: dict[str, Any] = {
            "phase": self.phase,
            "exclude": list(self.exclude),
            "ks": list(self.ks),
            "n_users": int(self.n_users),
            "n_users_without_targets": int(self.n_users_without_targets),
            "n_users_without_train": int(self.n_users_without_train),
            "metrics": {k: float(v) for k, v in self.metrics.items()},
        }
        if per_user:
            out["users"] = [int(u) for u in self.users]
            if self.per_user is not None:
                out["per_user"] = {k: v.tolist() for k, v in self.per_user.items()}
        return out


def default_exclude(phase: str) -> tuple[str, ...]:
    """The RecPress default masking for `phase` (see `DEFAULT_EXCLUDE`)."""
    if phase not in PHASES:
        raise ConfigError(f"unknown phase {phase!r}; use one of {', '.join(PHASES)}", field="phase")
    return DEFAULT_EXCLUDE[phase]


def _check_exclude(phase: str, exclude: Sequence[str] | str | None) -> tuple[str, ...]:
    if exclude is None:
        return default_exclude(phase)
    if isinstance(exclude, str):
        exclude = (exclude,)
    out: list[str] = []
    for name in exclude:
        if name not in ("train", "valid", "test"):
            raise ConfigError(
                f"unknown split part {name!r} in exclude; use train, valid or test", field="exclude"
            )
        if name == phase:
            raise ConfigError(
                f"cannot exclude the evaluated part {phase!r}: its items are the targets",
                field="exclude",
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def _resolve_scorer(
    model: nn.Module | ScoreFn, device: torch.device | str | None
) -> tuple[ScoreFn, nn.Module | None, torch.device]:
    module = model if isinstance(model, nn.Module) else None
    score = getattr(model, "score", None)
    if callable(score):
        fn = score
    elif module is None and callable(model):
        fn = model
    else:
        raise TypeError(
            "evaluate() needs a Recommender (with .score(users)) or a callable "
            f"score_fn(users) -> (B, n_items), got {type(model).__name__}"
        )
    if device is None:
        dev = torch.device("cpu")
        if module is not None:
            for t in list(module.parameters()) + list(module.buffers()):
                dev = t.device
                break
    else:
        dev = torch.device(device)
    return fn, module, dev


def _row_keys(mat: sp.csr_matrix, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 keys row * n_items + col of a CSR matrix, and its int64 indptr."""
    indptr = mat.indptr.astype(np.int64)
    rows = np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(indptr))
    return rows * n_items + mat.indices.astype(np.int64), indptr


def evaluate(
    model: nn.Module | ScoreFn,
    split: Split,
    ks: Sequence[int] | int = (10, 20, 50),
    phase: str = "test",
    exclude: Sequence[str] | str | None = None,
    batch_size: int | None = None,
    metrics: Sequence[str] = METRICS,
    per_user: bool = False,
    device: torch.device | str | None = None,
    shard: tuple[int, int] = (0, 1),
    memory_budget_mb: float | None = None,
) -> EvalResult:
    """Full-ranking top-K evaluation of `model` on `split`'s `phase` part.

    Protocol (docs/methods.md §2):

    * Evaluated users: users with at least one target in `phase` and at least one training
      item. Users without targets are not counted (their number is reported); metrics are the
      arithmetic mean over the evaluated users.
    * Scores: ``model.score(users)`` (B, n_items) under ``torch.no_grad()`` with the model in
      eval mode (its previous mode is restored afterwards), evaluated in user chunks.
    * Masking: the items of the parts in `exclude` get score -inf before top-K (never
      multiplied). Default: ``("train",)`` at "valid", ``("train", "valid")`` at "test".
      Any tuple of part names except the evaluated one is accepted, e.g. the `loo-full`
      reference masks ``("train", "test")`` at validation.
    * Ranking: ``torch.topk(scores, max(ks))``; ties between equal scores are broken by
      ``torch.topk`` order. An item whose score is -inf never counts as a hit (so a list
      shorter than K because of masking is padded with misses).

    Args:
        model: a Recommender (anything with ``.score(users)``), or a plain callable
            ``score_fn(users: LongTensor (B,)) -> (B, n_items)`` (e.g. a peer library's factors).
            The returned tensor is masked in place, so return a fresh tensor, not a stored one.
        split: the data split; targets are ``split.part(phase)``.
        ks: cut-offs K (each <= n_items).
        phase: "valid" or "test".
        exclude: part names to mask; None for the default of `phase`.
        batch_size: users per chunk; None sizes chunks by `memory_budget_mb`.
        metrics: families among recall, ndcg, hr, precision, mrr (names "recall@50", ...).
        per_user: also return per-user arrays (for paired tests).
        device: where user ids and masks live; default the model's parameter device (cpu for a
            callable). The model itself is not moved.
        shard: (rank, world): evaluate only the rank's contiguous part of the evaluated users
            (sizes differ by at most one); the metrics are then that part's means. Distributed
            training gathers the parts (`recpress.training.distributed.evaluate`).
        memory_budget_mb: working memory of one chunk of scores (`chunk_rows`); None is
            `DEFAULT_MEMORY_BUDGET_MB`. Ignored when `batch_size` is given.

    Returns:
        An `EvalResult`.
    """
    ks = check_ks(ks)
    metrics = check_metrics(metrics)
    if phase not in PHASES:
        raise ConfigError(f"unknown phase {phase!r}; use one of {', '.join(PHASES)}", field="phase")
    excl = _check_exclude(phase, exclude)
    n_items = split.n_items
    kmax = ks[-1]
    if kmax > n_items:
        raise ConfigError(f"K={kmax} exceeds the number of items ({n_items})", field="ks")
    if batch_size is None:
        batch_size = chunk_rows(n_items, memory_budget_mb)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")

    scorer, module, dev = _resolve_scorer(model, device)

    targets = split.part(phase)
    n_tgt_all = np.diff(targets.indptr)
    n_train_all = np.diff(split.train.indptr)
    has_tgt = n_tgt_all > 0
    users = np.flatnonzero(has_tgt & (n_train_all > 0)).astype(np.int64)
    if tuple(shard) != (0, 1):
        rank, world = int(shard[0]), int(shard[1])
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        users = users[len(users) * rank // world : len(users) * (rank + 1) // world]
    n_eval = len(users)
    names = [metric_name(m, k) for m in metrics for k in ks]
    result_kwargs = dict(
        users=users,
        phase=phase,
        exclude=excl,
        ks=ks,
        n_users_without_targets=int((~has_tgt).sum()),
        n_users_without_train=int((has_tgt & (n_train_all == 0)).sum()),
    )
    if n_eval == 0:
        return EvalResult(
            metrics={n: float("nan") for n in names},
            n_users=0,
            per_user={n: np.zeros(0) for n in names} if per_user else None,
            **result_kwargs,
        )

    # Targets and masks of the evaluated users as sorted flat keys (row * n_items + item),
    # row = position among the evaluated users; one transfer to the device.
    tgt = targets[users]
    tgt.sort_indices()
    tgt_keys_np, tgt_ptr = _row_keys(tgt, n_items)
    tgt_keys = torch.as_tensor(tgt_keys_np, device=dev)
    n_tgt = torch.as_tensor(np.diff(tgt_ptr), device=dev)
    mask_keys = None
    if excl:
        mask = split.part(excl[0])
        for name in excl[1:]:
            mask = mask + split.part(name)
        mask = sp.csr_matrix(mask)[users]
        mask_keys_np, mask_ptr = _row_keys(mask, n_items)
        mask_keys = torch.as_tensor(mask_keys_np, device=dev)
    users_t = torch.as_tensor(users, device=dev)
    neg_inf = float("-inf")

    hit_chunks: list[torch.Tensor] = []
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            for start in range(0, n_eval, batch_size):
                end = min(start + batch_size, n_eval)
                scores = scorer(users_t[start:end])
                if scores.shape != (end - start, n_items):
                    raise ValueError(
                        f"scorer returned shape {tuple(scores.shape)}, expected "
                        f"({end - start}, {n_items})"
                    )
                if not scores.is_floating_point():
                    scores = scores.float()
                elif scores._base is not None or not scores.is_contiguous():
                    # never write into the caller's storage
                    scores = scores.clone(memory_format=torch.contiguous_format)
                offset = start * n_items
                if mask_keys is not None:
                    flat = mask_keys[mask_ptr[start] : mask_ptr[end]] - offset
                    scores.view(-1).index_fill_(0, flat, neg_inf)
                top_vals, top_idx = torch.topk(scores, kmax, dim=1)
                del scores
                rows = torch.arange(start, end, device=dev, dtype=torch.int64).unsqueeze(1)
                keys = rows * n_items + top_idx
                seg = tgt_keys[tgt_ptr[start] : tgt_ptr[end]]
                pos = torch.searchsorted(seg, keys).clamp_(max=seg.numel() - 1)
                hits = (seg[pos] == keys) & (top_vals != neg_inf)
                hit_chunks.append(hits)
    finally:
        if module is not None and was_training:
            module.train()

    # one vectorised metric pass over the (n_users, Kmax) hit matrix
    per = compute_metrics(torch.cat(hit_chunks), n_tgt, ks, metrics)
    means = {n: float(v.mean().item()) for n, v in per.items()}
    return EvalResult(
        metrics=means,
        n_users=n_eval,
        per_user={n: v.cpu().numpy() for n, v in per.items()} if per_user else None,
        n_chunks=len(hit_chunks),
        **result_kwargs,
    )


def top_k_unobserved(
    model: nn.Module | ScoreFn,
    split: Split,
    k: int,
    users: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    chunk_users: int | None = None,
    exclude: Sequence[str] | str = ("train",),
) -> torch.Tensor:
    """Each user's top-`k` items among those not in `exclude` parts, best first.

    Scores come from ``model.score(users)`` (B, n_items) in user chunks under no_grad with the
    model in eval mode; the items of the `exclude` parts (default: the user's training items;
    ``()`` masks nothing) are set to -inf, then ``torch.topk`` picks k per row (ties in topk
    order). A rank whose score is -inf (the user has fewer than k allowed items) holds -1.

    Args:
        model: a Recommender or a callable ``score_fn(users) -> (B, n_items)``.
        split: gives the catalogue size and the masked parts.
        k: list length (1 <= k <= n_items).
        users: internal user ids (default: every user, 0..n_users-1).
        chunk_users: users per chunk (default about `DEFAULT_CHUNK_ELEMENTS` scores per chunk).
        exclude: part names whose items are masked.

    Returns:
        (len(users), k) int32 item ids on the CPU.
    """
    n_items = split.n_items
    k = int(k)
    if not 1 <= k <= n_items:
        raise ConfigError(f"top-K of {k} items asked; K must be in 1..{n_items}", field="k")
    if isinstance(exclude, str):
        exclude = (exclude,)
    for name in exclude:
        if name not in ("train", "valid", "test"):
            raise ConfigError(f"unknown split part {name!r} in exclude; use train, valid or test")
    scorer, module, dev = _resolve_scorer(model, None)
    if users is None:
        ids = np.arange(split.n_users, dtype=np.int64)
    else:
        ids = np.asarray(torch.as_tensor(users).cpu().numpy(), dtype=np.int64).reshape(-1)
    chunk = int(chunk_users) if chunk_users else max(1, DEFAULT_CHUNK_ELEMENTS // n_items)
    mask_keys = mask_ptr = None
    if exclude:
        mask = split.part(exclude[0])
        for name in exclude[1:]:
            mask = mask + split.part(name)
        mask_keys_np, mask_ptr = _row_keys(sp.csr_matrix(mask)[ids], n_items)
        mask_keys = torch.as_tensor(mask_keys_np, device=dev)
    users_t = torch.as_tensor(ids, device=dev)
    out = torch.empty((len(ids), k), dtype=torch.int32)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(ids), chunk):
                end = min(start + chunk, len(ids))
                scores = scorer(users_t[start:end])
                if scores.dtype != torch.float32:
                    scores = scores.float()
                elif scores._base is not None or not scores.is_contiguous():
                    scores = scores.clone(memory_format=torch.contiguous_format)
                if mask_keys is not None:
                    flat = mask_keys[mask_ptr[start] : mask_ptr[end]] - start * n_items
                    scores.view(-1).index_fill_(0, flat, float("-inf"))
                vals, idx = torch.topk(scores, k, dim=1)
                idx[torch.isneginf(vals)] = -1
                out[start:end] = idx.to(torch.int32).cpu()
    finally:
        if module is not None and was_training:
            module.train()
    return out


__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "EvalResult",
    "chunk_rows",
    "evaluate",
    "top_k_unobserved",
    "default_exclude",
    "PHASES",
    "DEFAULT_EXCLUDE",
    "ScoreFn",
]
