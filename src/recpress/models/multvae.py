"""Mult-VAE: a variational autoencoder of user rows with a multinomial likelihood."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import skip_init

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


class MultVAE(Recommender):
    """Mult-VAE (Liang et al., 2018), score-only: s_ui = logit of π_u = softmax(f_θ(z_u)).

    Encoder: x̃_u = dropout_p(x_u / ‖x_u‖₂) (x_u the binary training row), h = tanh(W₁x̃_u + b₁)
    (width `hidden_dim`), [μ_u ; log σ²_u] = W_q h + b_q (width 2·`latent_dim`). Decoder:
    f(z) = W₃ tanh(W₂z + b₂) + b₃ (n_items logits). Training samples z = μ + σ⊙ε, ε ~ N(0, I);
    scoring uses z = μ, without dropout, from the user's training row (whatever the mode).

    Loss per user (a "users" batch): −Σ_{i∈O_u} log π_ui + β_t·KL(N(μ_u, σ²_u) ‖ N(0, I)),
    KL = ½ Σ_j (σ²_j + μ²_j − 1 − log σ²_j), with β_t = min(anneal_cap, t / anneal_steps) after
    t optimiser updates (the reference code's schedule: with the defaults β reaches 0.2 after
    40k updates; anneal_steps = 0 means β = anneal_cap throughout). t is the buffer ``steps``,
    advanced by ``post_step``, so a resumed run continues the schedule exactly. Dropout and ε
    come from the model's own generator (buffer ``rng_state``, seeded at build).

    Initialisation, in this order from the build generator: W₁, W_q, W₂, W₃ Glorot-uniform,
    each followed by its bias from N(0, 0.001²); then the seed of the noise generator.

    The encoder's gradient is row-sparse (only the items of the batch's rows) while the
    attribute ``sparse`` is True (the default; set it to False before ``build`` for a dense
    one, an implementation option that does not change the gradient's values).

    The paper trains with Adam lr 1e-3, batches of 500 users, no weight decay, the loss
    averaged over the batch (``train.reduction_base: mean``); the trainer owns those settings
    (docs/methods.md, "Mult-VAE").

    For serving, ``dot_form`` gives the logits as a dot product for the known users:
    [tanh(W₂μ_u + b₂) ; 1] · [W₃ row i ; b₃ᵢ].

    Args:
        hidden_dim: width of the encoder's and the decoder's hidden layer (600).
        latent_dim: width of z (200).
        dropout: input dropout probability p on the normalised row.
        anneal_cap: the largest β.
        anneal_steps: β rises by 1/anneal_steps per update until it reaches anneal_cap.
    """

    name = "multvae"
    reference_reduction = "mean"
    has_embeddings = False
    batch_kind = "users"

    indptr: torch.Tensor
    indices: torch.Tensor
    steps: torch.Tensor
    rng_state: torch.Tensor

    def __init__(
        self,
        hidden_dim: Annotated[int, Field(ge=1)] = 600,
        latent_dim: Annotated[int, Field(ge=1)] = 200,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5,
        anneal_cap: Annotated[float, Field(ge=0)] = 0.2,
        anneal_steps: Annotated[int, Field(ge=0)] = 200_000,
    ) -> None:
        super().__init__()
        if int(hidden_dim) <= 0 or int(latent_dim) <= 0:
            raise ValueError(f"widths must be positive, got {hidden_dim}, {latent_dim}")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden_dim = int(hidden_dim)
        self.latent_dim = int(latent_dim)
        self.dropout = float(dropout)
        self.anneal_cap = float(anneal_cap)
        self.anneal_steps = int(anneal_steps)
        self.sparse = True

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        h, z = self.hidden_dim, self.latent_dim
        # skip_init: no draws from the global RNG; every parameter is drawn from `generator`
        self.encoder = skip_init(
            nn.EmbeddingBag, split.n_items, h, mode="sum", sparse=self.sparse
        )  # W₁ᵀ
        self.encoder_bias = nn.Parameter(torch.empty(h))
        self.to_latent = skip_init(nn.Linear, h, 2 * z)
        self.decoder_hidden = skip_init(nn.Linear, z, h)
        self.decoder_out = skip_init(nn.Linear, h, split.n_items)
        with torch.no_grad():
            glorot_(self.encoder.weight, generator)
            self.encoder_bias.normal_(0.0, 0.001, generator=generator)
            for layer in (self.to_latent, self.decoder_hidden, self.decoder_out):
                glorot_(layer.weight, generator)
                layer.bias.normal_(0.0, 0.001, generator=generator)
        indptr, indices = train_csr(split)
        self.register_buffer("indptr", indptr, persistent=False)
        self.register_buffer("indices", indices, persistent=False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("rng_state", rng_state(generator))

    # -- the network --------------------------------------------------------------------------
    def _encode(self, rows: Rows, keep: torch.Tensor | None = None) -> torch.Tensor:
        """[μ ; log σ²] (B, 2·latent_dim) of the rows; `keep` (nnz,) scales the entries
        (dropout)."""
        weights = torch.rsqrt(rows.counts.clamp(min=1).to(self.encoder.weight.dtype))[rows.row]
        if keep is not None:
            weights = weights * keep
        bag = self.encoder(rows.items, rows.offsets, per_sample_weights=weights)
        return self.to_latent(torch.tanh(bag + self.encoder_bias))

    def _decoder_hidden(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder_hidden(z))

    def _user_hidden(self, users: torch.Tensor) -> torch.Tensor:
        """The decoder's hidden layer at z = μ of the users' training rows: (B, hidden_dim)."""
        stats = self._encode(batch_rows(self.indptr, self.indices, users))
        return self._decoder_hidden(stats[:, : self.latent_dim])

    @property
    def beta(self) -> float:
        """β of the next update: min(anneal_cap, steps / anneal_steps)."""
        if self.anneal_steps == 0:
            return self.anneal_cap
        return min(self.anneal_cap, int(self.steps) / self.anneal_steps)

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: UserBatch) -> torch.Tensor:
        """(B,) loss per user: multinomial negative log-likelihood + β·KL."""
        rows = batch_rows(self.indptr, self.indices, batch.users)
        device = self.encoder.weight.device
        n_batch = len(batch)
        with buffer_generator(self.rng_state) as g:
            keep = None
            if self.dropout > 0:
                u = draw((rows.items.numel(),), g, device)
                keep = (u >= self.dropout).to(self.encoder.weight.dtype) / (1.0 - self.dropout)
            eps = draw((n_batch, self.latent_dim), g, device, normal=True)
        stats = self._encode(rows, keep)
        mu, logvar = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decoder_out(self._decoder_hidden(z))  # (B, n_items)
        log_norm = torch.logsumexp(logits, dim=1)  # (B,)
        positive = logits[rows.row, rows.items]
        log_lik = torch.zeros_like(log_norm).index_add(0, rows.row, positive)
        nll = rows.counts.to(log_norm.dtype) * log_norm - log_lik
        kl = 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar).sum(1)
        return nll + self.beta * kl

    def post_step(self, batch: UserBatch | None = None) -> None:
        """One more update on the β schedule (after each optimiser step on a batch)."""
        if batch is not None:
            self.steps.add_(1)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item at z = μ: (B,) -> (B, n_items)."""
        return self.decoder_out(self._user_hidden(users))

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of listed items: users (B,), items (B, K) -> (B, K)."""
        hidden = self._user_hidden(users)
        w = self.decoder_out.weight[items]  # (B, K, hidden)
        return torch.einsum("bh,bkh->bk", hidden, w) + self.decoder_out.bias[items]

    def dot_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user (U, hidden + 1), item (I, hidden + 1)) = ([tanh(W₂μ_u + b₂) ; 1], [W₃ ; b₃]):
        ``user[users] @ itemᵀ`` equals ``score(users)`` (up to float summation order)."""
        with torch.no_grad():
            hidden = encode_users(self._user_hidden, self.n_users, self.indptr.device)
            users = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1)
            items = torch.cat([self.decoder_out.weight, self.decoder_out.bias[:, None]], dim=1)
        return users, items
