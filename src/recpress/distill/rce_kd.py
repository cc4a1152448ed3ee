"""RCE-KD: rejuvenated cross-entropy KD on the student's closed top-K (docs/methods.md §4.13).

Lists (none masks training items unless ``mask_train``):

* T_u: the teacher's top-K, computed once in ``prepare``;
* every epoch start: S^mx_u, the student's top-mxK, and S_u = S^mx_u[:K];
* every epoch start: the interesting sample A_u, L positions of S^mx_u drawn without replacement
  with P(j) ∝ exp((c_{u,j} + 1)/T_s), c_{u,j} = min(#{j' ≥ j : S^mx_{u,j'} ∈ T_u}, cap).

Per batch row b (user u = u_b), with softmaxes over the stated set, logits divided by τ and the
teacher side gradient-free:

    loss_S(u) = −Σ_{i∈S_u} softmax_{S_u}(t/τ)_i · log_softmax_{S_u}(s/τ)_i
    C_u = A_u ∪ (T_u \\ (A_u ∪ S_u)),  loss_T(u) the same CE over C_u
    w_u = exp(−β·|T_u ∩ A_u| / K)
    L_RCE = Σ_b (1 − w_u)·loss_S(u) + w_u·loss_T(u)

C_u is held as the padded list [A_u, T_u] (B, L + K) with a membership mask (T entries already
in A_u or S_u are masked out); the mask, w_u and the teacher scores of [S_u, A_u, T_u] are
computed once per epoch (one teacher pass over the users, not one per batch row).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

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
from recpress.errors import ConfigError
from recpress.models.base import Recommender, TripletBatch

#: users per step of the per-epoch bookkeeping (masks, weights, teacher scores)
EPOCH_CHUNK = 256

__all__ = ["RCEKD", "interesting_weights", "masked_soft_ce", "sample_interesting"]


def interesting_weights(
    student_lists: torch.Tensor, teacher_lists: torch.Tensor, temperature: float, cap: int
) -> torch.Tensor:
    """Sampling weights exp((c_{u,j} + 1)/T_s) of the positions of the student lists.

    student_lists (n, mxK), teacher_lists (n, K) item ids → (n, mxK) float64, where
    c_{u,j} = min(#{j' ≥ j : S^mx_{u,j'} ∈ T_u}, cap) (membership by a sorted search).
    """
    sorted_t = torch.sort(teacher_lists, dim=1).values.contiguous()
    pos = torch.searchsorted(sorted_t, student_lists.contiguous())
    pos = pos.clamp_max(sorted_t.shape[1] - 1)
    member = torch.gather(sorted_t, 1, pos) == student_lists
    suffix = torch.flip(torch.cumsum(torch.flip(member.to(torch.int64), [1]), dim=1), [1])
    count = suffix.clamp_max(int(cap)).to(torch.float64)
    return torch.exp((count + 1.0) / float(temperature))


def sample_interesting(
    student_lists: torch.Tensor,
    teacher_lists: torch.Tensor,
    n_samples: int,
    temperature: float,
    cap: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """A_u: ``n_samples`` items of each row of ``student_lists`` (n, mxK), at positions drawn
    without replacement with P ∝ `interesting_weights`, in student order: (n, L).

    One multinomial call on the CPU generator (reproducible across devices)."""
    w = interesting_weights(student_lists.cpu(), teacher_lists.cpu(), temperature, cap)
    pos = torch.multinomial(w, n_samples, replacement=False, generator=generator)
    pos = torch.sort(pos, dim=1).values.to(student_lists.device)
    return torch.gather(student_lists, 1, pos)


def masked_soft_ce(
    teacher: torch.Tensor, student: torch.Tensor, tau: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row −Σ_i softmax(t/τ)_i · log_softmax(s/τ)_i over the entries where ``mask`` is True.

    teacher, student (B, n) scores (teacher detached here), mask (B, n) bool → (B,). Masked
    entries take no part in either softmax and receive no gradient; every row needs one entry.
    """
    t = teacher.detach() / tau
    s = student / tau
    if mask is not None:
        t = t.masked_fill(~mask, float("-inf"))
        s = s.masked_fill(~mask, float("-inf"))
    p_t = torch.softmax(t, dim=-1)
    log_p_s = F.log_softmax(s, dim=-1)
    if mask is not None:
        log_p_s = log_p_s.masked_fill(~mask, 0.0)
    return -(p_t * log_p_s).sum(-1)


@register
class RCEKD(Distiller):
    """RCE-KD (docs/methods.md §4.13); see the module docstring for the loss.

    Args:
        K: list length of T_u and S_u (reference 50).
        L: size of the interesting sample A_u (50).
        mxK: length of the student list S^mx_u the sample is drawn from (200).
        T_s: sampling temperature (10).
        beta: β of the user weight w_u = exp(−β·overlap_u) (3).
        tau: softmax temperature τ (1).
        count_cap: cap of the counts c_{u,j} (50, as the reference).
        mask_train: exclude training items from T_u and S^mx_u (``topk_mask_train``; the
            reference keeps them, so False).
        reduction: "sum" (reference) or "mean" over the KD rows.
        user_weighting: "rows" (reference: one term per batch row) or "unique" users.

    K, L and mxK are capped at the number of items. Reference λ = 500 (``default_weight``);
    lr / wd 1e-3 / 1e-5, batch 2048.
    """

    name = "rce-kd"
    # rough: a quick d=20 timing on citeulike-t-td (random d=200 teacher, 1 thread, loaded
    # machine) gave about KD's epoch (1.05x): teacher scores once per epoch, student scores on
    # 2K + L items per row
    epoch_cost = 13.0
    requires = frozenset({"scores", "topk"})
    default_weight = 500.0

    def __init__(
        self,
        K: int = 50,  # noqa: N803 (paper symbols)
        L: int = 50,  # noqa: N803
        mxK: int = 200,  # noqa: N803
        T_s: float = 10.0,  # noqa: N803
        beta: float = 3.0,
        tau: float = 1.0,
        count_cap: int = 50,
        mask_train: bool = False,
        reduction: str = "sum",
        user_weighting: str = "rows",
    ) -> None:
        super().__init__()
        self.K, self.L, self.mxK, self.count_cap = int(K), int(L), int(mxK), int(count_cap)
        if min(self.K, self.L, self.mxK, self.count_cap) <= 0:
            raise ValueError(f"K, L, mxK and count_cap must be positive, got K={K} L={L} mxK={mxK}")
        if max(self.K, self.L) > self.mxK:
            raise ValueError(f"K ({K}) and L ({L}) cannot exceed mxK ({mxK})")
        self.T_s, self.beta, self.tau = float(T_s), float(beta), float(tau)
        if not (self.T_s > 0 and self.tau > 0):
            raise ValueError(f"T_s and tau must be > 0, got T_s={T_s} tau={tau}")
        self.mask_train = bool(mask_train)
        self.reduction = check_choice("reduction", reduction, ("sum", "mean"))
        self.user_weighting = check_choice("user_weighting", user_weighting, ("rows", "unique"))
        # per-epoch state (checkpointed): S_u, A_u, the T-part mask of C_u and w_u
        self.register_buffer("student_top", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer("interesting", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer("keep_teacher", torch.zeros(0, 0, dtype=torch.bool))
        self.register_buffer("user_weight", torch.zeros(0))
        # teacher scores (no gradient) of [S_u, A_u, T_u], refreshed with the lists
        self.register_buffer("teacher_scores", torch.zeros(0, 0))
        # T_u: recomputed by prepare, not checkpointed
        self.register_buffer(
            "teacher_lists", torch.zeros(0, 0, dtype=torch.int64), persistent=False
        )
        self._k, self._l, self._mxk = self.K, self.L, self.mxK  # effective, set by prepare
        self._knowledge: Any = None
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        if knowledge is None:
            raise no_knowledge("RCE-KD")
        # list lengths capped at the catalogue (as KD's k)
        self._mxk = min(self.mxK, split.n_items)
        self._k, self._l = min(self.K, self._mxk), min(self.L, self._mxk)
        object.__setattr__(self, "_knowledge", knowledge)  # never a sub-module
        self._train = split.train_tensors("cpu") if self.mask_train else None
        lists = knowledge.user_topk(self._k, mask_train=self.mask_train, needed_by=self.name)
        if bool((lists < 0).any()):
            raise ConfigError(
                f"method 'rce-kd': some users have fewer than K={self._k} unobserved items; lower "
                "K or set mask_train: false",
                field="distill.params.rce-kd",
            )
        n = split.n_users
        self.teacher_lists = lists.to(torch.int64)
        self.student_top = torch.zeros(n, self._k, dtype=torch.int64)
        self.interesting = torch.zeros(n, self._l, dtype=torch.int64)
        self.keep_teacher = torch.zeros(n, self._k, dtype=torch.bool)
        self.user_weight = torch.zeros(n)
        self.teacher_scores = torch.zeros(n, 2 * self._k + self._l)

    @torch.no_grad()
    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator) -> None:
        dev = self.teacher_lists.device
        train = None if self._train is None else tuple(t.to(dev) for t in self._train)
        top, vals = student_topk(student, self._mxk, train, dev)
        if bool(torch.isneginf(vals).any()):
            raise ConfigError(
                f"method 'rce-kd': some users have fewer than mxK={self._mxk} unobserved items; "
                "lower mxK or set mask_train: false",
                field="distill.params.rce-kd",
            )
        sample = sample_interesting(
            top, self.teacher_lists, self._l, self.T_s, self.count_cap, generator
        )
        self.student_top.copy_(top[:, : self._k])
        self.interesting.copy_(sample)
        step = EPOCH_CHUNK  # users per step: bounds the (step, 2K + L, d_t) teacher gather
        for s in range(0, top.shape[0], step):
            t = self.teacher_lists[s : s + step]
            in_a = (t.unsqueeze(2) == sample[s : s + step].unsqueeze(1)).any(2)
            in_s = (t.unsqueeze(2) == top[s : s + step, : self._k].unsqueeze(1)).any(2)
            self.keep_teacher[s : s + step] = ~(in_a | in_s)
            overlap = in_a.sum(1).to(self.user_weight.dtype) / self._k
            self.user_weight[s : s + step] = torch.exp(-self.beta * overlap)
            items = torch.cat([top[s : s + step, : self._k], sample[s : s + step], t], 1)
            users = torch.arange(s, s + items.shape[0], device=dev)
            t_scores = self._knowledge.score_items(users, items).float()
            self.teacher_scores[s : s + step] = t_scores.to(self.teacher_scores.device)

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users = batch_rows(batch.users, self.user_weighting).to(self.teacher_lists.device)
        s_list, a_list = self.student_top[users], self.interesting[users]
        items = torch.cat([s_list, a_list, self.teacher_lists[users]], 1)  # (B, 2K + L)
        t = self.teacher_scores[users]
        s = student.score_items(users, items)
        k = self._k
        loss_s = masked_soft_ce(t[:, :k], s[:, :k], self.tau)
        mask = torch.cat([torch.ones_like(a_list, dtype=torch.bool), self.keep_teacher[users]], 1)
        loss_t = masked_soft_ce(t[:, k:], s[:, k:], self.tau, mask)
        w = self.user_weight[users].to(s.dtype)
        return reduce_terms((1.0 - w) * loss_s + w * loss_t, self.reduction)

    def extra_state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "student_top": self.student_top,
            "interesting": self.interesting,
            "keep_teacher": self.keep_teacher,
            "user_weight": self.user_weight,
            "teacher_scores": self.teacher_scores,
        }

    def load_extra_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            setattr(self, key, value.to(getattr(self, key).device).clone())
