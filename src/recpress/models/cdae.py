"""CDAE: a denoising autoencoder of user rows with a per-user input node."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import skip_init

from recpress.data.sampling import csr_keys, sample_negatives
from recpress.data.types import Split
from recpress.models.base import Recommender, UserBatch
from recpress.models.user_rows import (
    Rows,
    batch_rows,
    buffer_generator,
    draw,
    encode_users,
    glorot_,
    rng_state,
    train_csr,
)


class CDAE(Recommender):
    """Collaborative Denoising Auto-Encoder (Wu et al., 2016): s_ui = W_dec[i]·h_u + b_dec[i].

    h_u = ReLU(W_enc·dropout_q(r_u) + b_enc + v_u), with r_u the binary training row, v_u a
    learned per-user vector (width `hidden_dim`) and dropout_q dropping each observed entry
    with probability q and scaling the kept ones by 1/(1 − q) (training only; scoring encodes
    the full row).

    Loss per user (a "users" batch): Σ_{i∈O_u} softplus(−s_ui) + Σ_{j∈N_u} softplus(s_uj), the
    binary cross-entropy with logits of the observed items (label 1) and of
    n_negatives·|O_u| items drawn uniformly from I \\ O_u with replacement (label 0), read
    from the batch's (B, n_items) logits. The input dropout and the negatives come
    from the model's own generator (buffer ``rng_state``, seeded at build), so resume is exact.

    Initialisation, in this order from the build generator: W_enc, W_dec Glorot-uniform, v_u
    from N(0, init_std²), biases 0; then the seed of the noise generator.

    The gradients of W_enc and of the user vectors are row-sparse while the attribute
    ``sparse`` is True (the default; False before ``build`` makes them dense, same values).

    The reference settings are Adam lr 0.01, weight decay 1e-4, batches of 512 users; the
    trainer owns them (docs/methods.md, "CDAE"). No representation hook: h_u depends on the
    input row, so the model is score-only for KD (``has_embeddings = False``). For serving,
    ``dot_form`` gives the scores as a dot product for the known users: [h_u ; 1]·[W_dec[i] ;
    b_dec[i]].

    Args:
        hidden_dim: h, the width of h_u.
        corruption: q, the input dropout probability.
        n_negatives: sampled negatives per observed item.
        init_std: standard deviation of the user vectors' normal initialisation.
    """

    name = "cdae"
    reference_reduction = "sum"
    has_embeddings = False
    batch_kind = "users"

    indptr: torch.Tensor
    indices: torch.Tensor
    keys: torch.Tensor
    rng_state: torch.Tensor

    def __init__(
        self,
        hidden_dim: Annotated[int, Field(ge=1)] = 60,
        corruption: Annotated[float, Field(ge=0, lt=1)] = 0.2,
        n_negatives: Annotated[int, Field(ge=0)] = 5,
        init_std: Annotated[float, Field(gt=0)] = 0.01,
    ) -> None:
        super().__init__()
        if int(hidden_dim) <= 0:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        if not 0 <= float(corruption) < 1:
            raise ValueError(f"corruption must be in [0, 1), got {corruption}")
        if int(n_negatives) < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        self.hidden_dim = int(hidden_dim)
        self.corruption = float(corruption)
        self.n_negatives = int(n_negatives)
        self.init_std = float(init_std)
        self.sparse = True

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        h = self.hidden_dim
        # skip_init: no draws from the global RNG; every parameter is drawn from `generator`
        self.encoder = skip_init(
            nn.EmbeddingBag, split.n_items, h, mode="sum", sparse=self.sparse
        )  # W_encᵀ
        self.decoder = skip_init(nn.Linear, h, split.n_items)
        self.user_node = skip_init(nn.Embedding, split.n_users, h, sparse=self.sparse)  # v_u
        self.encoder_bias = nn.Parameter(torch.zeros(h))
        with torch.no_grad():
            glorot_(self.encoder.weight, generator)
            glorot_(self.decoder.weight, generator)
            self.user_node.weight.normal_(0.0, self.init_std, generator=generator)
            self.decoder.bias.zero_()
        indptr, indices = train_csr(split)
        self.register_buffer("indptr", indptr, persistent=False)
        self.register_buffer("indices", indices, persistent=False)
        self.register_buffer("keys", csr_keys(indptr, indices, split.n_items), persistent=False)
        self.register_buffer("rng_state", rng_state(generator))

    # -- the network --------------------------------------------------------------------------
    def _hidden(
        self, users: torch.Tensor, rows: Rows, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h_u (B, hidden_dim) of the rows; `keep` (nnz,) scales the entries (dropout)."""
        bag = self.encoder(rows.items, rows.offsets, per_sample_weights=keep)
        return torch.relu(bag + self.encoder_bias + self.user_node(users))

    def _user_hidden(self, users: torch.Tensor) -> torch.Tensor:
        return self._hidden(users, batch_rows(self.indptr, self.indices, users))

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: UserBatch) -> torch.Tensor:
        """(B,) loss per user: BCE with logits over its observed and sampled items (sum)."""
        users = batch.users.to(self.indptr.device)
        rows = batch_rows(self.indptr, self.indices, users)
        device = self.encoder.weight.device
        with buffer_generator(self.rng_state) as g:
            keep = None
            if self.corruption > 0:
                u = draw((rows.items.numel(),), g, device)
                keep = (u >= self.corruption).to(self.encoder.weight.dtype)
                keep = keep / (1.0 - self.corruption)
            neg = sample_negatives(
                self.indptr,
                self.indices,
                users[rows.row],
                self.n_items,
                g,
                max(self.n_negatives, 1),
                keys=self.keys,
            )[:, : self.n_negatives]  # (nnz, n_negatives)
        # the batch's (B, n_items) logits, then the observed and sampled entries of each row
        flat_logits = self.decoder(self._hidden(users, rows, keep)).reshape(-1)
        items = torch.cat([rows.items[:, None], neg], dim=1)  # (nnz, 1 + n_negatives)
        flat = rows.row[:, None] * self.n_items + items
        logits = flat_logits.index_select(0, flat.reshape(-1)).view_as(flat)
        per_entry = F.softplus(-logits[:, 0]) + F.softplus(logits[:, 1:]).sum(1)
        return torch.zeros(len(batch), dtype=per_entry.dtype, device=device).index_add(
            0, rows.row, per_entry
        )

    # -- scoring ------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """W_dec h_u + b_dec for every item: (B,) -> (B, n_items)."""
        return self.decoder(self._user_hidden(users))

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of listed items: users (B,), items (B, K) -> (B, K)."""
        hidden = self._user_hidden(users)
        w = self.decoder.weight[items]  # (B, K, h)
        return torch.einsum("bh,bkh->bk", hidden, w) + self.decoder.bias[items]

    def dot_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user (U, h + 1), item (I, h + 1)) = ([h_u ; 1], [W_dec ; b_dec]): ``user[users] @
        itemᵀ`` equals ``score(users)`` (up to float summation order)."""
        with torch.no_grad():
            hidden = encode_users(self._user_hidden, self.n_users, self.indptr.device)
            users = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1)
            items = torch.cat([self.decoder.weight, self.decoder.bias[:, None]], dim=1)
        return users, items
