"""DCD: Dual Correction Distillation (Lee & Kim, CIKM 2021; docs/methods.md §4.10)."""

from __future__ import annotations

import torch

from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.common import batch_rows, check_choice, no_knowledge, reduce_terms
from recpress.distill.registry import register
from recpress.models.base import Recommender, TripletBatch

__all__ = ["DCD", "error_weights", "rrd_terms", "within_list_ranks"]

#: error-weight floor (multinomial sampling always defined) and weight of padded list slots
FLOOR = 1e-5
_PAD_WEIGHT = 1e-30
_NEG = -1e30  # finite stand-in for -inf on padded slots (no nan in backward)
_CHUNK = 1024


def within_list_ranks(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of each entry of each row by descending score (ties: list order)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def error_weights(
    student_rank: torch.Tensor, eps: float, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(under, over) weights (rows, N) from the student ranks of the teacher's list positions.

    under_m = tanh(max(ε·(r^S_m − m), 0)), over_m = tanh(max(ε·(m − r^S_m), 0)), m = 0..N−1,
    both floored at 1e-5; padded slots (``valid`` False) get weight 1e-30.
    """
    m = torch.arange(student_rank.shape[1], device=student_rank.device, dtype=torch.float32)
    r = student_rank.float()
    under = torch.tanh(torch.clamp(eps * (r - m), min=0.0)).clamp_min(FLOOR)
    over = torch.tanh(torch.clamp(eps * (m - r), min=0.0)).clamp_min(FLOOR)
    if valid is not None:
        under = torch.where(valid, under, torch.full_like(under, _PAD_WEIGHT))
        over = torch.where(valid, over, torch.full_like(over, _PAD_WEIGHT))
    return under, over


def rrd_terms(
    s_ordered: torch.Tensor,
    s_other: torch.Tensor,
    valid_ordered: torch.Tensor | None = None,
    valid_other: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-row RRD loss −Σ_k [s_k − LSE({s_k..s_K} ∪ other)] (rows,), overflow-free.

    The K suffix LSEs come from a reversed log-cumsum-exp, combined with LSE(other) by
    log-add-exp. Invalid entries are excluded (their scores replaced by a huge negative).
    """
    if valid_ordered is not None:
        s_ordered = torch.where(valid_ordered, s_ordered, torch.full_like(s_ordered, _NEG))
    if valid_other is not None:
        s_other = torch.where(valid_other, s_other, torch.full_like(s_other, _NEG))
    suffix = torch.logcumsumexp(s_ordered.flip(1), dim=1).flip(1)
    denom = torch.logaddexp(suffix, torch.logsumexp(s_other, dim=1, keepdim=True))
    terms = s_ordered - denom
    if valid_ordered is not None:
        terms = torch.where(valid_ordered, terms, torch.zeros_like(terms))
    return -terms.sum(1)


def _item_side_scores(student: Recommender, items: torch.Tensor, users: torch.Tensor):
    """Student scores s_{v,i} (B, K) of users (B, K) for items (B,), through score_items."""
    b, k = users.shape
    s = student.score_items(users.reshape(-1), items.repeat_interleave(k).view(-1, 1))
    return s.view(b, k)


@register
class DCD(Distiller):
    """Dual Correction Distillation: RRD on rank-discrepancy samples, user and item side.

    Every ``update_every`` epochs (R; re-implementation 1, official 3) the student rank r^S of
    each entry of the teacher's top-N lists is computed (``rank_scope`` "within" the list —
    official and RecPress default — or "full" catalogue, unmasked), giving the floored error
    weights under/over (n, N). Per batch, for every unique user: K "underestimated" positions
    ∝ under, without replacement, sorted by teacher rank (Π_u), and K "overestimated"
    positions ∝ over (Ω_u); ℓ(u) = RRD(Π_u; Ω_u). The item side does the same over the unique
    positive items of the batch with the item lists (top-N users per item).
    L = λ·(L_UCD + ``item_weight``·L_ICD), sums over unique users / items (reference).

    Per-batch draws use a generator on the data's device, seeded at each epoch start from the
    trainer's generator, so a resumed run redraws exactly.

    Args:
        k: K, sampled positions per side (re-implementation 100).
        n_list: N, teacher list length (500).
        eps: ε = 1/T (re-implementation T = 10, so 0.1).
        update_every: R, epochs between rank refreshes.
        rank_scope: "within" or "full".
        item_side: add the item-side term (the released code trains UCD + ICD).
        item_weight: λ_ICD / λ_UCD (1).
        sampling: "sample" (multinomial, paper) or "deterministic" (the K largest weights).
        reduction: "sum" (reference) or "mean"; user_weighting: "unique" (reference) or "rows".

    λ_RKD (an extra ranking-KD term named by the paper) is not part of this class: compose
    with ``rrd`` for it. Reference λ = 0.01.
    """

    name = "dcd"
    epoch_cost = 100.0
    requires = frozenset({"topk"})
    default_weight = 0.01

    def __init__(
        self,
        k: int = 100,
        n_list: int = 500,
        eps: float = 0.1,
        update_every: int = 1,
        rank_scope: str = "within",
        item_side: bool = True,
        item_weight: float = 1.0,
        sampling: str = "sample",
        reduction: str = "sum",
        user_weighting: str = "unique",
    ) -> None:
        super().__init__()
        if int(k) <= 0 or int(n_list) <= 0 or int(update_every) <= 0:
            raise ValueError("k, n_list and update_every must be positive integers")
        if int(k) > int(n_list):
            raise ValueError(f"k ({k}) must not exceed n_list ({n_list})")
        self.k = int(k)
        self.n_list = int(n_list)
        self.eps = float(eps)
        self.update_every = int(update_every)
        self.rank_scope = check_choice("rank_scope", rank_scope, ("within", "full"))
        self.item_side = bool(item_side)
        self.item_weight = float(item_weight)
        self.sampling = check_choice("sampling", sampling, ("sample", "deterministic"))
        self.reduction = check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        for side in ("user", "item"):
            e = torch.zeros(0, 0)
            self.register_buffer(f"{side}_lists", e.long(), persistent=False)
            self.register_buffer(f"{side}_under", e.clone(), persistent=True)
            self.register_buffer(f"{side}_over", e.clone(), persistent=True)
        self._gen: torch.Generator | None = None

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise no_knowledge("DCD")
        n = min(self.n_list, split.n_items)
        self.user_lists = knowledge.user_topk(n, mask_train=True).to(torch.int64).cpu()
        self.user_under = torch.zeros(split.n_users, n)
        self.user_over = torch.zeros(split.n_users, n)
        if self.item_side:
            n_i = min(self.n_list, split.n_users)
            self.item_lists = knowledge.item_topk(n_i, mask_train=True).to(torch.int64).cpu()
            self.item_under = torch.zeros(split.n_items, n_i)
            self.item_over = torch.zeros(split.n_items, n_i)

    # -- ranks and weights ----------------------------------------------------------------------
    @torch.no_grad()
    def _student_ranks(self, student: Recommender, side: str) -> torch.Tensor:
        lists = getattr(self, f"{side}_lists")
        dev = lists.device
        out = []
        n_rows = lists.shape[0]
        for s in range(0, n_rows, _CHUNK):
            rows = torch.arange(s, min(s + _CHUNK, n_rows), device=dev)
            lst = lists[rows]
            valid = lst >= 0
            cols = lst.clamp(min=0)
            if side == "user":
                sc = student.score_items(rows, cols).float()
            else:
                sc = _item_side_scores(student, rows, cols).float()
            if self.rank_scope == "within":
                sc = torch.where(valid, sc, torch.full_like(sc, -float("inf")))
                out.append(within_list_ranks(sc))
                continue
            if side == "user":
                full = student.score(rows).float()
            else:  # scores of these items for every user: (n_users, c) → (c, n_users)
                all_u = torch.arange(student.n_users, device=dev)
                full = student.score_items(all_u, rows.expand(student.n_users, -1)).float().T
            sc = torch.gather(full, 1, cols)  # self-consistent with the catalogue scores
            srt = torch.sort(full, dim=1).values.contiguous()
            above = full.shape[1] - torch.searchsorted(srt, sc.contiguous(), right=True)
            out.append(above)
        return torch.cat(out).to(dev)

    def _refresh(self, student: Recommender) -> None:
        was = student.training
        student.eval()
        for side in ("user", "item") if self.item_side else ("user",):
            lists = getattr(self, f"{side}_lists")
            under, over = error_weights(self._student_ranks(student, side), self.eps, lists >= 0)
            setattr(self, f"{side}_under", under)
            setattr(self, f"{side}_over", over)
        student.train(was)

    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        dev = self.user_lists.device
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self._gen = torch.Generator(device=dev).manual_seed(seed)
        if epoch % self.update_every == 0 or not bool((self.user_under > 0).any()):
            self._refresh(student)

    # -- sampling and loss ----------------------------------------------------------------------
    def sample_positions(
        self, under: torch.Tensor, over: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Π positions sorted ascending (teacher order), Ω positions), each (rows, K)."""
        k = min(self.k, under.shape[1])
        if self.sampling == "deterministic":
            # the K largest weights; ties broken by teacher order
            pi = torch.sort(under, dim=1, descending=True, stable=True).indices[:, :k]
            om = torch.sort(over, dim=1, descending=True, stable=True).indices[:, :k]
        else:
            pi = torch.multinomial(under, k, replacement=False, generator=generator)
            om = torch.multinomial(over, k, replacement=False, generator=generator)
        return torch.sort(pi, dim=1).values, om

    def _side_loss(self, student: Recommender, side: str, rows: torch.Tensor) -> torch.Tensor:
        lists = getattr(self, f"{side}_lists")
        under = getattr(self, f"{side}_under")[rows]
        over = getattr(self, f"{side}_over")[rows]
        if self._gen is None or self._gen.device != under.device:
            self._gen = torch.Generator(device=under.device).manual_seed(0)
        pi, om = self.sample_positions(under, over, self._gen)
        lst = lists[rows]
        it_pi, it_om = torch.gather(lst, 1, pi), torch.gather(lst, 1, om)
        v_pi, v_om = it_pi >= 0, it_om >= 0
        it_pi, it_om = it_pi.clamp(min=0), it_om.clamp(min=0)
        if side == "user":
            s_pi, s_om = student.score_items(rows, it_pi), student.score_items(rows, it_om)
        else:
            s_pi = _item_side_scores(student, rows, it_pi)
            s_om = _item_side_scores(student, rows, it_om)
        return rrd_terms(s_pi, s_om, v_pi, v_om)

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        if self.user_under.numel() == 0:
            raise no_knowledge("DCD")
        dev = self.user_lists.device
        users = batch_rows(batch.users, self.user_weighting).to(dev)
        total = reduce_terms(self._side_loss(student, "user", users), self.reduction)
        if self.item_side and self.item_weight != 0:
            items = torch.unique(batch.pos).to(dev)
            total = total + self.item_weight * reduce_terms(
                self._side_loss(student, "item", items), self.reduction
            )
        return total
