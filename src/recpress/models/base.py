"""The one contract every recommender implements."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from recpress.data.sampling import epoch_triples
from recpress.data.types import Split


@dataclass(frozen=True)
class TripletBatch:
    """A mini-batch of B training triples (user, positive item, sampled negative item).

    Attributes:
        users, pos, neg: int64 tensors of shape (B,).
    """

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> TripletBatch:
        return TripletBatch(self.users.to(device), self.pos.to(device), self.neg.to(device))


@dataclass(frozen=True)
class UserBatch:
    """A mini-batch of B training users (for models trained on whole user rows, e.g. Mult-VAE).

    The model reads the users' training rows from the matrix it kept at ``build``.

    Attributes:
        users: int64 tensor of shape (B,).
    """

    users: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> UserBatch:
        return UserBatch(self.users.to(device))


Batch = TripletBatch | UserBatch

BATCH_KINDS = ("triplets", "users")


def shard_range(n: int, shard: tuple[int, int]) -> tuple[int, int]:
    """[start, end) of rank `shard[0]` of `shard[1]` in a sequence of length n.

    Every rank gets the same length n // world (the remainder, at most world - 1 entries of the
    shuffled epoch, is dropped), and the ranks' parts are disjoint and contiguous.
    """
    rank, world = int(shard[0]), int(shard[1])
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    if world == 1:
        return 0, n
    per = n // world
    return rank * per, (rank + 1) * per


def epoch_users(
    split: Split, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Every user with at least one training interaction once, shuffled: (n,) int64 on `device`.

    One ``randperm`` over those users from `generator` (on the generator's device).
    """
    degree = torch.from_numpy(split.train.indptr[1:] - split.train.indptr[:-1])
    active = torch.nonzero(degree > 0).squeeze(1)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(active.numel(), generator=generator, device=gen_device).to("cpu")
    return active[perm].to(device)


class Recommender(nn.Module):
    """Base class of all models (scikit-learn style: the constructor stores hyperparameters only).

    Lifecycle: ``model = BPRMF(embedding_dim=20)`` stores hyperparameters; ``model.build(split,
    generator=g)`` creates the parameters for the training split; learned state lives in
    ``state_dict()``.

    Subclasses implement:
        * ``_build(split, generator)`` to create parameters (``split.train`` is the (n_users,
          n_items) training matrix, for models that need the interaction graph or user rows),
        * ``forward(batch) -> (B,)`` unreduced base loss per triple (the trainer's objective
          reduces it),
        * ``score_items(users (B,), items (B, K)) -> (B, K)`` scores of listed items,
        * ``score(users (B,)) -> (B, n_items)`` raw scores for all items.
    Models with embeddings (``has_embeddings = True``) also implement ``user_embeddings`` /
    ``item_embeddings`` and ``embedding_dim``; score-only models keep ``has_embeddings = False``
    and representation-level distillers refuse them.

    The constructor's arguments are the model's hyperparameters: ``ModelConfig`` validates a
    config's keys against them (their annotations, e.g. ``Annotated[int, Field(ge=1)]``, are the
    checks) and ``get_params`` returns them.
    """

    #: registry name, e.g. "bpr"
    name: ClassVar[str] = ""
    #: how the reference sums the base loss over the batch ("sum" or "mean")
    reference_reduction: ClassVar[str] = "sum"
    #: True when the model has user/item embeddings (``user_embeddings`` etc. return tensors)
    has_embeddings: ClassVar[bool] = False
    #: what ``epoch_batches`` yields: "triplets" (`TripletBatch`) or "users" (`UserBatch`)
    batch_kind: ClassVar[str] = "triplets"

    n_users: int
    n_items: int

    def __init__(self) -> None:
        super().__init__()
        self.n_users = 0
        self.n_items = 0

    # -- construction -------------------------------------------------------------------------
    def get_params(self) -> dict[str, object]:
        """Hyperparameters, as given to the constructor: each constructor argument read back
        from the attribute of the same name (subclasses storing it elsewhere override this)."""
        names = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n in names if n != "self"}

    def build(self, split: Split, generator: torch.Generator | None = None) -> Recommender:
        """Create the parameters for the training `split` (n_users x n_items); returns self."""
        n_users, n_items = split.n_users, split.n_items
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"need n_users > 0 and n_items > 0, got {n_users}, {n_items}")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self._build(split, generator)
        return self

    @property
    def is_built(self) -> bool:
        return self.n_users > 0

    def _build(self, split: Split, generator: torch.Generator | None) -> None:
        raise NotImplementedError

    # -- training -----------------------------------------------------------------------------
    def epoch_batches(
        self,
        split: Split,
        generator: torch.Generator | None,
        batch_size: int,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """One training epoch as mini-batches of at most `batch_size`.

        "triplets": every training interaction once, shuffled, with one uniform negative each
        (``epoch_triples``), in slices of `batch_size`. "users": every user with a training
        interaction once, shuffled (``epoch_users``), in slices. All random draws happen before
        the first batch is yielded, in that fixed order. With ``shard = (rank, world)`` each
        rank takes its own equal-length contiguous part of the shuffled epoch
        (``shard_range``), then slices it.
        """
        if self.batch_kind == "users":
            users = epoch_users(split, generator, device)
            start, end = shard_range(users.numel(), shard)
            users = users[start:end]
            for s in range(0, users.numel(), batch_size):
                yield UserBatch(users[s : s + batch_size])
            return
        if self.batch_kind != "triplets":
            raise ValueError(f"unknown batch_kind {self.batch_kind!r}; known: {BATCH_KINDS}")
        users, pos, neg = epoch_triples(split, generator, device)
        start, end = shard_range(users.numel(), shard)
        if (start, end) != (0, users.numel()):
            users, pos, neg = users[start:end], pos[start:end], neg[start:end]
        for s in range(0, users.numel(), batch_size):
            yield TripletBatch(
                users[s : s + batch_size], pos[s : s + batch_size], neg[s : s + batch_size]
            )

    def forward(self, batch: TripletBatch) -> torch.Tensor:
        """Unreduced base loss per triple (or per user for "users" models), shape (B,)."""
        raise NotImplementedError

    def loss(self, batch: TripletBatch) -> torch.Tensor:
        """Alias of ``forward``: the (B,) unreduced base loss."""
        return self(batch)

    def post_step(self, batch: TripletBatch | None = None) -> None:
        """Hook run after each optimiser step on `batch` (e.g. CML's norm projection of the
        batch's rows), and with None after the lazy optimiser has moved every row; default:
        nothing."""

    # -- scoring ------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Raw scores of every item for each user: users (B,) -> (B, n_items)."""
        raise NotImplementedError

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of given items: users (B,), items (B, K) -> (B, K)."""
        raise NotImplementedError

    # -- representations (representation-level KD); None for score-only models ---------------
    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor | None:
        """User representations (B, d) for `users`, or all (n_users, d) when None."""
        return None

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor | None:
        """Item representations (B, d) for `items`, or all (n_items, d) when None."""
        return None

    @property
    def embedding_dim(self) -> int | None:
        return None

    def num_parameters(self) -> int:
        """Number of inference-time parameters."""
        return int(sum(p.numel() for p in self.parameters()))
