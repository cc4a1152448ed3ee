"""Helpers of the user-row models (Mult-VAE, CDAE): a batch's training rows, a model-owned RNG.

User-row models (``batch_kind = "users"``) read each batch user's training row from the CSR
they keep at ``build``. Their training noise (input dropout, the VAE's ε, CDAE's negatives) is
drawn from a generator whose state lives in a persistent buffer, so ``state_dict`` (and with it
the trainer's resume checkpoint) carries it and a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from recpress.data.types import Split

#: `encode_users` encodes at most this many users at a time
ENCODE_CHUNK_USERS = 4096


@dataclass(frozen=True)
class Rows:
    """The training rows of B users, flattened (nnz = total number of their training items).

    Attributes:
        row: (nnz,) int64 position of each entry's user in the batch (0..B-1), ascending.
        items: (nnz,) int64 item ids.
        offsets: (B,) int64 start of each user's entries (``nn.EmbeddingBag`` offsets).
        counts: (B,) int64 training items per user.
    """

    row: torch.Tensor
    items: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor


def train_csr(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """(indptr (n_users + 1,), indices (nnz,)) int64 tensors of the training matrix."""
    indptr = torch.as_tensor(split.train.indptr, dtype=torch.int64).clone()
    indices = torch.as_tensor(split.train.indices, dtype=torch.int64).clone()
    return indptr, indices


def batch_rows(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor) -> Rows:
    """The training rows of `users` (B,) from a CSR (indptr, indices), without a Python loop."""
    users = users.to(device=indptr.device, dtype=torch.int64)
    starts = indptr[users]
    counts = indptr[users + 1] - starts
    offsets = torch.cumsum(counts, 0) - counts
    row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), counts)
    position = torch.arange(row.numel(), device=users.device) - offsets[row] + starts[row]
    return Rows(row=row, items=indices[position], offsets=offsets, counts=counts)


def rng_state(generator: torch.Generator | None) -> torch.Tensor:
    """The state (uint8 tensor) of a fresh CPU generator seeded by one draw from `generator`."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(seed).get_state()


@contextmanager
def buffer_generator(state: torch.Tensor) -> Iterator[torch.Generator]:
    """A CPU generator at the state held in the buffer `state`; the buffer advances with it."""
    generator = torch.Generator()
    generator.set_state(state.detach().to("cpu"))
    yield generator
    state.copy_(generator.get_state())


def draw(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device, normal: bool = False
) -> torch.Tensor:
    """U(0, 1) (or N(0, 1) with `normal`) draws of `shape` from a CPU `generator`, on `device`."""
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=generator).to(device)


def glorot_(weight: torch.Tensor, generator: torch.Generator | None) -> None:
    """Glorot-uniform U(±√(6/(fan_in + fan_out))) in place, fans from the last two dims."""
    fan_a, fan_b = weight.shape[-2], weight.shape[-1]
    bound = math.sqrt(6.0 / (fan_a + fan_b))
    weight.uniform_(-bound, bound, generator=generator)


def encode_users(
    encode: Callable[[torch.Tensor], torch.Tensor], n_users: int, device: torch.device
) -> torch.Tensor:
    """``encode(users)`` of every user (n_users, width), in chunks of `ENCODE_CHUNK_USERS`."""
    users = torch.arange(n_users, device=device)
    return torch.cat([encode(chunk) for chunk in users.split(ENCODE_CHUNK_USERS)])
