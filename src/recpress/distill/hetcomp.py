"""HetComp: distillation from the training trajectories of several heterogeneous teachers
(docs/methods.md §4.12).

Knowledge. Teacher x gives C_x per-user top-K unobserved lists π^{x,c}_u kept at chosen
training epochs (its trajectory, ``recpress trajectories``), the last one the converged model.
Each (teacher, user) pair has a current checkpoint v_{x,u}, initially 0. The ensemble target:

    imp_u(i) = Σ_x exp(−rank(i, π^{x,v_{x,u}}_u) / T_e)     (0-based rank; 0 outside the list)
    T_u = the K items of largest imp_u                        (`ensemble_targets`)

(the lists exclude training items, so they never enter T_u). P_u: the user's training items
ordered by the teachers' final scores (each teacher ranks them, importances exp(−rank/T_e)
summed; file order without teacher scores), the first n_pos kept, −1 padded
(`order_positives`).

DKC (`dkc_update`), at the start of epoch e = p, 2p, … while some v < C − 1, from the
student's top-m unobserved items S_u (m = dkc_k) and d(S, π) = 1 − NDCG_u(S, π)
(`ndcg_agreement`): the first call stores d_last = d(S_u, π^{x,1}); a later call, with
th = α·0.995^⌊e/p⌋, takes d_next = d(S_u, π^{x,v+1}) for every pair with v < C − 1 and advances
(v ← v + 1, d_last ← d(S_u, π^{x,min(v+1, C−1)})) when d_next = 0, d_last/d_next > th or
d_last/d_next < 1.

Transfer, per unique batch user, over the whole catalogue (student score rows
(|U_b|, n_items)). Phase 1, while some teacher's user-mean v rounded to 2 decimals is below
C − 1 (`overall_loss`):

    L_ov(u) = Σ_{i ∈ P_u ∪ T_u} softplus(LSE_{N_u}(s) − s_ui),     N_u = I \\ (O_u ∪ T_u)

which is −Σ [s_ui − log(exp(s_ui) + Σ_{j∈N_u} exp(s_uj))]. Phase 2, for good (`rank_loss`):

    PL(ℓ; R) = −Σ_k [s_{ℓ_k} − LSE({s_{ℓ_k}, …, s_{ℓ_|ℓ|}} ∪ {s_j : j ∈ R})]
    L_rk(u) = PL(P_u; R_50) + ½·[PL(T_u[:50]; R_50) + PL(T_u[:10]; R_10)],
    R_n = I \\ (O_u ∪ T_u[:n])

The distiller's loss is overall_weight·Σ_u L_ov (phase 1) or Σ_u L_rk (phase 2); with λ = 0.005
(``default_weight``) and overall_weight = 2 this is the re-implementation's
L = L_BPR + λ·(2·Σ L_ov or Σ L_rk). Log-sum-exps are exact: one masked LSE over N_u per user,
the larger rest sets R_50 ⊇ N_u and R_10 ⊇ R_50 added by log-add-exp, PL suffixes by a
reversed log-cumsum-exp (as RRD).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.common import student_topk
from recpress.distill.registry import register
from recpress.distill.relaxed_ranking import _is_dot_model
from recpress.errors import ConfigError
from recpress.models.base import Recommender, TripletBatch

__all__ = [
    "HetComp",
    "Workspace",
    "dot_excluded_lse",
    "dkc_update",
    "ensemble_targets",
    "excluded_lse",
    "ndcg_agreement",
    "order_positives",
    "overall_loss",
    "plackett_luce",
    "rank_loss",
]

#: stands in for the score of a missing (−1 padded or excluded) entry: finite, so no NaN
_MISSING = -1e30
#: (user, item) pairs scored at once when ordering the training items by a teacher
_PAIRS_PER_CHUNK = 1 << 16


# -- pure pieces (each tested against a per-user loop) ----------------------------------------
def ndcg_agreement(student_top: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
    """NDCG_u(S, π) of the student lists S (U, m) against teacher lists π (..., U, L).

    NDCG_u = Σ_{t<m} 1[S_t ∈ π[:m]]·g_t/log2(t+2) / Σ_{t<m} g_t/log2(t+2), with
    g_t = 2^{exp(−t/10)} − 1 indexed by the student position t; −1 entries never match.
    Returns (..., U) float64.
    """
    m = student_top.shape[-1]
    ref = lists[..., :m]
    lead = ref.shape[:-1]
    flat_ref = torch.sort(ref.reshape(-1, ref.shape[-1]).to(torch.int64), dim=1).values
    flat_s = student_top.to(torch.int64).expand(*lead, m).reshape(-1, m).contiguous()
    pos = torch.searchsorted(flat_ref.contiguous(), flat_s).clamp_max(flat_ref.shape[1] - 1)
    member = (torch.gather(flat_ref, 1, pos) == flat_s) & (flat_s >= 0)
    t = torch.arange(m, dtype=torch.float64, device=student_top.device)
    w = (torch.pow(2.0, torch.exp(-t / 10.0)) - 1.0) / torch.log2(t + 2.0)
    return ((member.to(torch.float64) * w).sum(1) / w.sum()).view(lead)


def dkc_update(
    v: torch.Tensor,
    d_last: torch.Tensor,
    n_checkpoints: torch.Tensor,
    dist: torch.Tensor,
    epoch: int,
    period: int,
    alpha: float,
    first: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DKC call: new (v, d_last), both (X, U).

    v (X, U) int64 current checkpoints, d_last (X, U) float64, n_checkpoints (X,) int64 C_x,
    dist (X, C_max, U) float64 the distances d(S_u, π^{x,c}) to every checkpoint. First call:
    d_last = dist at checkpoint min(1, C−1), v kept. Later: see the module docstring.
    """
    last = (n_checkpoints - 1).unsqueeze(1).expand_as(v)

    def at(c: torch.Tensor) -> torch.Tensor:
        return dist.gather(1, c.unsqueeze(1)).squeeze(1)

    if first:
        return v.clone(), at(torch.minimum(torch.ones_like(v), last))
    th = alpha * 0.995 ** (epoch // period)
    d_next = at(torch.minimum(v + 1, last))
    ratio = torch.where(d_next > 0, d_last / d_next.clamp_min(1e-300), torch.zeros_like(d_last))
    advance = (v < last) & ((d_next == 0) | (ratio > th) | (ratio < 1))
    v_new = v + advance.to(v.dtype)
    d_new = torch.where(advance, at(torch.minimum(v_new + 1, last)), d_last)
    return v_new, d_new


def ensemble_targets(lists: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """T_u: the k items of largest Σ_x exp(−rank_x(i)/T_e) over the teachers' current lists.

    lists (X, U, L) int item ids best-first, −1 padded → (U, k) int64, −1 padded when fewer
    than k distinct items are listed. Ties keep the smaller item id first.
    """
    n_t, n_u, n_l = lists.shape
    cand = lists.permute(1, 0, 2).reshape(n_u, n_t * n_l).to(torch.int64)
    rank = torch.arange(n_l, dtype=torch.float64, device=lists.device).repeat(n_t)
    imp = torch.exp(-rank / temperature).unsqueeze(0).expand(n_u, -1)
    imp = torch.where(cand >= 0, imp, torch.zeros_like(imp))
    items, perm = torch.sort(cand, dim=1, stable=True)
    imp = torch.gather(imp, 1, perm)
    start = torch.ones_like(items, dtype=torch.bool)
    start[:, 1:] = items[:, 1:] != items[:, :-1]
    run = torch.cumsum(start.to(torch.int64), 1) - 1
    total = torch.zeros_like(imp).scatter_add_(1, run, imp).gather(1, run)
    keep = start & (items >= 0)
    total = torch.where(keep, total, torch.full_like(total, -math.inf))
    order = torch.sort(total, dim=1, descending=True, stable=True).indices[:, :k]
    out = torch.gather(items, 1, order)
    out[torch.isneginf(torch.gather(total, 1, order))] = -1
    if out.shape[1] < k:
        out = F.pad(out, (0, k - out.shape[1]), value=-1)
    return out


def order_positives(
    items: torch.Tensor, teacher_scores: list[torch.Tensor], n_pos: int, temperature: float
) -> torch.Tensor:
    """P_u: the first n_pos training items by the teachers' ensemble order.

    items (U, D) the user's training items in file order, −1 padded; teacher_scores: one
    (U, D) score matrix per teacher with scores (may be empty: file order). Each teacher ranks
    the user's items (0 = its best), importance exp(−rank/T_e), summed over teachers; ties keep
    file order. Returns (U, n_pos) int64, −1 padded.
    """
    valid = items >= 0
    total = torch.zeros(items.shape, dtype=torch.float64, device=items.device)
    for s in teacher_scores:
        s = s.to(torch.float64).masked_fill(~valid, -math.inf)
        order = torch.sort(s, dim=1, descending=True, stable=True).indices
        pos = torch.arange(items.shape[1], dtype=torch.float64, device=items.device)
        rank = torch.empty_like(total).scatter_(1, order, pos.expand_as(total).contiguous())
        total += torch.exp(-rank / temperature)
    total = total.masked_fill(~valid, -math.inf)
    order = torch.sort(total, dim=1, descending=True, stable=True).indices[:, :n_pos]
    out = torch.gather(items.to(torch.int64), 1, order)
    if out.shape[1] < n_pos:
        out = F.pad(out, (0, n_pos - out.shape[1]), value=-1)
    return out


def _masked_lse(scores: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """(B,) log-sum-exp of each row of scores (B, n) over the entries not `excluded`."""
    return torch.logsumexp(scores.masked_fill(excluded, _MISSING), dim=1)


class Workspace:
    """A (B, n) float buffer reused by the fused LSE from batch to batch (one per distiller).

    Each forward takes it over (``generation`` + 1); its backward checks that no later
    forward did, so two losses computed before one backward fail loudly instead of silently.
    """

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None
        self.generation = 0

    def take(self, shape: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, int]:
        n = shape[0] * shape[1]
        b = self.buf
        if b is None or b.numel() < n or b.dtype != like.dtype or b.device != like.device:
            self.buf = b = torch.empty(n, dtype=like.dtype, device=like.device)
        self.generation += 1
        return b[:n].view(shape), self.generation

    def check(self, generation: int) -> None:
        if generation != self.generation:
            raise RuntimeError(
                "HetComp: backward of a loss whose workspace a later loss call reused; call "
                "backward before the next loss (as the trainer does)"
            )


def _exp_rows_(e: torch.Tensor, m: torch.Tensor, rows, cols, rescore) -> torch.Tensor:
    """`e` (B, n) holds exp(s − m) for a per-row shift m (B, 1) ≥ the row's max score: zero
    the entries (rows, cols) in place and return Σ (B, 1). Rows whose kept mass underflows
    (every kept score ~69 or more below m) are redone from ``rescore(row ids)`` with the max of
    their kept entries, updating m in place."""
    e[rows, cols] = 0.0
    total = e.sum(1, keepdim=True)
    low = (total < 1e-30).squeeze(1)
    if bool(low.any()):
        low_rows = low.nonzero().squeeze(1)
        excluded = torch.zeros(e.shape, dtype=torch.bool, device=e.device)
        excluded[rows, cols] = True
        kept = rescore(low_rows).masked_fill(excluded[low_rows], -math.inf)
        m_low = kept.amax(1, keepdim=True)
        m_low = torch.where(torch.isfinite(m_low), m_low, torch.zeros_like(m_low))
        e[low_rows] = (kept - m_low).exp()
        m[low_rows] = m_low
        total[low_rows] = e[low_rows].sum(1, keepdim=True)
    return total


def _softmax_grad_(e: torch.Tensor, total: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """∂lse/∂scores · grad = e / Σ e · grad, in place in e (an empty row gets 0)."""
    tiny = torch.finfo(total.dtype).tiny
    return e.mul_(grad.unsqueeze(1) / total.clamp_min(tiny))


class _ExcludedLSE(torch.autograd.Function):
    """lse[b] = log Σ_{j not excluded} exp(scores[b, j]) (excluded entries as (rows, cols)),
    in a workspace copy of the scores: no (B, n) mask and one pass for the backward."""

    @staticmethod
    def forward(ctx, scores, rows, cols, ws):
        e, ctx.generation = ws.take(tuple(scores.shape), scores)
        m = scores.amax(1, keepdim=True)
        torch.sub(scores, m, out=e).exp_()
        total = _exp_rows_(e, m, rows, cols, lambda r: scores[r])
        ctx.e, ctx.total, ctx.ws = e, total, ws
        return (m + torch.log(total)).squeeze(1)

    @staticmethod
    def backward(ctx, grad):
        ctx.ws.check(ctx.generation)
        return _softmax_grad_(ctx.e, ctx.total, grad), None, None, None


class _DotExcludedLSE(torch.autograd.Function):
    """The same LSE of the scores u @ itemsᵀ (u (B, d), items (n, d)), computed into the
    workspace: the score rows are never a separate tensor. The shift is each row's max score
    m_b = max_i s_bi, taken from the product in place (a bound such as ‖u_b‖·max_i ‖v_i‖ saves
    that pass but grows loose as a student's norms grow, and every row whose kept mass then
    underflows has to be scored again). Backward: G = softmax·grad, ∂u = G @ items,
    ∂items = Gᵀ @ u."""

    @staticmethod
    def forward(ctx, u, items, rows, cols, ws):
        e, ctx.generation = ws.take((u.shape[0], items.shape[0]), u)
        torch.mm(u, items.T, out=e)
        m = e.amax(1, keepdim=True)
        e.sub_(m).exp_()
        total = _exp_rows_(e, m, rows, cols, lambda r: u[r] @ items.T)
        ctx.save_for_backward(u, items)
        ctx.e, ctx.total, ctx.ws = e, total, ws
        return (m + torch.log(total)).squeeze(1)

    @staticmethod
    def backward(ctx, grad):
        ctx.ws.check(ctx.generation)
        u, items = ctx.saved_tensors
        g = _softmax_grad_(ctx.e, ctx.total, grad)
        grad_u = g @ items if ctx.needs_input_grad[0] else None
        grad_items = g.T @ u if ctx.needs_input_grad[1] else None
        return grad_u, grad_items, None, None, None


def excluded_lse(
    scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, ws: Workspace | None = None
) -> torch.Tensor:
    """(B,) log-sum-exp of each row of scores (B, n) without the entries (rows[j], cols[j]):
    the value and gradient of `torch.logsumexp` over a masked copy, in fewer passes
    (`ws`: a reused buffer; default a fresh one)."""
    return _ExcludedLSE.apply(scores, rows, cols, ws or Workspace())


def dot_excluded_lse(
    u: torch.Tensor,
    items: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """`excluded_lse` of the scores u @ itemsᵀ (u (B, d), items (n, d)) without materialising
    them as their own tensor."""
    return _DotExcludedLSE.apply(u, items, rows, cols, ws or Workspace())


def _lse_of(s: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(torch.where(valid, s, torch.full_like(s, _MISSING)), dim=1)


def plackett_luce(s: torch.Tensor, valid: torch.Tensor, lse_rest: torch.Tensor) -> torch.Tensor:
    """PL(ℓ; R) per row: list scores s (B, L) best-first, valid (B, L), lse_rest (B,) = LSE of
    the scores of R → (B,). Invalid (padding) entries take no part."""
    if s.shape[1] == 0:
        return s.sum(1)
    x = torch.where(valid, s, torch.full_like(s, _MISSING))
    suffix = torch.flip(torch.logcumsumexp(torch.flip(x, [1]), dim=1), [1])
    term = x - torch.logaddexp(suffix, lse_rest.unsqueeze(1))
    return -torch.where(valid, term, torch.zeros_like(term)).sum(1)


def _overall_terms(lse_n: torch.Tensor, s: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    term = F.softplus(lse_n.unsqueeze(1) - s)
    return torch.where(valid, term, torch.zeros_like(term)).sum(1)


def _rank_terms(lse_n, s_p, v_p, s_t, v_t, top: int, head: int) -> torch.Tensor:
    top = min(top, s_t.shape[1])
    head = min(head, top)
    lse_top = torch.logaddexp(lse_n, _lse_of(s_t[:, top:], v_t[:, top:]))
    lse_head = torch.logaddexp(lse_top, _lse_of(s_t[:, head:top], v_t[:, head:top]))
    pl_p = plackett_luce(s_p, v_p, lse_top)
    pl_top = plackett_luce(s_t[:, :top], v_t[:, :top], lse_top)
    pl_head = plackett_luce(s_t[:, :head], v_t[:, :head], lse_head)
    return pl_p + 0.5 * (pl_top + pl_head)


def overall_loss(
    scores: torch.Tensor, excluded: torch.Tensor, positives: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """L_ov per row (B,): scores (B, n) full student rows; excluded (B, n) bool = O_u ∪ T_u;
    positives (B, P) and targets (B, K) item ids, −1 padded."""
    idx = torch.cat([positives, targets], 1)
    s = torch.gather(scores, 1, idx.clamp_min(0))
    return _overall_terms(_masked_lse(scores, excluded), s, idx >= 0)


def rank_loss(
    scores: torch.Tensor,
    excluded: torch.Tensor,
    positives: torch.Tensor,
    targets: torch.Tensor,
    top: int = 50,
    head: int = 10,
) -> torch.Tensor:
    """L_rk per row (B,) = PL(P; R_top) + ½·[PL(T[:top]; R_top) + PL(T[:head]; R_head)].

    Same inputs as `overall_loss` (excluded = O_u ∪ T_u, so its LSE is over N_u);
    R_n = I \\ (O_u ∪ T_u[:n]) is N_u plus T_u[n:], added by log-add-exp."""
    s_t = torch.gather(scores, 1, targets.clamp_min(0))
    s_p = torch.gather(scores, 1, positives.clamp_min(0))
    lse_n = _masked_lse(scores, excluded)
    return _rank_terms(lse_n, s_p, positives >= 0, s_t, targets >= 0, top, head)


def _train_entries(
    users: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, col, offset within the row) of every training item of `users` (CSR rows)."""
    start, end = indptr[users], indptr[users + 1]
    deg = end - start
    rows = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), deg)
    first = torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
    offs = torch.arange(rows.numel(), device=users.device) - first
    cols = indices[torch.repeat_interleave(start, deg) + offs]
    return rows, cols, offs


def padded_train_items(indptr: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Every user's training items in CSR (file) order: (n_users, max degree) int64, −1 padded."""
    n = indptr.numel() - 1
    users = torch.arange(n, device=indptr.device)
    deg = indptr[1:] - indptr[:-1]
    width = int(deg.max()) if n else 0
    out = torch.full((n, max(width, 1)), -1, dtype=torch.int64, device=indptr.device)
    rows, cols, offs = _train_entries(users, indptr, indices)
    out[rows, offs] = cols
    return out


# -- the distiller ----------------------------------------------------------------------------
@register
class HetComp(Distiller):
    """HetComp (docs/methods.md §4.12); see the module docstring for lists, DKC and losses.

    Args:
        K: length of the target lists T_u (official 100; the teacher trajectories must hold at
            least K items per user).
        n_pos: length of P_u (default K // 10).
        T_e: temperature of the rank importance exp(−rank/T_e) (ensemble and P_u order).
        dkc_k: m, the length of the student list S_u and of π[:m] in the agreement (50).
        p: DKC period in epochs (10).
        alpha: α of the DKC threshold (1.05).
        rank_top / rank_head: the list lengths 50 and 10 of the rank loss.
        overall_weight: factor of Σ L_ov relative to Σ L_rk (2, as 0.01 / 0.005).
        checkpoints: trajectory epochs to use, ascending (default: every stored one).
        clamp_scores: clamp student scores to [−c, c] first (the reference clamps at 40);
            default None (exact log-sum-exps need no clamp).
        bpr: keep the student's own BPR loss (the re-implementation, default); False trains on
            the KD term alone, the original release's objective (with λ = 0.005 and
            overall_weight 2: 0.01·ΣL_ov, then 0.005·ΣL_rk).

    Each teacher (``knowledge``: a list, one per teacher) must hold trajectories; a teacher
    with C_x = 1 checkpoint is at its last checkpoint from the start.
    """

    name = "hetcomp"
    multi_teacher: ClassVar[bool] = True
    requires = frozenset({"topk"})
    default_weight = 0.005
    # bench/results/hetcomp_speed.json: ~64x the no-KD epoch at d=20 (the full score rows of
    # the batch users dominate; about IR-RRD's cost)
    epoch_cost = 60.0
    reduction = "sum"

    def __init__(
        self,
        K: int = 100,  # noqa: N803 (paper symbols)
        n_pos: int | None = None,
        T_e: float = 10.0,  # noqa: N803
        dkc_k: int = 50,
        p: int = 10,
        alpha: float = 1.05,
        rank_top: int = 50,
        rank_head: int = 10,
        overall_weight: float = 2.0,
        checkpoints: list[int] | None = None,
        clamp_scores: float | None = None,
        bpr: bool = True,
    ) -> None:
        super().__init__()
        self.bpr = bool(bpr)
        self.K, self.dkc_k, self.p = int(K), int(dkc_k), int(p)
        self.n_pos = None if n_pos is None else int(n_pos)
        self.rank_top, self.rank_head = int(rank_top), int(rank_head)
        if min(self.K, self.dkc_k, self.p, self.rank_top, self.rank_head) <= 0:
            raise ValueError("K, dkc_k, p, rank_top and rank_head must be positive")
        if self.n_pos is not None and self.n_pos <= 0:
            raise ValueError(f"n_pos must be positive, got {n_pos}")
        if self.dkc_k > self.K:
            raise ValueError(f"dkc_k ({dkc_k}) cannot exceed K ({K})")
        self.T_e, self.alpha = float(T_e), float(alpha)
        self.overall_weight = float(overall_weight)
        if self.T_e <= 0 or self.alpha <= 0:
            raise ValueError(f"T_e and alpha must be positive, got T_e={T_e} alpha={alpha}")
        self.checkpoints = None if checkpoints is None else [int(e) for e in checkpoints]
        if self.checkpoints is not None and (
            not self.checkpoints or self.checkpoints != sorted(set(self.checkpoints))
        ):
            raise ValueError(f"checkpoints must be a non-empty ascending list, got {checkpoints}")
        self.clamp_scores = None if clamp_scores is None else float(clamp_scores)
        if self.clamp_scores is not None and not self.clamp_scores > 0:
            raise ValueError(f"clamp_scores must be positive, got {clamp_scores}")
        # curriculum state (checkpointed): v, d_last, whether DKC ran once, the phase, T_u
        self.register_buffer("v", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer("d_last", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))
        self.register_buffer("phase", torch.ones((), dtype=torch.int64))
        self.register_buffer("targets", torch.zeros(0, 0, dtype=torch.int64))
        # from prepare (not checkpointed): trajectories, C_x, P_u, the training CSR
        self.register_buffer("lists", torch.zeros(0, 0, 0, 0, dtype=torch.int32), persistent=False)
        self.register_buffer("n_ckpt", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("positives", torch.zeros(0, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("indptr", torch.zeros(1, dtype=torch.int64), persistent=False)
        self.register_buffer("indices", torch.zeros(0, dtype=torch.int64), persistent=False)
        #: trajectory epochs used, per teacher (for logs)
        self.teacher_epochs: list[list[int]] = []
        self._ws = Workspace()

    def get_params(self) -> dict[str, object]:
        return {
            "K": self.K,
            "n_pos": self.n_pos,
            "T_e": self.T_e,
            "dkc_k": self.dkc_k,
            "p": self.p,
            "alpha": self.alpha,
            "rank_top": self.rank_top,
            "rank_head": self.rank_head,
            "overall_weight": self.overall_weight,
            "checkpoints": self.checkpoints,
            "clamp_scores": self.clamp_scores,
            "bpr": self.bpr,
        }

    # -- preparation ------------------------------------------------------------------------
    def _teacher_lists(self, knowledge, index: int) -> torch.Tensor:
        """(C, n_users, K) int32 lists of one teacher at the chosen checkpoints."""
        traj = knowledge.trajectories(needed_by=self.name)
        where = getattr(knowledge, "run_dir", None) or f"#{index + 1}"
        epochs = [int(e) for e in traj.epochs]
        lists = torch.as_tensor(traj.lists)
        order = sorted(range(len(epochs)), key=epochs.__getitem__)
        epochs, lists = [epochs[i] for i in order], lists[order]
        if self.checkpoints is not None:
            missing = [e for e in self.checkpoints if e not in epochs]
            if missing:
                raise ConfigError(
                    f"method 'hetcomp': teacher {where} has no trajectory lists at epochs "
                    f"{missing}; it has {epochs} (make more with `recpress trajectories "
                    f"{where} --epochs ...`)",
                    field="distill.params.hetcomp.checkpoints",
                )
            keep = [epochs.index(e) for e in self.checkpoints]
            epochs, lists = list(self.checkpoints), lists[keep]
        if lists.shape[2] < self.K:
            raise ConfigError(
                f"method 'hetcomp': teacher {where} has top-{lists.shape[2]} trajectory lists, "
                f"fewer than K={self.K}; lower K or remake them with `recpress trajectories "
                f"{where} --epochs {','.join(map(str, epochs))} --k {self.K}`",
                field="distill.params.hetcomp.K",
            )
        self.teacher_epochs.append(epochs)
        return lists[:, :, : self.K].to(torch.int32)

    @property
    def keeps_base_loss(self) -> bool:
        """False drops the student's base loss from the objective (``bpr=False``)."""
        return self.bpr

    def check_teachers(self, knowledge) -> None:
        """Every teacher has trajectories of this split with the checkpoints and K asked."""
        teachers = list(knowledge) if isinstance(knowledge, (list, tuple)) else [knowledge]
        for i, k in enumerate(teachers):
            self._teacher_lists(k, i)
        self.teacher_epochs = []

    def prepare(self, teacher: Recommender | None, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise ConfigError("method 'hetcomp' needs teacher knowledge (trajectories)")
        teachers = list(knowledge) if isinstance(knowledge, (list, tuple)) else [knowledge]
        if not teachers:
            raise ConfigError("method 'hetcomp' needs at least one teacher")
        self.teacher_epochs = []
        per = [self._teacher_lists(k, i) for i, k in enumerate(teachers)]
        c_max = max(t.shape[0] for t in per)
        # a teacher with fewer checkpoints repeats its last list (never reached past C_x − 1)
        padded = [torch.cat([t, t[-1:].expand(c_max - t.shape[0], -1, -1)]) for t in per]
        self.lists = torch.stack(padded)
        self.n_ckpt = torch.tensor([t.shape[0] for t in per], dtype=torch.int64)
        indptr, indices = split.train_tensors("cpu")
        self.indptr, self.indices = indptr.to(torch.int64), indices.to(torch.int64)
        items = padded_train_items(self.indptr, self.indices)
        scores = [self._train_scores(k, items) for k in teachers if "scores" in k.provides]
        n_pos = self.n_pos if self.n_pos is not None else max(1, self.K // 10)
        self.positives = order_positives(items, scores, n_pos, self.T_e)
        n_u = split.n_users
        self.v = torch.zeros(len(teachers), n_u, dtype=torch.int64)
        self.d_last = torch.zeros(len(teachers), n_u, dtype=torch.float64)
        self.started = torch.zeros((), dtype=torch.bool)
        self.phase = torch.tensor(self._phase_of(self.v), dtype=torch.int64)
        self.targets = self._targets()

    @staticmethod
    @torch.no_grad()
    def _train_scores(knowledge, items: torch.Tensor) -> torch.Tensor:
        """(U, D) teacher scores of the padded training items (chunks of user rows)."""
        n_u, width = items.shape
        out = torch.empty(items.shape, dtype=torch.float32)
        step = max(1, _PAIRS_PER_CHUNK // width)
        for s in range(0, n_u, step):
            users = torch.arange(s, min(s + step, n_u))
            got = knowledge.score_items(users, items[s : s + step].clamp_min(0))
            out[s : s + step] = got.float().cpu()
        return out

    def _phase_of(self, v: torch.Tensor) -> int:
        mean = torch.round(v.to(torch.float64).mean(1) * 100) / 100
        return 2 if bool((mean >= (self.n_ckpt.to(mean.device) - 1)).all()) else 1

    def _targets(self) -> torch.Tensor:
        n_t, _, n_u, k = self.lists.shape
        idx = self.v.view(n_t, 1, n_u, 1).expand(n_t, 1, n_u, k)
        current = self.lists.gather(1, idx).squeeze(1)
        return ensemble_targets(current, self.K, self.T_e)

    # -- per epoch: DKC ---------------------------------------------------------------------
    @torch.no_grad()
    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        if epoch < self.p or epoch % self.p:
            return
        last = (self.n_ckpt - 1).unsqueeze(1)
        if not bool((self.v < last).any()):
            return
        dev = self.v.device
        top, vals = student_topk(student, self.dkc_k, (self.indptr, self.indices), dev)
        top = torch.where(torch.isneginf(vals), torch.full_like(top, -1), top)
        dist = 1.0 - ndcg_agreement(top, self.lists)  # (X, C_max, U)
        first = not bool(self.started)
        v, d_last = dkc_update(
            self.v, self.d_last, self.n_ckpt, dist, epoch, self.p, self.alpha, first
        )
        self.v.copy_(v)
        self.d_last.copy_(d_last)
        self.started.fill_(True)
        if int(self.phase) == 1 and self._phase_of(self.v) == 2:
            self.phase.fill_(2)
        if not first:
            self.targets.copy_(self._targets())

    # -- per batch --------------------------------------------------------------------------
    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = torch.unique(batch.users.to(self.v.device))
        targets, positives = self.targets[users], self.positives[users]
        idx = torch.cat([positives, targets], 1)
        valid = idx >= 0
        rows, cols, _ = _train_entries(users, self.indptr, self.indices)
        n_p = positives.shape[1]
        t_rows = torch.arange(users.numel(), device=users.device).unsqueeze(1).expand_as(targets)
        v_t = valid[:, n_p:]
        rows = torch.cat([rows, t_rows[v_t]])
        cols = torch.cat([cols, targets[v_t]])
        # the list scores by their own lookup (a gather from the (|U_b|, n_items) rows would
        # cost two more passes over them in the backward); the rows only feed the LSE over N_u
        listed = student.score_items(users, idx.clamp_min(0)).float()
        if self.clamp_scores is None and _is_dot_model(student):
            u = student.user_embeddings(users)
            lse_n = dot_excluded_lse(u, student.item_embeddings(), rows, cols, self._ws)
        else:
            scores = student.score(users).float()
            if self.clamp_scores is not None:
                scores = scores.clamp(-self.clamp_scores, self.clamp_scores)
                listed = listed.clamp(-self.clamp_scores, self.clamp_scores)
            lse_n = excluded_lse(scores, rows, cols, self._ws)
        if int(self.phase) == 1:
            return self.overall_weight * _overall_terms(lse_n, listed, valid).sum()
        per = _rank_terms(
            lse_n, listed[:, :n_p], valid[:, :n_p], listed[:, n_p:], v_t,
            self.rank_top, self.rank_head,
        )  # fmt: skip
        return per.sum()

    def extra_state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "v": self.v,
            "d_last": self.d_last,
            "started": self.started,
            "phase": self.phase,
            "targets": self.targets,
        }

    def load_extra_state_tensors(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            getattr(self, key).copy_(value)
