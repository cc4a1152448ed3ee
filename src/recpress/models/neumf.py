"""NeuMF: a GMF tower and an MLP tower fused by one linear output layer."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import skip_init

from recpress.data.types import Split
from recpress.errors import ConfigError
from recpress.models.base import Recommender, TripletBatch
from recpress.models.bpr import gather_rows

#: `score` evaluates the MLP on at most this many (user, item, width) elements at a time
SCORE_CHUNK_ELEMENTS = 2**22


class NeuMF(Recommender):
    """Neural matrix factorisation (He et al., 2017).

    s_ui = hᵀ[p^G_u ⊙ q^G_i ; MLP([p^M_u ; q^M_i])] + b, where the four embedding tables have
    width d and the MLP halves the width per hidden layer with ReLU: 2d -> d -> d/2 -> ...
    (`layers` hidden layers; its output has width 2d / 2^layers).

    Loss per triple (u, i, j): "bce" (default) softplus(−s_ui) + softplus(s_uj), the pointwise
    log-loss of the positive and of the sampled negative (one negative, as the DE-RRD releases);
    "bpr" softplus(−(s_ui − s_uj)).

    Initialisation (in this order from the generator): p^G, q^G, p^M, q^M from N(0, init_std²);
    each MLP layer's weight, then h, Glorot-uniform U(±√(6/(fan_in + fan_out))); biases 0.

    Representation KD sees (``representation``): "gmf" (p^G, q^G; default), "mlp" (p^M, q^M) or
    "concat" ([p^G; p^M], [q^G; q^M], width 2d). No single vector pair defines the score, so a
    NeuMF has no MF-form (dot-product) serving export: it is exported in model form (its
    weights, served by ``score``; `recpress.serving.artifact`).

    Args:
        embedding_dim: d, the width of each embedding table.
        layers: the number of hidden MLP layers (>= 1; 2d must stay >= 2^layers).
        init_std: standard deviation of the embeddings' normal initialisation.
        loss: "bce" or "bpr".
        representation: "gmf", "mlp" or "concat".
    """

    name = "neumf"
    reference_reduction = "sum"
    has_embeddings = True

    def __init__(
        self,
        embedding_dim: Annotated[int, Field(ge=1)] = 64,
        layers: Annotated[int, Field(ge=1)] = 1,
        init_std: Annotated[float, Field(gt=0)] = 0.01,
        loss: Literal["bce", "bpr"] = "bce",
        representation: Literal["gmf", "mlp", "concat"] = "gmf",
    ) -> None:
        super().__init__()
        if int(embedding_dim) <= 0:
            raise ValueError(f"embedding_dim must be a positive integer, got {embedding_dim}")
        if int(layers) < 1 or (2 * int(embedding_dim)) >> int(layers) < 1:
            raise ConfigError(
                f"layers={layers} halves the MLP width 2·embedding_dim={2 * int(embedding_dim)} "
                "below 1; use fewer layers or a larger embedding_dim",
                field="model.layers",
            )
        if loss not in ("bce", "bpr"):
            raise ConfigError(f"loss must be 'bce' or 'bpr', got {loss!r}", field="model.loss")
        if representation not in ("gmf", "mlp", "concat"):
            raise ConfigError(
                f"representation must be 'gmf', 'mlp' or 'concat', got {representation!r}",
                field="model.representation",
            )
        self.dim = int(embedding_dim)
        self.layers = int(layers)
        self.init_std = float(init_std)
        self.loss_kind = loss
        self.representation = representation
        self.sparse = True

    def get_params(self) -> dict[str, object]:
        return {
            "embedding_dim": self.dim,
            "layers": self.layers,
            "init_std": self.init_std,
            "loss": self.loss_kind,
            "representation": self.representation,
        }

    @property
    def embedding_dim(self) -> int:
        """Width of ``user_embeddings``: d, or 2d for "concat"."""
        return 2 * self.dim if self.representation == "concat" else self.dim

    @property
    def widths(self) -> list[int]:
        """MLP widths, input first: [2d, d, d/2, ...] (layers + 1 entries)."""
        return [(2 * self.dim) >> k for k in range(self.layers + 1)]

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        d = self.dim
        self.gmf_user = skip_init(nn.Embedding, split.n_users, d, sparse=self.sparse)
        self.gmf_item = skip_init(nn.Embedding, split.n_items, d, sparse=self.sparse)
        self.mlp_user = skip_init(nn.Embedding, split.n_users, d, sparse=self.sparse)
        self.mlp_item = skip_init(nn.Embedding, split.n_items, d, sparse=self.sparse)
        widths = self.widths
        # skip_init: no draws from the global RNG; every parameter is drawn from `generator` below
        self.mlp = nn.ModuleList(
            skip_init(nn.Linear, widths[k], widths[k + 1]) for k in range(self.layers)
        )
        self.head = skip_init(nn.Linear, d + widths[-1], 1)
        with torch.no_grad():
            for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
                table.weight.normal_(0.0, self.init_std, generator=generator)
            for linear in (*self.mlp, self.head):
                fan_out, fan_in = linear.weight.shape
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.zero_()

    # -- scoring ------------------------------------------------------------------------------
    def _pair_scores(
        self, users: torch.Tensor, gmf_items: torch.Tensor, mlp_first: torch.Tensor
    ) -> torch.Tensor:
        """Scores of B users against K items each.

        users: (B,); gmf_items: (B or 1, K, d) the items' q^G; mlp_first: (B or 1, K, w1) the
        items' part of the first MLP layer, W1_item·q^M. Returns (B, K).
        """
        first = self.mlp[0]
        d = self.dim
        p_g = gather_rows(self.gmf_user, users)  # (B, d)
        p_m = gather_rows(self.mlp_user, users)  # (B, d)
        w_head = self.head.weight[0]  # (d + w_L,)
        gmf = (p_g * w_head[:d]).unsqueeze(1).mul(gmf_items).sum(-1)  # (B, K)
        user_first = p_m @ first.weight[:, :d].T + first.bias  # (B, w1)
        x = torch.relu(user_first.unsqueeze(1) + mlp_first)  # (B, K, w1)
        for layer in self.mlp[1:]:
            x = torch.relu(layer(x))
        return gmf + x @ w_head[d:] + self.head.bias[0]

    def _item_first(self, q_m: torch.Tensor) -> torch.Tensor:
        """The item half of the first MLP layer: q^M (..., d) -> (..., w1)."""
        return q_m @ self.mlp[0].weight[:, self.dim :].T

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        q_g = gather_rows(self.gmf_item, items)  # (B, K, d)
        q_m = gather_rows(self.mlp_item, items)
        return self._pair_scores(users, q_g, self._item_first(q_m))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, n_items); the MLP runs on item chunks of B x chunk x width elements."""
        q_g = self.gmf_item.weight
        item_first = self._item_first(self.mlp_item.weight)  # (n_items, w1)
        chunk = max(1, SCORE_CHUNK_ELEMENTS // max(1, len(users) * self.widths[0]))
        parts = [
            self._pair_scores(
                users, q_g[s : s + chunk].unsqueeze(0), item_first[s : s + chunk].unsqueeze(0)
            )
            for s in range(0, self.n_items, chunk)
        ]
        return torch.cat(parts, dim=1)

    def dot_form(self) -> None:
        """None: NeuMF scores are not a dot product of fixed user and item vectors, so there
        is no MF-form (``U @ Iᵀ``) export (artifacts hold the model: model form)."""
        return None

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: TripletBatch) -> torch.Tensor:
        """(B,) loss per triple: BCE of positive and negative (sum), or BPR."""
        pair = self.score_items(batch.users, torch.stack([batch.pos, batch.neg], dim=1))
        s_pos, s_neg = pair[:, 0], pair[:, 1]
        if self.loss_kind == "bpr":
            return F.softplus(-(s_pos - s_neg))
        return F.softplus(-s_pos) + F.softplus(s_neg)

    # -- representations ----------------------------------------------------------------------
    def _representation(
        self, gmf: nn.Embedding, mlp: nn.Embedding, index: torch.Tensor | None
    ) -> torch.Tensor:
        def rows(table: nn.Embedding) -> torch.Tensor:
            return table.weight if index is None else gather_rows(table, index)

        if self.representation == "gmf":
            return rows(gmf)
        if self.representation == "mlp":
            return rows(mlp)
        return torch.cat([rows(gmf), rows(mlp)], dim=-1)

    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        return self._representation(self.gmf_user, self.mlp_user, users)

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        return self._representation(self.gmf_item, self.mlp_item, items)
