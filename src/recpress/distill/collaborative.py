"""CD: Collaborative Distillation (Lee et al., ICDM 2019; docs/methods.md §4.3)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from recpress.data.sampling import sample_excluding
from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.common import (
    batch_rows,
    check_choice,
    no_knowledge,
    reduce_terms,
    student_topk,
)
from recpress.distill.registry import register
from recpress.models.base import Recommender, TripletBatch

__all__ = ["CD", "rank_cdf", "tournament_pairs", "first_distinct"]


def rank_cdf(n: int, temperature: float) -> torch.Tensor:
    """CDF (n,) of p(r) ∝ exp(−r/temperature) over ranks r = 1..n (float64)."""
    r = torch.arange(1, n + 1, dtype=torch.float64)
    return torch.cumsum(torch.softmax(-r / temperature, 0), 0)


def draw_ranks(
    cdf: torch.Tensor, n_valid: torch.Tensor, shape: tuple[int, int], generator
) -> torch.Tensor:
    """0-based ranks (rows, m) from p(r) truncated to the first n_valid[row] ranks (inverse CDF)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    top = cdf[(n_valid.cpu() - 1).clamp(min=0)].unsqueeze(1)
    r = torch.searchsorted(cdf, u * top, right=True)
    return torch.minimum(r, (n_valid.cpu() - 1).clamp(min=0).unsqueeze(1))


def tournament_pairs(
    cdf: torch.Tensor, n_valid: torch.Tensor, n_pairs: int, generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-aware tournament on candidate lists sorted by descending guide score.

    Draws `n_pairs` rank pairs (r₁, r₂) per row, with replacement, from the truncated p(r);
    the winner is the better-ranked (higher guide score) of the two, i.e. min(r₁, r₂).
    Returns (r1, r2, winner), each (rows, n_pairs) int64 0-based ranks.
    """
    rows = n_valid.numel()
    r1 = draw_ranks(cdf, n_valid, (rows, n_pairs), generator)
    r2 = draw_ranks(cdf, n_valid, (rows, n_pairs), generator)
    return r1, r2, torch.minimum(r1, r2)


def first_distinct(values: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `m` distinct values of each row, in order of first appearance.

    Returns (out (rows, m), n_distinct (rows,)); rows with fewer than m distinct values are
    padded by repeating their first value.
    """
    rows, p = values.shape
    srt, order = torch.sort(values, dim=1, stable=True)
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    pos = torch.where(first, order, torch.full_like(order, p))  # first appearance positions
    n_distinct = first.sum(1)
    take = torch.sort(pos, dim=1).values[:, :m]  # earliest m distinct positions
    ok = take < p
    out = torch.gather(values, 1, take.clamp(max=p - 1))
    out = torch.where(ok, out, values[:, :1].expand(-1, m))
    return out, n_distinct


@register
class CD(Distiller):
    """Collaborative Distillation: soft-target pointwise loss on tournament-sampled items.

    Candidates are the guide's top-N unobserved items (N = ``n_candidates``, ranks 1..N);
    every epoch (student guide; once for the teacher guide) each user gets ``n_distill``
    distinct items by a rank-aware tournament: draw two ranks from p(r) ∝ exp(−r/(N·T)) with
    replacement and keep the higher-scored item, repeated until ``n_distill`` distinct items —
    vectorised by drawing ``oversample``·n_distill pairs per user at once, deduplicating, and
    redrawing the few short rows. Soft target w_uj = σ((t_uj + t₂)/t₁) (detached);
    ℓ(u) = Σ_{j∈S_u} BCE(σ(s_uj), w_uj), summed over the batch rows.

    Defaults are those of the CiteULike-BPR re-implementation (docs/methods.md §4.3)
    (λ 0.5, t₁ 2, t₂ 0, N 3000, T 20, n_distill 2, student guide; wd 1e-8, batch 2048): the
    paper gives t₁ = t₂ = 1 and δ = 0.2 but no N, T or n_distill.

    Args:
        n_candidates: N, the guide's top-N unobserved items (``sample_num``).
        temperature: T of the rank distribution.
        n_distill: distilled items per user and epoch.
        t1, t2: soft-target temperature and shift.
        guide: "student" (recomputed each epoch), "teacher" (computed once) or "random"
            (uniform unobserved items each epoch).
        oversample: pairs drawn per wanted item before deduplication.
        reduction: "sum" (reference) or "mean"; user_weighting: "rows" (reference) or "unique".
    """

    name = "cd"
    epoch_cost = 2.5
    requires = frozenset({"scores", "topk"})
    default_weight = 0.5

    def __init__(
        self,
        n_candidates: int = 3000,
        temperature: float = 20.0,
        n_distill: int = 2,
        t1: float = 2.0,
        t2: float = 0.0,
        guide: str = "student",
        oversample: int = 4,
        reduction: str = "sum",
        user_weighting: str = "rows",
    ) -> None:
        super().__init__()
        if int(n_candidates) <= 0 or int(n_distill) <= 0 or int(oversample) <= 0:
            raise ValueError("n_candidates, n_distill and oversample must be positive integers")
        if not float(temperature) > 0 or not float(t1) > 0:
            raise ValueError(f"temperature and t1 must be > 0, got {temperature}, {t1}")
        self.n_candidates = int(n_candidates)
        self.temperature = float(temperature)
        self.n_distill = int(n_distill)
        self.t1 = float(t1)
        self.t2 = float(t2)
        self.guide = check_choice("guide", guide, ("student", "teacher", "random"))
        self.oversample = int(oversample)
        self.reduction = check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        # teacher-guide candidates (n_users, N), rebuilt by prepare
        self.register_buffer("candidates", torch.zeros(0, 0, dtype=torch.int64), persistent=False)
        # selected items S (n_users, n_distill) and their teacher scores, per epoch
        self.register_buffer("selected", torch.zeros(0, 0, dtype=torch.int64), persistent=True)
        self.register_buffer("teacher_scores", torch.zeros(0, 0), persistent=True)
        self.register_buffer("sampled", torch.zeros((), dtype=torch.bool), persistent=True)
        self._knowledge: Any = None
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None
        self._n = 0

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise no_knowledge("CD")
        object.__setattr__(self, "_knowledge", knowledge)
        self._train = split.train_tensors("cpu")
        self._n = min(self.n_candidates, split.n_items)
        self.n_items = split.n_items
        if self.guide == "teacher":
            self.candidates = knowledge.user_topk(self._n, mask_train=True).to(torch.int64).cpu()
        self.selected = torch.zeros(split.n_users, self.n_distill, dtype=torch.int64)
        self.teacher_scores = torch.zeros(split.n_users, self.n_distill)
        self.sampled = torch.zeros((), dtype=torch.bool)

    def _select(self, candidates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Tournament selection from sorted candidate lists (-1 = no candidate), on the CPU."""
        candidates = candidates.cpu()
        n_valid = (candidates >= 0).sum(1)
        if bool((n_valid == 0).any()):
            raise ValueError("CD: a user has no unobserved item to distill")
        cdf = rank_cdf(candidates.shape[1], candidates.shape[1] * self.temperature)
        m = self.n_distill
        want = torch.minimum(n_valid, torch.tensor(m))
        ranks = torch.zeros(candidates.shape[0], m, dtype=torch.int64)
        todo = torch.arange(candidates.shape[0])
        n_pairs = self.oversample * m
        for _ in range(64):  # rounds over short rows, never over users
            _, _, win = tournament_pairs(cdf, n_valid[todo], n_pairs, generator)
            got, n_dist = first_distinct(win, m)
            ranks[todo] = got
            short = n_dist < want[todo]
            if not bool(short.any()):
                break
            todo = todo[short]
            n_pairs *= 2
        return torch.gather(candidates, 1, ranks)

    @torch.no_grad()
    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        if self._train is None:
            raise no_knowledge("CD")
        dev = self.selected.device
        if self.guide == "random":
            indptr, indices = self._train
            users = torch.arange(indptr.numel() - 1)
            sel = sample_excluding(
                indptr, indices, users, self.n_items, self.n_distill, generator, replacement=False
            )
        elif self.guide == "teacher":
            if bool(self.sampled):
                return  # the teacher guide samples once
            sel = self._select(self.candidates, generator)
        else:
            train = tuple(t.to(dev) for t in self._train)
            items, vals = student_topk(student, self._n, train, dev)
            items = torch.where(torch.isneginf(vals), torch.full_like(items, -1), items)
            sel = self._select(items, generator)
        sel = sel.to(dev)
        self.selected = sel
        users = torch.arange(sel.shape[0], device=dev)
        self.teacher_scores = self._knowledge.score_items(users, sel).float().to(dev)
        self.sampled.fill_(True)

    def soft_targets(self, t: torch.Tensor) -> torch.Tensor:
        """w = σ((t + t₂)/t₁), detached."""
        return torch.sigmoid((t.detach() + self.t2) / self.t1)

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = batch_rows(batch.users, self.user_weighting).to(self.selected.device)
        items = self.selected[users]
        w = self.soft_targets(self.teacher_scores[users])
        s = student.score_items(users, items)
        per_row = F.binary_cross_entropy_with_logits(s, w, reduction="none").sum(-1)
        return reduce_terms(per_row, self.reduction)
