"""Topology distillation: FTD and HTD ("Topology Distillation for Recommender System", KDD 2021).

Both methods work on the entities of a batch: E = the rows of the unique users U_b followed by
the unique items I_b (positives ∪ negatives), n = |U_b| + |I_b| (≈ 2,650 at B = 1024 on the TD
CiteULike-t split). Similarities are cosines; the teacher side is frozen. Reductions are sums, as
in the reference (docs/methods.md §1.5), so λ_TD = 1e-3 reproduces the reference.

FTD (docs/methods.md §4.8)::

    L_FTD = ‖A^t − A^s‖²_F,  A = N·Nᵀ,  N = row-normalised E

computed without any n×n matrix: ‖A^t − A^s‖²_F = ‖N_tᵀN_t‖²_F − 2‖N_tᵀN_s‖²_F + ‖N_sᵀN_s‖²_F
(the Frobenius inner product of two Gram matrices equals the squared norm of the cross Gram),
which costs O(n·d²) instead of O(n²·d).

HTD (docs/methods.md §4.9)::

    L_HTD = γ·(L_ent + L_grp) + (1 − γ)·L_GA

with K group experts and an assignment network per side (two `ExpertBank`s), hard groups
z = argmax α (no gradient; item groups offset by K), entity-level term over same-group pairs,
group-level term Group(P,e) ('second', default) or Group(P,P) ('first'), and the DE-style group
assignment term with Gumbel-softmax at the reference temperature schedule (E_max = 100).

Reference quirks (docs/methods.md §4.9 / §4.15) are flags; ``preset="reference"`` turns all three to
the TD release behaviour, ``preset="paper"`` (default) keeps the paper's definitions:

=====================  =======================  ============================
flag                   paper (default)          reference
=====================  =======================  ============================
``pair_filter``        ``"all"``                ``"teacher_positive"``
``group_include_own``  ``False``                ``True``
``detach_prototypes``  ``False``                ``True``
=====================  =======================  ============================
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from recpress.data.types import Split
from recpress.distill.base import Distiller
from recpress.distill.common import check_choice
from recpress.distill.experts import (
    DENSE_ABOVE,
    EXPERT_PRECISIONS,
    ExpertBank,
    annealed_tau,
    gumbel_softmax,
    mix_experts,
    padded_groups,
)
from recpress.models.base import Recommender, TripletBatch

try:  # the registry lands separately; without it the classes are still usable directly
    from recpress.distill.registry import register
except ImportError:  # pragma: no cover - only before the registry exists

    def register(cls):  # type: ignore[no-redef]
        return cls


__all__ = [
    "FTD",
    "HTD",
    "HTD_PRESETS",
    "batch_entities",
    "ftd_loss",
    "htd_entity_loss",
    "htd_entity_loss_dense",
    "htd_group_loss",
    "mix_experts",
]

#: which same-group pairs HTD's entity term sums: all of them, or those with teacher cosine > 0
PAIR_FILTERS = ("all", "teacher_positive")
#: HTD's ways to compute its terms (same result); see `HTD`
HTD_LAYOUTS = ("auto", "grouped", "dense")
#: largest batch (users + items) the "auto" layout computes densely: three n×n fp32 buffers
DENSE_MAX_ENTITIES = 8192

HTD_PRESETS: dict[str, dict[str, object]] = {
    "paper": {"pair_filter": "all", "group_include_own": False, "detach_prototypes": False},
    "reference": {
        "pair_filter": "teacher_positive",
        "group_include_own": True,
        "detach_prototypes": True,
    },
}


# ---------------------------------------------------------------------------------------------
# functional cores (tested against explicit loops)
# ---------------------------------------------------------------------------------------------
def batch_entities(batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique users U_b and unique items I_b = uniq(pos ∪ neg) of a batch (sorted)."""
    users = torch.unique(batch.users)
    items = torch.unique(torch.cat([batch.pos, batch.neg]))
    return users, items


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-12)


def _gram_sq_norm(x: torch.Tensor) -> torch.Tensor:
    """‖XᵀX‖²_F without gradient, computing only the upper half of the symmetric Gram.

    With X = [X₁ | X₂] (columns): ‖X₁ᵀX₁‖² + ‖X₂ᵀX₂‖² + 2‖X₁ᵀX₂‖², ¾ of the full product.
    """
    with torch.no_grad():
        d = x.shape[-1]
        if d < 64:
            return (x.transpose(-2, -1) @ x).square().sum()
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return (
            (x1.transpose(-2, -1) @ x1).square().sum()
            + (x2.transpose(-2, -1) @ x2).square().sum()
            + 2.0 * (x1.transpose(-2, -1) @ x2).square().sum()
        )


class _FTDCross(torch.autograd.Function):
    """‖N_sᵀN_s‖²_F − 2‖N_tᵀN_s‖²_F with the backward by hand: 4·(N_s·G_ss − N_t·G_ts).

    Autograd would differentiate N_sᵀN_s through both operands (two GEMMs); this is one addmm.
    """

    @staticmethod
    def forward(ctx, ns, nt):  # noqa: D102 - see the class docstring
        g_ts = nt.T @ ns
        g_ss = ns.T @ ns
        ctx.save_for_backward(ns, nt, g_ts, g_ss)
        return g_ss.square().sum() - 2.0 * g_ts.square().sum()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        ns, nt, g_ts, g_ss = ctx.saved_tensors
        return torch.addmm(ns @ g_ss, nt, g_ts, alpha=-1.0).mul_(4.0 * grad), None


def ftd_loss(student: torch.Tensor, teacher_normed: torch.Tensor) -> torch.Tensor:
    """‖cos(E^t, E^t) − cos(E^s, E^s)‖²_F (sum over all n² pairs) without n×n matrices.

    Args:
        student: E^s (n, d_s), raw student embeddings (gradient flows).
        teacher_normed: row-normalised teacher embeddings N_t (n, d_t), no gradient.
    """
    ns = _normalize(student)
    nt = teacher_normed.to(ns.dtype)
    return _gram_sq_norm(nt) + _FTDCross.apply(ns, nt)


def _group_layout(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Compact group ids: (inverse (n,) in [0, G), counts (G,), G)."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return inverse, counts, int(counts.numel())


class _TilePairLoss(torch.autograd.Function):
    """Σ mask·(P·Qᵀ − T)² over a tile of the same-group pairs (batched), T constant.

    Forward and backward by hand: ∂/∂P = 2·D·Q, ∂/∂Q = 2·Dᵀ·P with D = mask·(P·Qᵀ − T), so one
    (blocks, m_p, m_q) buffer is kept and autograd sees one node instead of five. A diagonal tile
    passes the same tensor as P and Q (its two gradients add up to 4·D·P).
    """

    @staticmethod
    def forward(ctx, p, q, bt, mask):  # noqa: D102 - see the class docstring
        diff = torch.bmm(p, q.transpose(1, 2)).sub_(bt)
        if mask is not None:
            diff.mul_(mask)
        ctx.save_for_backward(p, q, diff)
        flat = diff.view(-1)
        return torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        p, q, diff = ctx.saved_tensors
        gp = torch.bmm(diff, q).mul_(2.0 * grad) if ctx.needs_input_grad[0] else None
        gq = (
            torch.bmm(diff.transpose(1, 2), p).mul_(2.0 * grad) if ctx.needs_input_grad[1] else None
        )
        return gp, gq, None, None


_TILE = 384  # pair blocks larger than this are cut into tiles; only tiles i <= j are computed


def _pair_blocks_loss(ps: torch.Tensor, pt: torch.Tensor, teacher_positive: bool) -> torch.Tensor:
    """Σ over the pairs of each (blocks, m, ·) block of [mask·](cos_s − cos_t)².

    The pair matrices are symmetric, so a large block is cut into k tiles of rows and only the
    k(k+1)/2 tiles on or above the diagonal are computed (off-diagonal ones count twice):
    ≈ (k+1)/2k of the teacher and student products.
    """
    m = ps.shape[1]
    k = max(1, -(-m // _TILE))
    size = -(-m // k)
    bounds = [(lo, min(lo + size, m)) for lo in range(0, m, size)]
    total = ps.new_zeros(())
    for i, (lo_i, hi_i) in enumerate(bounds):
        p_i, t_i = ps[:, lo_i:hi_i], pt[:, lo_i:hi_i]
        for lo_j, hi_j in bounds[i:]:
            p_j = p_i if lo_j == lo_i else ps[:, lo_j:hi_j]
            with torch.no_grad():
                bt = torch.bmm(t_i, pt[:, lo_j:hi_j].transpose(1, 2))
                mask = (bt > 0).to(bt.dtype) if teacher_positive else None
            tile = _TilePairLoss.apply(p_i, p_j, bt, mask)
            total = total + (tile if lo_j == lo_i else 2.0 * tile)
    return total


def _use_gram(m: int, d_s: int, d_t: int) -> bool:
    """Whether the Gram form is cheaper than explicit pairs for blocks of m rows (MAC counts)."""
    pairs = m * m * (d_t + 3 * d_s)  # teacher Gram, student Gram forward + backward
    gram = m * d_t * min(m, d_t) + 2 * m * d_t * d_s + 3 * m * d_s * d_s
    return gram < pairs


def htd_entity_loss(
    student: torch.Tensor,
    teacher_normed: torch.Tensor,
    groups: torch.Tensor,
    pair_filter: str = "all",
    gram: bool | None = None,
) -> torch.Tensor:
    """L_ent = Σ over same-group pairs (a, b) of (cos(e^s_a, e^s_b) − cos(e^t_a, e^t_b))².

    ``pair_filter="teacher_positive"`` keeps only pairs whose teacher cosine is > 0 (reference).
    Only same-group pairs are computed (no n×n matrix): entities are sorted by group and padded
    into blocks (`experts.padded_groups`), one batched matmul per size bucket. Padded slots are
    zero rows on both sides (cosine 0), so they add nothing, and are excluded by the
    teacher-positive filter.

    With ``pair_filter="all"`` a large group uses the Gram form instead (as FTD, per group g:
    ‖N_tᵀN_t‖²_F − 2‖N_tᵀN_s‖²_F + ‖N_sᵀN_s‖²_F over the group's own rows, unpadded), which
    costs O(n_g·d²) instead of O(n_g²·d); ``gram=None`` picks the cheaper form per group,
    ``True``/``False`` forces it (the filter needs the pairs, so it always uses them).
    """
    check_choice("pair_filter", pair_filter, PAIR_FILTERS)
    ns = _normalize(student)
    nt = teacher_normed.to(ns.dtype)
    d_s, d_t = ns.shape[1], nt.shape[1]
    inverse, counts, _ = _group_layout(groups)
    total = ns.new_zeros(())
    if pair_filter == "all" and gram is not False:
        # Gram form, one group at a time on its own (unpadded) rows
        sizes = counts.tolist()
        big = [gram is True or _use_gram(c, d_s, d_t) for c in sizes]
        if any(big):
            order = torch.argsort(inverse, stable=True)
            starts = [0]
            for c in sizes:
                starts.append(starts[-1] + c)
            for g, (c, use) in enumerate(zip(sizes, big, strict=True)):
                if not use:
                    continue
                rows = order[starts[g] : starts[g] + c]
                pt = nt.index_select(0, rows)
                with torch.no_grad():
                    tt = _gram_sq_norm(pt) if c > d_t else _gram_sq_norm(pt.T)
                total = total + (tt + _FTDCross.apply(ns.index_select(0, rows), pt))
            if all(big):
                return total
            small = ~torch.tensor(big, device=counts.device)
            keep = small[inverse]
            ns, nt = ns[keep], nt[keep]
            inverse, counts, _ = _group_layout(inverse[keep])
    for members, idx, slot, m in padded_groups(inverse, counts):
        n_blocks = members.numel()
        ps = ns.new_zeros(n_blocks * m, d_s).index_copy(0, slot, ns[idx])
        ps = ps.view(n_blocks, m, d_s)
        with torch.no_grad():
            pt = nt.new_zeros(n_blocks * m, d_t).index_copy(0, slot, nt[idx])
            pt = pt.view(n_blocks, m, d_t)
        total = total + _pair_blocks_loss(ps, pt, pair_filter == "teacher_positive")
    return total


def htd_entity_loss_dense(
    student: torch.Tensor,
    teacher_normed: torch.Tensor,
    groups: torch.Tensor,
    pair_filter: str = "all",
) -> torch.Tensor:
    """`htd_entity_loss` on the full pair matrix: ‖M ⊙ (N_s N_sᵀ − N_t N_tᵀ)‖²_F, with
    M_ab = [g_a = g_b] (· [cos_t(a, b) > 0] with ``pair_filter="teacher_positive"``).

    The same value and gradients as the grouped form, in a handful of large kernels and no host
    sync, for O(n²) memory (three (n, n) buffers); the layout HTD uses on accelerators.
    student (n, d_s) raw, teacher_normed (n, d_t), groups (n,) → scalar.
    """
    check_choice("pair_filter", pair_filter, PAIR_FILTERS)
    ns = _normalize(student)
    nt = teacher_normed.to(ns.dtype)
    with torch.no_grad():
        bt = nt @ nt.T
        mask = groups.unsqueeze(1) == groups.unsqueeze(0)
        if pair_filter == "teacher_positive":
            mask &= bt > 0
        mask = mask.to(bt.dtype)
    p = ns.unsqueeze(0)
    return _TilePairLoss.apply(p, p, bt.unsqueeze(0), mask.unsqueeze(0))


def htd_group_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    groups: torch.Tensor,
    choice: str = "second",
    include_own: bool = False,
    detach_prototypes: bool = False,
) -> torch.Tensor:
    """Group-level topology term of HTD.

    Prototypes P = Z̃ᵀE (mean of each non-empty group's raw embeddings).
    ``choice="second"`` (Group(P,e)): Σ_{k,j} (cos(P^s_k, e^s_j) − cos(P^t_k, e^t_j))² over
    j ∉ G_k, or over all j with ``include_own``. ``choice="first"`` (Group(P,P)):
    Σ_{k,l} (cos(P^s_k, P^s_l) − cos(P^t_k, P^t_l))².
    ``detach_prototypes`` computes P^s without gradient (reference).
    """
    if choice not in ("second", "first"):
        raise ValueError(f"choice must be 'second' or 'first', got {choice!r}")
    inverse, counts, n_groups = _group_layout(groups)
    z = F.one_hot(inverse, n_groups).to(student.dtype)  # (n, G)
    zt = z / counts.to(student.dtype)  # Z̃, columns sum to 1
    teacher = teacher.to(student.dtype)
    with torch.no_grad():
        pt = _normalize(zt.T @ teacher)
    if detach_prototypes:
        with torch.no_grad():
            ps = _normalize(zt.T @ student)
    else:
        ps = _normalize(zt.T @ student)
    if choice == "first":
        with torch.no_grad():
            ht = pt @ pt.T
        return (ps @ ps.T - ht).square().sum()
    with torch.no_grad():
        ht = pt @ _normalize(teacher).T  # (G, n)
    diff = ps @ _normalize(student).T - ht
    if include_own:
        return diff.square().sum()
    return (diff.square() * (1.0 - z.T)).sum()


# ---------------------------------------------------------------------------------------------
# shared teacher handling
# ---------------------------------------------------------------------------------------------
class _TopologyBase(Distiller):
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})
    default_weight: ClassVar[float] = 1e-3

    def __init__(self) -> None:
        super().__init__()
        self._tu: torch.Tensor | None = None  # teacher user embeddings (n_U, d_t), frozen
        self._ti: torch.Tensor | None = None
        self._tu_n: torch.Tensor | None = None  # row-normalised copies
        self._ti_n: torch.Tensor | None = None
        self._tables: tuple[torch.Tensor, torch.Tensor] | None = None  # see _teacher_tables

    def _load_teacher(self, teacher: Recommender | None, knowledge) -> None:
        if knowledge is not None and hasattr(knowledge, "user_embeddings"):
            tu, ti = knowledge.user_embeddings(), knowledge.item_embeddings()
        else:
            if teacher is None:
                raise ValueError(f"{self.name} needs a teacher or a Knowledge object")
            tu, ti = teacher.user_embeddings(None), teacher.item_embeddings(None)
        if tu is None or ti is None:
            raise ValueError(f"{self.name} needs a teacher with embeddings (representation KD)")
        self._tu = tu.detach().clone()
        self._ti = ti.detach().clone()
        self._tu_n = _normalize(self._tu)
        self._ti_n = _normalize(self._ti)
        self._tables = None

    @property
    def teacher_dim(self) -> int:
        assert self._tu is not None, "call prepare() first"
        return int(self._tu.shape[1])

    def _teacher_tables(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Users then items, (n_U + n_I, d_t) normalised and (n_U + n_I, 2·d_t) [raw | normalised]
        in ``like``'s dtype/device, built once (one gather per batch instead of four + two cats).
        """
        if self._tu is None:
            raise RuntimeError(f"{self.name}: prepare(teacher, split) was not called")
        tables = self._tables
        if tables is None or tables[0].device != like.device or tables[0].dtype != like.dtype:
            raw = torch.cat([self._tu, self._ti]).to(like)
            normed = torch.cat([self._tu_n, self._ti_n]).to(like)
            tables = (normed, torch.cat([raw, normed], 1))
            self._tables = tables
        return tables

    def _teacher_rows(self, users, items, like: torch.Tensor, normed: bool) -> torch.Tensor:
        normed_t, both = self._teacher_tables(like)
        rows = torch.cat([users, items + self._tu.shape[0]])
        if normed:
            return normed_t.index_select(0, rows)
        return both.index_select(0, rows)[:, : normed_t.shape[1]]

    def _teacher_raw_and_normed(
        self, users, items, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E^t, N_t) of the batch entities (users then items) with one gather."""
        normed_t, both = self._teacher_tables(like)
        rows = both.index_select(0, torch.cat([users, items + self._tu.shape[0]]))
        d_t = normed_t.shape[1]
        return rows[:, :d_t], rows[:, d_t:]

    @staticmethod
    def _student_rows(student: Recommender, users, items) -> torch.Tensor:
        su, si = student.user_embeddings(users), student.item_embeddings(items)
        if su is None or si is None:
            raise ValueError("topology distillation needs a student with embeddings")
        return torch.cat([su, si])


@register
class FTD(_TopologyBase):
    """Full Topology Distillation: L = ‖cos(E^t) − cos(E^s)‖²_F over the batch's users + items.

    No auxiliary parameters; reduction "sum" (reference); default λ_TD = 1e-3.
    """

    name: ClassVar[str] = "ftd"
    epoch_cost: ClassVar[float] = 4.5

    def prepare(self, teacher: Recommender, split: Split, knowledge=None) -> None:
        self._load_teacher(teacher, knowledge)

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        users, items = batch_entities(batch)
        es = self._student_rows(student, users, items)
        nt = self._teacher_rows(users, items, es, normed=True)
        return ftd_loss(es, nt)


@register
class HTD(_TopologyBase):
    """Hierarchical Topology Distillation with group experts trained jointly with the student.

    Args:
        n_groups: K group experts per side (users and items separately); 2K groups in all.
        gamma: γ, weight of the topology terms vs (1 − γ) for the group-assignment term.
        choice: "second" = Group(P,e) (default), "first" = Group(P,P).
        pair_filter: "all" (paper, default) or "teacher_positive" (reference: same group and
            teacher cosine > 0).
        group_include_own: Group(P,e) also over j ∈ G_k (reference) instead of j ∉ G_k (paper).
        detach_prototypes: compute prototypes without gradient (reference).
        preset: "paper" or "reference": sets the three flags above (explicit flags override).
        tau_max_epochs: E_max of the temperature schedule τ_e = (1e-10)^((e−1)/E_max), τ_0 = 1.
        expert_threshold: skip (entity, expert) pairs whose Gumbel-softmax weight is ≤ this in
            the group-assignment term (speed; 0 = exact dense mixture), see `mix_experts`.
        hidden_dim: expert hidden width (default ⌊(d_t + d_s)/2⌋).
        expert_precision: "fp32" (exact), "bf16" (dense expert GEMMs under bfloat16
            autocast) or "auto" (bf16 where the device runs it natively); see `ExpertBank`.
        layout: how the entity and group-assignment terms are computed, with the same result:
            "grouped" (same-group pair blocks, experts run only on their entities: least
            arithmetic), "dense" (one masked n×n pair matrix and the dense expert GEMMs with
            the skipped weights zeroed: few large kernels and no host sync) or "auto" (dense on
            an accelerator when the batch has at most `DENSE_MAX_ENTITIES` entities, else
            grouped); bench/README.md, section "KD: expert mixtures (DE, HTD)".
        student_dim: d_s, if known at construction (else given to ``prepare``).
        seed: seed of the expert initialisation (default: the one given by ``bind_student``,
            derived from the run seed).
    """

    name: ClassVar[str] = "htd"
    epoch_cost: ClassVar[float] = 35.0

    def __init__(
        self,
        n_groups: int = 30,
        gamma: float = 0.5,
        choice: str = "second",
        pair_filter: str | None = None,
        group_include_own: bool | None = None,
        detach_prototypes: bool | None = None,
        preset: str = "paper",
        tau_max_epochs: int = 100,
        expert_threshold: float = 1e-7,
        hidden_dim: int | None = None,
        expert_precision: str = "fp32",
        layout: str = "auto",
        student_dim: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.layout = check_choice("layout", layout, HTD_LAYOUTS)
        if preset not in HTD_PRESETS:
            raise ValueError(f"preset must be one of {sorted(HTD_PRESETS)}, got {preset!r}")
        if choice not in ("second", "first"):
            raise ValueError(f"choice must be 'second' or 'first', got {choice!r}")
        flags = dict(HTD_PRESETS[preset])
        for key, value in (
            ("pair_filter", pair_filter),
            ("group_include_own", group_include_own),
            ("detach_prototypes", detach_prototypes),
        ):
            if value is not None:
                flags[key] = value
        check_choice("pair_filter", flags["pair_filter"], PAIR_FILTERS)
        if int(n_groups) < 1:
            raise ValueError(f"n_groups must be >= 1, got {n_groups}")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.n_groups = int(n_groups)
        self.gamma = float(gamma)
        self.choice = choice
        self.pair_filter = str(flags["pair_filter"])
        self.group_include_own = bool(flags["group_include_own"])
        self.detach_prototypes = bool(flags["detach_prototypes"])
        self.preset = preset
        self.tau_max_epochs = int(tau_max_epochs)
        self.expert_threshold = float(expert_threshold)
        self.expert_precision = check_choice(
            "expert_precision", expert_precision, EXPERT_PRECISIONS
        )
        self.hidden_dim = hidden_dim
        self.seed = None if seed is None else int(seed)
        self._bound_seed = 0
        self.student_dim = int(student_dim) if student_dim is not None else None
        self.user_bank: ExpertBank | None = None
        self.item_bank: ExpertBank | None = None
        self._generator: torch.Generator | None = None

    def bind_student(self, student: Recommender, seed: int = 0) -> None:
        """Record the student width d_s (sizes the experts) and the seed of their init."""
        dim = student.embedding_dim
        if dim is None:
            raise ValueError(
                f"HTD needs a student with embeddings; {type(student).__name__} has none"
            )
        self.student_dim, self._bound_seed = int(dim), int(seed)

    def prepare(
        self,
        teacher: Recommender,
        split: Split,
        knowledge=None,
        student: Recommender | None = None,
        student_dim: int | None = None,
    ) -> None:
        """Load the frozen teacher embeddings and create the experts (aux parameters).

        The student width d_s comes from ``student_dim`` (here or in the constructor) or from
        ``student.embedding_dim``; the experts must exist before the optimiser is built.
        """
        self._load_teacher(teacher, knowledge)
        dim = student_dim or self.student_dim
        if dim is None and student is not None:
            dim = student.embedding_dim
        if dim is None:
            raise ValueError("HTD needs the student's embedding width: pass student_dim")
        self.student_dim = int(dim)
        self.build_experts(self.student_dim)

    def build_experts(self, student_dim: int) -> None:
        """Create the user- and item-side group experts and assignment networks."""
        g = torch.Generator().manual_seed(self._bound_seed if self.seed is None else self.seed)
        d_t = self.teacher_dim
        self.user_bank, self.item_bank = (
            ExpertBank(self.n_groups, student_dim, d_t, self.hidden_dim, g, self.expert_precision)
            for _ in range(2)
        )

    def tau(self, epoch: int) -> float:
        return annealed_tau(epoch, self.tau_max_epochs)

    def uses_dense_layout(self, entities: torch.Tensor) -> bool:
        """Whether a batch with these entity rows (n, ·) is computed in the dense layout."""
        if self.layout != "auto":
            return self.layout == "dense"
        return entities.device.type != "cpu" and entities.shape[0] <= DENSE_MAX_ENTITIES

    def on_epoch_start(self, student: Recommender, epoch: int, generator: torch.Generator):
        self._generator = generator
        if self.user_bank is None:
            raise RuntimeError("HTD: prepare(...) must run before training (creates the experts)")

    def terms(
        self, student: Recommender, batch: TripletBatch, epoch: int
    ) -> dict[str, torch.Tensor]:
        """The three HTD terms for a batch: {"ent", "grp", "ga"} (each a sum)."""
        if self.user_bank is None or self.item_bank is None:
            raise RuntimeError("HTD: prepare(...) or on_epoch_start(...) was not called")
        users, items = batch_entities(batch)
        es = self._student_rows(student, users, items)
        et, nt = self._teacher_raw_and_normed(users, items, es)
        n_u = users.shape[0]
        alpha_u = self.user_bank.selection(et[:n_u])
        alpha_i = self.item_bank.selection(et[n_u:])
        groups = torch.cat([alpha_u.detach().argmax(1), alpha_i.detach().argmax(1) + self.n_groups])
        dense = self.uses_dense_layout(es)
        entity_loss = htd_entity_loss_dense if dense else htd_entity_loss
        ent = entity_loss(es, nt, groups, self.pair_filter)
        grp = htd_group_loss(
            es, et, groups, self.choice, self.group_include_own, self.detach_prototypes
        )
        tau = self.tau(epoch)
        ga = es.new_zeros(())
        for bank, alpha, s, t in (
            (self.user_bank, alpha_u, es[:n_u], et[:n_u]),
            (self.item_bank, alpha_i, es[n_u:], et[n_u:]),
        ):
            z = gumbel_softmax(torch.log(alpha + 1e-10), tau, self._generator)
            recon = mix_experts(bank, s, z, self.expert_threshold, 0.0 if dense else DENSE_ABOVE)
            ga = ga + (t - recon).square().sum()
        return {"ent": ent, "grp": grp, "ga": ga}

    def loss(self, student: Recommender, batch: TripletBatch, epoch: int) -> torch.Tensor:
        t = self.terms(student, batch, epoch)
        return self.gamma * (t["ent"] + t["grp"]) + (1.0 - self.gamma) * t["ga"]
