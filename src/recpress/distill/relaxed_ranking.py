"""RRD and IR-RRD — relaxed ranking distillation (docs/methods.md §4.5, §4.7).

Per epoch, for every user: K *interesting* items from the teacher's top-N unobserved list π_u
(deterministic: the first K in teacher order — the RecPress default; ``interesting="sample"``:
positions drawn without replacement with P(p) ∝ exp(−p/T), sorted) and L *uninteresting* items
uniform without replacement from I \\ (O_u ∪ π_u). Per batch, over the unique batch users:

    L_RRD(u) = −Σ_k [ s_{u,π_k} − LSE({s_{u,π_k}, …, s_{u,π_K}} ∪ {s_uj : j ∈ L_u}) ]

computed exactly and overflow-free: the suffix LSEs by a reversed log-cumsum-exp, combined with
LSE(uninteresting) by log-add-exp. Reduction "sum" (reference, λ = 1e-3) or "mean" over users.

IR-RRD adds the item side: per epoch, for every item, K_I interesting users from the teacher's
item-side top-N and L_I uninteresting users; per batch, over the unique items sampled (both
sets) for the batch users, the same loss with users and items swapped, weighted by
``item_weight`` relative to the user side (default 0.5 = λ_IR / λ_RRD = 5e-4 / 1e-3).

The per-epoch samples are buffers (saved with the distiller's state for an exact resume).
"""

from __future__ import annotations

import warnings

import torch

from recpress.data.sampling import sample_excluding
from recpress.distill.base import Distiller
from recpress.distill.registry import register
from recpress.models.bpr import BPRMF

#: stands in for the score of a missing (−1 padded) list entry: finite, so no NaN in gradients
_MISSING = -1e30


#: the fast path (float64 exponentials shifted by the row max) is used while every row's score
#: spread stays below this, so no exponential can underflow to 0 (float64 reaches e^-745)
_FAST_SPREAD = 600.0


def _rrd_reference(s, s_un, valid):
    lse_un = torch.logsumexp(s_un, dim=1, keepdim=True)
    suffix = torch.flip(torch.logcumsumexp(torch.flip(s, [1]), dim=1), [1])
    return s - torch.logaddexp(suffix, lse_un)


def _rrd_fast(s, s_un, valid, shift):
    """Same terms with one float64 cumsum: exp(s − m) summed from the right, m = row max."""
    x = s.double() - shift
    e = torch.exp(x)
    if valid is not None:
        e = torch.where(valid, e, torch.zeros_like(e))
    tail = torch.exp(s_un.double() - shift).sum(1, keepdim=True)
    suffix = torch.flip(torch.cumsum(torch.flip(e, [1]), dim=1), [1]) + tail
    return (x - torch.log(suffix)).to(s.dtype)


def relaxed_ranking_loss(
    s_interesting: torch.Tensor, s_uninteresting: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row RRD loss: scores (B, K) in teacher order and (B, L) → (B,).

    ``valid`` (B, K) bool marks real list entries (missing ones are skipped). Computed in
    float64 from exponentials shifted by each row's maximum (one cumsum) when no row spans
    more than 600 in score; otherwise by log-cumsum-exp (always overflow-free).
    """
    s = s_interesting.float()
    s_un = s_uninteresting.float()
    # nothing to mask: skip the masking ops (same result); on CUDA the masked form is kept,
    # which saves reading `valid.all()` back to the host every batch
    if valid is not None and not s.is_cuda and bool(valid.all()):
        valid = None
    if valid is not None:
        s = torch.where(valid, s, torch.full_like(s, _MISSING))
    term = None
    if s.numel() and s_un.shape[1]:
        with torch.no_grad():
            hi = torch.maximum(s.amax(1, keepdim=True), s_un.amax(1, keepdim=True))
            lo_s = s if valid is None else torch.where(valid, s, hi.expand_as(s))
            lo = torch.minimum(lo_s.amin(1, keepdim=True), s_un.amin(1, keepdim=True))
            spread = float((hi - lo).max())
        if spread < _FAST_SPREAD:  # also False for NaN / inf
            term = _rrd_fast(s, s_un, valid, hi.double())
    if term is None:
        term = _rrd_reference(s, s_un, valid)
    if valid is not None:
        term = torch.where(valid, term, torch.zeros_like(term))
    return -term.sum(1)


def rank_sample(
    lists: torch.Tensor, k: int, temperature: float, generator: torch.Generator
) -> torch.Tensor:
    """K entries per row of `lists` (R, N) at positions drawn without replacement with
    P(p) ∝ exp(−p/T) (p = 1..N), sorted ascending (teacher order): one multinomial call."""
    n = lists.shape[1]
    w = torch.exp(-torch.arange(1, n + 1, dtype=torch.float64) / temperature)
    w = (w / w.sum()).float().unsqueeze(0).expand(lists.shape[0], n)
    pos = torch.multinomial(w, k, replacement=False, generator=generator)
    pos = torch.sort(pos, dim=1).values.to(lists.device)
    return torch.gather(lists, 1, pos)


def _limit_forbidden(lists: torch.Tensor, degree: torch.Tensor, n_cols: int, need: int):
    """Forbidden lists for sample_excluding, truncated (−1) so that every row keeps at least
    `need` allowed columns (rows whose list covers nearly everything they did not train on)."""
    room = (n_cols - degree - need).clamp_min(0).unsqueeze(1)
    pos = torch.arange(lists.shape[1], device=lists.device).unsqueeze(0)
    return torch.where(pos < room, lists, torch.full_like(lists, -1))


class _Side:
    """Per-epoch sampling for one side (rows = users for RRD, items for IR-RRD)."""

    @staticmethod
    def forbidden(lists, n_unint, indptr, n_cols):
        """The rows' extra forbidden columns for sample_excluding, each row sorted ascending
        (fixed for a run: computed once and reused every epoch)."""
        deg = indptr[1:] - indptr[:-1]
        return torch.sort(_limit_forbidden(lists, deg, n_cols, n_unint), dim=1).values

    @staticmethod
    def sample(
        lists,
        k,
        n_unint,
        temperature,
        interesting,
        indptr,
        indices,
        n_cols,
        generator,
        forbidden=None,
    ):
        if interesting == "deterministic":
            inter = lists[:, :k].clone()
        else:
            inter = rank_sample(lists, k, temperature, generator)
        rows = torch.arange(lists.shape[0], device=lists.device)
        if forbidden is None:
            forbidden = _Side.forbidden(lists, n_unint, indptr, n_cols)
        unint = sample_excluding(
            indptr,
            indices,
            rows,
            n_cols,
            n_unint,
            generator,
            extra_forbidden=forbidden,
            replacement=False,
            extra_sorted=True,
        )
        return inter, unint

    @staticmethod
    def cached(owner, name, lists, n_unint, indptr, n_cols):
        """`forbidden` memoised on `owner` (recomputed if the lists moved device)."""
        got = owner.__dict__.get(name)
        if got is None or got.device != lists.device:
            got = _Side.forbidden(lists, n_unint, indptr, n_cols)
            owner.__dict__[name] = got
        return got


def _is_dot_model(student) -> bool:
    """A student scored by the plain dot product of its embeddings (BPR-MF)."""
    return type(student).score_items is BPRMF.score_items


class _GatherDot(torch.autograd.Function):
    """scores[r, c] = table[slot[r, c]] · vec[r]: table (T, d), vec (R, d), slot (R, C) → (R, C).

    Backward without the (R, C, d) intermediate: the gradient is a sparse (R, T) matrix G with
    exactly C entries per row, so ∂vec = G @ table (CSR) and ∂table = Gᵀ @ vec (COO).
    """

    @staticmethod
    def forward(ctx, table, vec, slot):
        ctx.save_for_backward(table, vec, slot)
        n_r, n_c = slot.shape
        rows = table.index_select(0, slot.reshape(-1)).view(n_r, n_c, -1)
        return torch.bmm(rows, vec.unsqueeze(2)).squeeze(2)

    @staticmethod
    def backward(ctx, grad):
        table, vec, slot = ctx.saved_tensors
        n_r, n_c = slot.shape
        g = grad.reshape(-1).contiguous().to(table.dtype)
        cols = slot.reshape(-1)
        grad_table = grad_vec = None
        if ctx.needs_input_grad[1]:
            crow = torch.arange(0, n_r * n_c + 1, n_c, device=slot.device)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                g_csr = torch.sparse_csr_tensor(
                    crow, cols, g, (n_r, table.shape[0]), check_invariants=False
                )
            grad_vec = g_csr @ table
        if ctx.needs_input_grad[0]:
            rows = torch.arange(n_r, device=slot.device).repeat_interleave(n_c)
            g_t = torch.sparse_coo_tensor(
                torch.stack([cols, rows]), g, (table.shape[0], n_r), check_invariants=False
            )
            grad_table = torch.sparse.mm(g_t, vec)
        return grad_table, grad_vec, None


def _dot_gathered(embed, idx: torch.Tensor, n: int, vec: torch.Tensor) -> torch.Tensor:
    """scores[r, c] = embed(idx[r, c]) · vec[r] (idx (R, C), vec (R, d)), with every distinct
    row read from the model once: the model's (sparse) gradient then has one row per distinct
    id instead of one per entry."""
    flat = idx.reshape(-1)
    seen = torch.zeros(n, dtype=torch.bool, device=idx.device)
    seen[flat] = True
    uniq = seen.nonzero().squeeze(1)
    slot = (torch.cumsum(seen, 0) - 1)[idx]
    return _GatherDot.apply(embed(uniq), vec, slot)


def _pair_scores(student, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``student.score_items(users, items)`` (users (B,), items (B, C) → (B, C))."""
    if _is_dot_model(student):
        return _dot_gathered(
            student.item_embeddings, items, student.n_items, student.user_embeddings(users)
        )
    return student.score_items(users, items)


def _item_side_scores(student, items: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
    """Scores s(users[r, c], items[r]): items (R,), users (R, C) → (R, C).

    A dot-product student (BPR-MF) is scored from its embeddings directly (each user row read
    once); any other model through ``score_items`` with one (user, item) pair per row.
    """
    if _is_dot_model(student):
        return _dot_gathered(
            student.user_embeddings, users, student.n_users, student.item_embeddings(items)
        )
    n_c = users.shape[1]
    flat_items = items.unsqueeze(1).expand(-1, n_c).reshape(-1, 1)
    return student.score_items(users.reshape(-1), flat_items).view(-1, n_c)


@register
class RelaxedRankingDistillation(Distiller):
    """RRD. Args: K interesting (40), L uninteresting (40), T rank temperature (10), N list
    length (500), interesting "deterministic" | "sample", reduction "sum" | "mean"."""

    name = "rrd"
    epoch_cost = 11.0
    requires = frozenset({"topk"})
    default_weight = 1e-3

    def __init__(
        self,
        K: int = 40,  # noqa: N803 (paper symbols)
        L: int = 40,  # noqa: N803
        T: float = 10.0,  # noqa: N803
        N: int = 500,  # noqa: N803
        interesting: str = "deterministic",
        reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.K, self.L, self.T, self.N = int(K), int(L), float(T), int(N)
        if min(self.K, self.L, self.N) <= 0 or self.T <= 0:
            raise ValueError(f"K, L, N and T must be positive, got K={K} L={L} N={N} T={T}")
        if self.K > self.N:
            raise ValueError(f"K ({K}) cannot exceed the list length N ({N})")
        if interesting not in ("deterministic", "sample"):
            raise ValueError(f"interesting must be deterministic or sample, got {interesting!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
        self.interesting_mode = interesting
        self.reduction = reduction

    def get_params(self) -> dict[str, object]:
        return {
            "K": self.K,
            "L": self.L,
            "T": self.T,
            "N": self.N,
            "interesting": self.interesting_mode,
            "reduction": self.reduction,
        }

    def prepare(self, teacher, split, knowledge=None) -> None:
        from recpress.errors import ConfigError

        if knowledge is None:
            raise ConfigError(f"method {self.name!r} needs teacher Knowledge (top-N lists)")
        lists = knowledge.user_topk(self.N, mask_train=True, needed_by=self.name)
        if lists.shape[1] < self.N:
            raise ConfigError(f"method {self.name!r}: teacher lists shorter than N={self.N}")
        indptr, indices = split.train_tensors("cpu")
        self.n_items = split.n_items
        self.register_buffer("user_lists", lists.to(torch.int64), persistent=False)
        self.register_buffer("indptr", indptr.clone(), persistent=False)
        self.register_buffer("indices", indices.clone(), persistent=False)
        self.register_buffer("interesting", torch.zeros(split.n_users, self.K, dtype=torch.int64))
        self.register_buffer("uninteresting", torch.zeros(split.n_users, self.L, dtype=torch.int64))

    def on_epoch_start(self, student, epoch: int, generator: torch.Generator) -> None:
        inter, unint = _Side.sample(
            self.user_lists,
            self.K,
            self.L,
            self.T,
            self.interesting_mode,
            self.indptr,
            self.indices,
            self.n_items,
            generator,
            _Side.cached(self, "_forbidden_u", self.user_lists, self.L, self.indptr, self.n_items),
        )
        self.interesting.copy_(inter)
        self.uninteresting.copy_(unint)

    def _user_side(self, student, users: torch.Tensor) -> torch.Tensor:
        inter, unint = self.interesting[users], self.uninteresting[users]
        valid = inter >= 0
        scores = _pair_scores(student, users, torch.cat([inter.clamp_min(0), unint], 1))
        per = relaxed_ranking_loss(scores[:, : self.K], scores[:, self.K :], valid)
        return per.sum() if self.reduction == "sum" else per.mean()

    def loss(self, student, batch, epoch: int) -> torch.Tensor:
        return self._user_side(student, torch.unique(batch.users))


@register
class ItemRankingRRD(RelaxedRankingDistillation):
    """IR-RRD: RRD (user side) + ``item_weight`` × item-side RRD. Item-side args: K_I (20),
    L_I (20), T_I (10), N_I (500, capped at the number of users)."""

    name = "ir-rrd"
    epoch_cost = 65.0
    requires = frozenset({"topk", "scores"})
    default_weight = 1e-3

    def __init__(
        self,
        K: int = 40,  # noqa: N803
        L: int = 40,  # noqa: N803
        T: float = 10.0,  # noqa: N803
        N: int = 500,  # noqa: N803
        K_I: int = 20,  # noqa: N803
        L_I: int = 20,  # noqa: N803
        T_I: float = 10.0,  # noqa: N803
        N_I: int = 500,  # noqa: N803
        item_weight: float = 0.5,
        interesting: str = "deterministic",
        reduction: str = "sum",
    ) -> None:
        super().__init__(K, L, T, N, interesting, reduction)
        self.K_I, self.L_I, self.T_I, self.N_I = int(K_I), int(L_I), float(T_I), int(N_I)
        if min(self.K_I, self.L_I, self.N_I) <= 0 or self.T_I <= 0:
            raise ValueError("K_I, L_I, N_I and T_I must be positive")
        if self.K_I > self.N_I:
            raise ValueError(f"K_I ({K_I}) cannot exceed N_I ({N_I})")
        self.item_weight = float(item_weight)

    def get_params(self) -> dict[str, object]:
        return {
            **super().get_params(),
            "K_I": self.K_I,
            "L_I": self.L_I,
            "T_I": self.T_I,
            "N_I": self.N_I,
            "item_weight": self.item_weight,
        }

    def prepare(self, teacher, split, knowledge=None) -> None:
        super().prepare(teacher, split, knowledge)
        n_i = min(self.N_I, split.n_users)
        lists = knowledge.item_topk(n_i, mask_train=True, needed_by=self.name)
        t = split.train.T.tocsr()
        t.sort_indices()
        self.n_users = split.n_users
        self.register_buffer("item_lists", lists.to(torch.int64), persistent=False)
        self.register_buffer(
            "t_indptr", torch.as_tensor(t.indptr.astype("int64")), persistent=False
        )
        self.register_buffer(
            "t_indices", torch.as_tensor(t.indices.astype("int64")), persistent=False
        )
        self.register_buffer(
            "item_interesting", torch.zeros(split.n_items, min(self.K_I, n_i), dtype=torch.int64)
        )
        self.register_buffer(
            "item_uninteresting", torch.zeros(split.n_items, self.L_I, dtype=torch.int64)
        )

    def on_epoch_start(self, student, epoch: int, generator: torch.Generator) -> None:
        super().on_epoch_start(student, epoch, generator)
        inter, unint = _Side.sample(
            self.item_lists,
            self.item_interesting.shape[1],
            self.L_I,
            self.T_I,
            self.interesting_mode,
            self.t_indptr,
            self.t_indices,
            self.n_users,
            generator,
            _Side.cached(
                self, "_forbidden_i", self.item_lists, self.L_I, self.t_indptr, self.n_users
            ),
        )
        self.item_interesting.copy_(inter)
        self.item_uninteresting.copy_(unint)

    def loss(self, student, batch, epoch: int) -> torch.Tensor:
        users = torch.unique(batch.users)
        user_side = self._user_side(student, users)
        items = torch.unique(torch.cat([self.interesting[users], self.uninteresting[users]], 1))
        items = items[items >= 0]
        inter, unint = self.item_interesting[items], self.item_uninteresting[items]
        valid = inter >= 0
        cand = torch.cat([inter.clamp_min(0), unint], 1)  # (I, K_I + L_I) users
        scores = _item_side_scores(student, items, cand)
        k = inter.shape[1]
        per = relaxed_ranking_loss(scores[:, :k], scores[:, k:], valid)
        item_side = per.sum() if self.reduction == "sum" else per.mean()
        return user_side + self.item_weight * item_side
