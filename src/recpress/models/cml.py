"""CML: collaborative metric learning, score = minus the squared user-item distance."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import skip_init

from recpress.data.types import Split
from recpress.models.base import Recommender, TripletBatch
from recpress.models.bpr import gather_rows


def clip_rows(weight: torch.Tensor, rows: torch.Tensor | None, max_norm: float) -> None:
    """In place: rows of `weight` (n, d) (all when `rows` is None) rescaled to ‖·‖ ≤ max_norm."""
    with torch.no_grad():
        block = weight if rows is None else weight[rows]
        norms = block.norm(dim=1, keepdim=True)
        scale = (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
        if rows is None:
            weight.mul_(scale)
        else:
            weight[rows] = block * scale


class CML(Recommender):
    """Collaborative Metric Learning (Hsieh et al., 2017), basic form: s_ui = −‖u − v_i‖².

    Loss per triple (u, i, j): [m + ‖u − v_i‖² − ‖u − v_j‖²]₊ (hinge, margin m). Embeddings
    (user table (n_users, d), then item table (n_items, d)) are initialised from N(0, 1/d);
    after each optimiser step `post_step` re-projects rows to ‖·‖ ≤ max_norm. Without WARP rank
    weights or the covariance regulariser of the original paper.

    The embeddings live in a metric space: dot-product KD methods (DE, FTD, HTD) see them as
    they are. For serving, ``dot_form`` gives an MF-form pair with the same per-user ranking:
    −‖u − v‖² = ⟨[2u, −1], [v, ‖v‖²]⟩ − ‖u‖².

    Args:
        embedding_dim: d, the width of user and item embeddings.
        margin: m, the hinge margin.
        max_norm: the radius of the ball the embeddings are projected onto.
    """

    name = "cml"
    reference_reduction = "sum"
    has_embeddings = True

    def __init__(
        self,
        embedding_dim: Annotated[int, Field(ge=1)] = 100,
        margin: Annotated[float, Field(gt=0)] = 1.0,
        max_norm: Annotated[float, Field(gt=0)] = 1.0,
    ) -> None:
        super().__init__()
        if int(embedding_dim) <= 0:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim}")
        self.dim = int(embedding_dim)
        self.margin = float(margin)
        self.max_norm = float(max_norm)
        self.sparse = True

    @property
    def embedding_dim(self) -> int:
        return self.dim

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        self.user_emb = skip_init(nn.Embedding, split.n_users, self.dim, sparse=self.sparse)
        self.item_emb = skip_init(nn.Embedding, split.n_items, self.dim, sparse=self.sparse)
        std = 1.0 / math.sqrt(self.dim)
        with torch.no_grad():
            self.user_emb.weight.normal_(0.0, std, generator=generator)
            self.item_emb.weight.normal_(0.0, std, generator=generator)

    def post_step(self, batch: TripletBatch | None = None) -> None:
        """Re-project embeddings to ‖·‖ ≤ max_norm: the rows of `batch` (the only rows a
        row-sparse optimiser step moves), or every row when `batch` is None."""
        if batch is None:
            clip_rows(self.user_emb.weight, None, self.max_norm)
            clip_rows(self.item_emb.weight, None, self.max_norm)
            return
        clip_rows(self.user_emb.weight, torch.unique(batch.users), self.max_norm)
        items = torch.unique(torch.cat([batch.pos, batch.neg]))
        clip_rows(self.item_emb.weight, items, self.max_norm)

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: TripletBatch) -> torch.Tensor:
        """(B,) hinge loss per triple."""
        u = self.user_emb(batch.users)
        v_pos, v_neg = self.item_emb(torch.cat([batch.pos, batch.neg])).split(len(batch.pos))
        d_pos = (u - v_pos).pow(2).sum(-1)
        d_neg = (u - v_neg).pow(2).sum(-1)
        return torch.relu(self.margin + d_pos - d_neg)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """−‖u − v_i‖² for all items: (B,) -> (B, n_items), as 2⟨u, v⟩ − ‖u‖² − ‖v‖²."""
        u = self.user_emb(users)
        v = self.item_emb.weight
        return 2.0 * (u @ v.T) - u.pow(2).sum(-1, keepdim=True) - v.pow(2).sum(-1)

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = gather_rows(self.user_emb, users)
        v = gather_rows(self.item_emb, items)
        return -(u.unsqueeze(1) - v).pow(2).sum(-1)

    def dot_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user (U, d+1), item (I, d+1)) = ([2u, −1], [v, ‖v‖²]): ``user @ itemᵀ`` ranks the
        items of each user as ``score`` does (it differs from it by −‖u‖² per user)."""
        with torch.no_grad():
            u, v = self.user_emb.weight, self.item_emb.weight
            users = torch.cat([2.0 * u, -torch.ones_like(u[:, :1])], dim=1)
            items = torch.cat([v, v.pow(2).sum(-1, keepdim=True)], dim=1)
        return users, items

    # -- representations ----------------------------------------------------------------------
    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_emb.weight if users is None else gather_rows(self.user_emb, users)

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_emb.weight if items is None else gather_rows(self.item_emb, items)
