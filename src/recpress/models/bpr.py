"""BPR-MF: matrix factorisation trained with the Bayesian Personalised Ranking loss."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recpress.data.types import Split
from recpress.models.base import Recommender, TripletBatch

#: lookups of more indices than this go through their unique rows (see `gather_rows`)
DEDUP_MIN = 8192


def gather_rows(table: nn.Embedding, index: torch.Tensor) -> torch.Tensor:
    """``table(index)``: (*index.shape, d), with the sparse gradient kept at most table-sized.

    Up to `DEDUP_MIN` indices this is ``table(index)``. Above, the distinct rows are looked up
    once and expanded with ``index_select`` (its backward sums duplicates densely), so the
    embedding gets one gradient row per distinct index instead of one per lookup. Same values;
    gradients equal up to float summation order. Why: bench/README.md, section "Training:
    embedding lookups".
    """
    if index.numel() <= DEDUP_MIN:
        return table(index)
    flat = index.reshape(-1)
    present = torch.zeros(table.num_embeddings, dtype=torch.bool, device=flat.device)
    present[flat] = True
    rows = torch.nonzero(present).squeeze(1)
    slot = torch.cumsum(present, 0) - 1  # row -> position among the distinct rows
    out = table(rows).index_select(0, slot[flat])
    return out.view(*index.shape, -1)


class BPRMF(Recommender):
    """Matrix factorisation s_ui = <p_u, q_i> (Rendle et al., 2009).

    Loss per triple: ℓ_b = −log σ(s_{u,i} − s_{u,j}) = softplus(−(s_{u,i} − s_{u,j})).
    Embeddings (user table (n_users, d), then item table (n_items, d)) are initialised from
    N(0, init_std²). Embedding gradients are row-sparse while the attribute ``sparse`` is True
    (the default) so the lazy optimiser touches only the rows of the batch; set it to False
    before ``build`` for dense gradients (an implementation option, not a hyperparameter: it
    does not change the result).

    Args:
        embedding_dim: d, the width of user and item embeddings.
        init_std: standard deviation of the normal initialisation.
    """

    name = "bpr"
    reference_reduction = "sum"
    has_embeddings = True

    def __init__(
        self,
        embedding_dim: Annotated[int, Field(ge=1)] = 200,
        init_std: Annotated[float, Field(gt=0)] = 0.01,
    ) -> None:
        super().__init__()
        if int(embedding_dim) <= 0:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim}")
        self.dim = int(embedding_dim)
        self.init_std = float(init_std)
        self.sparse = True

    @property
    def embedding_dim(self) -> int:
        return self.dim

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        self.user_emb = nn.Embedding(split.n_users, self.dim, sparse=self.sparse)
        self.item_emb = nn.Embedding(split.n_items, self.dim, sparse=self.sparse)
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, self.init_std, generator=generator)
            self.item_emb.weight.normal_(0.0, self.init_std, generator=generator)

    def forward(self, batch: TripletBatch) -> torch.Tensor:
        """(B,) BPR loss per triple."""
        p = self.user_emb(batch.users)
        # one lookup for positives and negatives: one sparse gradient, no sparse addition
        q_pos, q_neg = self.item_emb(torch.cat([batch.pos, batch.neg])).split(len(batch.pos))
        diff = (p * (q_pos - q_neg)).sum(-1)
        return F.softplus(-diff)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users) @ self.item_emb.weight.T

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = gather_rows(self.user_emb, users)
        return torch.einsum("bd,bkd->bk", p, gather_rows(self.item_emb, items))

    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_emb.weight if users is None else gather_rows(self.user_emb, users)

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_emb.weight if items is None else gather_rows(self.item_emb, items)
