"""BPR-MF: matrix factorisation trained with the Bayesian Personalised Ranking loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recpress.models.base import Recommender, TripletBatch


class BPRMF(Recommender):
    """Matrix factorisation s_ui = <p_u, q_i> (Rendle et al., 2009).

    Loss per triple: ℓ_b = −log σ(s_{u,i} − s_{u,j}) = softplus(−(s_{u,i} − s_{u,j})).
    Embeddings are initialised from N(0, init_std²). Embedding gradients are row-sparse
    (``sparse=True``) so the lazy optimiser touches only the rows of the batch.

    Args:
        embedding_dim: d, the width of user and item embeddings.
        init_std: standard deviation of the normal initialisation.
    """

    name = "bpr"
    reference_reduction = "sum"

    def __init__(self, embedding_dim: int = 64, init_std: float = 0.01) -> None:
        super().__init__()
        if int(embedding_dim) <= 0:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim}")
        self.dim = int(embedding_dim)
        self.init_std = float(init_std)

    def get_params(self) -> dict[str, object]:
        return {"embedding_dim": self.dim, "init_std": self.init_std}

    @property
    def embedding_dim(self) -> int:
        return self.dim

    def _build(self, n_users: int, n_items: int, generator: torch.Generator | None) -> None:
        self.user_emb = nn.Embedding(n_users, self.dim, sparse=True)
        self.item_emb = nn.Embedding(n_items, self.dim, sparse=True)
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, self.init_std, generator=generator)
            self.item_emb.weight.normal_(0.0, self.init_std, generator=generator)

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        """(B,) BPR loss per triple."""
        p = self.user_emb(batch.users)
        # one lookup for positives and negatives: one sparse gradient, no sparse addition
        q_pos, q_neg = self.item_emb(torch.cat([batch.pos, batch.neg])).split(len(batch.pos))
        diff = (p * (q_pos - q_neg)).sum(-1)
        return F.softplus(-diff)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users) @ self.item_emb.weight.T

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", self.user_emb(users), self.item_emb(items))

    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_emb.weight if users is None else self.user_emb(users)

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_emb.weight if items is None else self.item_emb(items)
