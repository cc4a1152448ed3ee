"""LightGCN: BPR on embeddings propagated over the normalised user-item graph."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import skip_init

from recpress.data.types import Split
from recpress.models.base import Recommender, TripletBatch


def normalised_adjacency(train: sp.spmatrix) -> torch.Tensor:
    """Â = D^-1/2 A D^-1/2 of the bipartite graph A = [[0, R], [Rᵀ, 0]], R = `train` (U, I).

    Returns a coalesced sparse COO float32 tensor of shape (U + I, U + I) with 2·nnz(R)
    entries; rows (and columns) of zero-degree nodes hold no entries, so they propagate to 0.
    """
    r = sp.coo_matrix(train)
    n_users, n_items = r.shape
    rows = np.concatenate([r.row, r.col + n_users]).astype(np.int64)
    cols = np.concatenate([r.col + n_users, r.row]).astype(np.int64)
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    inv_sqrt = np.zeros_like(degree)
    nonzero = degree > 0
    inv_sqrt[nonzero] = degree[nonzero] ** -0.5
    values = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    index = torch.from_numpy(np.stack([rows, cols]))
    n = n_users + n_items
    adjacency = torch.sparse_coo_tensor(
        index, torch.from_numpy(values), (n, n), check_invariants=True
    )
    return adjacency.coalesce()


@contextmanager
def _csr_beta_silenced() -> Iterator[None]:
    """Silence torch's "Sparse CSR tensor support is in beta" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def as_csr(adjacency: torch.Tensor) -> torch.Tensor:
    """The sparse CSR form of a (coalesced COO) matrix, with int32 indices where they fit.

    int32 indices are what the CPU (MKL) and CUDA (cuSPARSE) kernels take without converting
    them on every product. torch's "beta" warning for CSR tensors is silenced.
    """
    with _csr_beta_silenced():
        csr = adjacency.to_sparse_csr()
        if max(csr.shape[0], csr.values().numel()) >= 2**31:
            return csr
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32),
            csr.col_indices().to(torch.int32),
            csr.values(),
            csr.shape,
            check_invariants=True,
        )


class _SymmetricSparseProduct(torch.autograd.Function):
    """Y = Â·X for a symmetric sparse Â (n, n) and dense X (n, d), with ∂L/∂X = Âᵀ·G = Â·G.

    The symmetry saves the transpose that autograd would form for a sparse left operand on
    every backward; both products run on the CSR kernel, in Â's dtype (outside autocast: the
    sparse kernels have no reduced-precision path on every device).
    """

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        with torch.autocast(x.device.type, enabled=False):
            return torch.mm(adjacency, x.to(adjacency.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        adjacency = ctx.adjacency
        with torch.autocast(grad.device.type, enabled=False):
            return None, torch.mm(adjacency, grad.to(adjacency.dtype))


def symmetric_sparse_mm(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Â·X (n, d) for a symmetric sparse CSR Â (n, n); differentiable in X only."""
    return _SymmetricSparseProduct.apply(adjacency, x)


class LightGCN(Recommender):
    """LightGCN (He et al., 2020): s_ui = <e_u, e_i> on propagated embeddings.

    Ego embeddings E⁰ = [P; Q] ((n_users + n_items, d), user table then item table, each from
    N(0, init_std²)); E⁽ˡ⁺¹⁾ = Â·E⁽ˡ⁾ with Â = D^-1/2 A D^-1/2 built once from the training
    interactions (sparse, never a dense U x I); final E = (1/(L+1))·Σ_{l=0..L} E⁽ˡ⁾.

    Loss per triple: softplus(−(s_ui − s_uj)) + (l2/2)·(‖e⁰_u‖² + ‖e⁰_i‖² + ‖e⁰_j‖²) (the L2
    term on the batch's ego embeddings; default 0, i.e. regularise with the optimiser's weight
    decay instead). One full-graph propagation per training batch; the embedding gradients are
    dense (every ego row feeds the propagated rows).

    In eval mode without gradients, the propagated embeddings are computed once and cached
    until the parameters change or ``train()`` is called. `materialise` returns them: the
    served artifact is MF-sized (``score = U @ Iᵀ``). The adjacency is a sparse CSR,
    non-persistent buffer (it moves with ``.to(device)`` and is not in ``state_dict``; ``build``
    recreates it); each layer's product and its gradient use Â's symmetry (`symmetric_sparse_mm`).

    Args:
        embedding_dim: d, the width of the ego (and propagated) embeddings.
        n_layers: L, the number of propagation layers.
        init_std: standard deviation of the normal initialisation of E⁰.
        l2: coefficient of the per-triple L2 term on the batch's ego embeddings.
        representation: what ``user_embeddings``/``item_embeddings`` return for
            representation KD: "final" (propagated E) or "ego" (E⁰).
    """

    name = "lightgcn"
    reference_reduction = "mean"
    has_embeddings = True

    adjacency_crow: torch.Tensor
    adjacency_col: torch.Tensor
    adjacency_values: torch.Tensor

    def __init__(
        self,
        embedding_dim: Annotated[int, Field(ge=1)] = 64,
        n_layers: Annotated[int, Field(ge=0)] = 3,
        init_std: Annotated[float, Field(gt=0)] = 0.1,
        l2: Annotated[float, Field(ge=0)] = 0.0,
        representation: Literal["final", "ego"] = "final",
    ) -> None:
        super().__init__()
        if int(embedding_dim) <= 0:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim}")
        if int(n_layers) < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        if representation not in ("final", "ego"):
            raise ValueError(f"representation must be 'final' or 'ego', got {representation!r}")
        self.dim = int(embedding_dim)
        self.n_layers = int(n_layers)
        self.init_std = float(init_std)
        self.l2 = float(l2)
        self.representation = representation
        self._cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    @property
    def embedding_dim(self) -> int:
        return self.dim

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        self.user_emb = skip_init(nn.Embedding, split.n_users, self.dim)
        self.item_emb = skip_init(nn.Embedding, split.n_items, self.dim)
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, self.init_std, generator=generator)
            self.item_emb.weight.normal_(0.0, self.init_std, generator=generator)
        adjacency = as_csr(normalised_adjacency(split.train))
        # The CSR parts are kept as dense buffers, so .to(), deepcopy and pickling of the
        # module work (a sparse CSR tensor has no storage to copy); not in the state dict.
        self.register_buffer("adjacency_crow", adjacency.crow_indices(), persistent=False)
        self.register_buffer("adjacency_col", adjacency.col_indices(), persistent=False)
        self.register_buffer("adjacency_values", adjacency.values(), persistent=False)
        self._cache = None

    @property
    def adjacency(self) -> torch.Tensor:
        """Â, the (U+I, U+I) sparse CSR normalised adjacency (a view of the buffers)."""
        size = (self.n_users + self.n_items,) * 2
        with _csr_beta_silenced():
            return torch.sparse_csr_tensor(
                self.adjacency_crow,
                self.adjacency_col,
                self.adjacency_values,
                size,
                check_invariants=False,  # checked once, when built
            )

    # -- propagation --------------------------------------------------------------------------
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final embeddings E = mean_{l=0..L} Â^l E⁰, split into users (U, d), items (I, d)."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])
        adjacency = self.adjacency  # one CSR view for all layers
        total, layer = ego, ego
        for _ in range(self.n_layers):
            layer = symmetric_sparse_mm(adjacency, layer)
            total = total + layer
        final = total / (self.n_layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def _key(self) -> tuple:
        w_u, w_i = self.user_emb.weight, self.item_emb.weight
        return (w_u._version, w_i._version, w_u.data_ptr(), w_i.data_ptr(), w_u.device, w_u.dtype)

    def materialise(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (user (U, d), item (I, d)) embeddings; with gradients when enabled,
        else computed once and cached (in eval mode) until the parameters change."""
        if torch.is_grad_enabled() or self.training:
            return self.propagate()
        key = self._key()
        if self._cache is None or self._cache[0] != key:
            users, items = self.propagate()
            self._cache = (key, users, items)
        return self._cache[1], self._cache[2]

    def dot_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user (U, d), item (I, d)) with ``score(users) = user[users] @ itemᵀ`` exactly."""
        with torch.no_grad():
            return self.propagate()

    def train(self, mode: bool = True) -> LightGCN:
        self._cache = None
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self._cache = None
        return super()._apply(fn, recurse)

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: TripletBatch) -> torch.Tensor:
        """(B,) BPR loss per triple on the propagated embeddings (+ the ego L2 term)."""
        users, items = self.propagate()
        e_u = users[batch.users]
        diff = (e_u * (items[batch.pos] - items[batch.neg])).sum(-1)
        loss = F.softplus(-diff)
        if self.l2 > 0:
            ego_u = self.user_emb(batch.users)
            ego_i, ego_j = self.item_emb(batch.pos), self.item_emb(batch.neg)
            squares = ego_u.pow(2).sum(-1) + ego_i.pow(2).sum(-1) + ego_j.pow(2).sum(-1)
            loss = loss + 0.5 * self.l2 * squares
        return loss

    # -- scoring ------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        user_final, item_final = self.materialise()
        return user_final[users] @ item_final.T

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_final, item_final = self.materialise()
        return torch.einsum("bd,bkd->bk", user_final[users], item_final[items])

    # -- representations ----------------------------------------------------------------------
    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        table = self.user_emb.weight if self.representation == "ego" else self.materialise()[0]
        return table if users is None else table[users]

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        table = self.item_emb.weight if self.representation == "ego" else self.materialise()[1]
        return table if items is None else table[items]
