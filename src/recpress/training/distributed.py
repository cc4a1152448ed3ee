"""Data-parallel training over processes: the torchrun environment, the process group, and the
few collectives the trainer needs.

A process is *distributed* when torchrun (or any launcher setting ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) started it with ``WORLD_SIZE > 1``. `setup`
then joins the process group once per process: NCCL when the process trains on CUDA, gloo
otherwise. Without that environment every helper here is a no-op answering as a single process
(rank 0 of 1), so the single-process path runs exactly as before.

Semantics (docs/distributed.md): ``train.batch_size`` is the *global* batch; each of the W ranks
takes ``batch_size / W`` triples per step from its own contiguous, equal-length shard of the
epoch's shuffled triples (every rank draws the same permutation from the shared seed). The
gradient applied is the gradient of the global batch's loss: with ``reduction_base="sum"`` the
per-rank gradients are summed, with "mean" they are averaged.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from recpress.errors import ConfigError

T = TypeVar("T")

#: environment variables torchrun sets for every worker
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank in 0..world-1, local_rank on its machine, the backend
    ("gloo", "nccl", or "" for a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world), the argument of ``Recommender.epoch_batches``."""
        return (self.rank, self.world)


SINGLE = DistInfo()


def env_world() -> int:
    """WORLD_SIZE from the environment (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        value = os.environ["WORLD_SIZE"]
        raise ConfigError(f"WORLD_SIZE must be an integer, got {value!r}") from exc


def requested() -> bool:
    """Whether the environment asks for more than one process (torchrun with N > 1)."""
    return env_world() > 1


def info() -> DistInfo:
    """This process's rank information (the single-process answer before `setup`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())


def setup(device: str = "auto") -> DistInfo:
    """Join the process group the environment describes (idempotent); returns `info()`.

    `device` is the configured ``train.device``: NCCL is used when it resolves to CUDA (each
    process on ``cuda:LOCAL_RANK``), gloo otherwise. Outside torchrun: nothing, `SINGLE`.
    """
    if not requested():
        return SINGLE
    if dist.is_initialized():
        return info()
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE > 1 but {', '.join(missing)} unset: start the command with "
            "`torchrun --nproc-per-node N -m recpress ...`"
        )
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; train in one process")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    atexit.register(teardown)
    return info()


def teardown() -> None:
    """Leave the process group (safe to call twice, or without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this rank (``cuda:LOCAL_RANK``) when distributed on CUDA."""
    if device.type == "cuda" and info().enabled and device.index is None:
        return torch.device("cuda", info().local_rank)
    return device


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over ranks, in place, returned (the tensor itself when single)."""
    if info().enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# all_gather_single replaces all_gather_into_tensor (deprecated) in recent PyTorch
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

#: tables up to this many rows carry their row ids exactly in a float32 exchange buffer
_FLOAT32_EXACT_ROWS = 2**24


def sum_sparse_grads(params: Sequence[torch.Tensor], scale: float = 1.0) -> None:
    """Replace each parameter's row-sparse ``.grad`` by ``scale`` × its sum over the ranks.

    For T tables with gradients on r_t(w) rows at rank w (``(n_t, *row)`` weights), the new
    gradient of table t is the coalesced sparse tensor Σ_w scale · grad_t(w). Two collectives
    serve every table together (DDP's sparse path spends three per table): an all-reduce of
    the row counts (MAX, ``(T,)``) and one all-gather of a flat buffer holding, per table, the
    ``(max_w r_t(w), 1 + row)`` block [row id, gradient row], padded with id -1. Row ids are
    exact in the buffer's dtype (float32, or float64 for tables above 2^24 rows or float64
    gradients). A parameter without a gradient on a rank contributes no rows there; one without
    a gradient on every rank keeps ``grad = None``. A no-op in one process.
    """
    if not info().enabled or not params:
        return
    world = info().world
    device = params[0].device
    rows: list[tuple[torch.Tensor, torch.Tensor]] = []
    for p in params:
        if p.grad is None:
            no_rows = torch.empty(0, dtype=torch.long, device=device)
            rows.append((no_rows, p.new_empty(0, *p.shape[1:])))
        else:
            g = p.grad.coalesce()
            rows.append((g.indices()[0], g.values()))
    counts = torch.tensor([len(ids) for ids, _ in rows], dtype=torch.long, device=device)
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.long, device=device)
    stats = torch.stack([counts, present])
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    caps, anywhere = stats.tolist()
    wide = any(p.shape[0] > _FLOAT32_EXACT_ROWS or p.dtype == torch.float64 for p in params)
    dtype = torch.float64 if wide else torch.float32
    widths = [int(p[0].numel()) for p in params]
    sizes = [cap * (1 + w) for cap, w in zip(caps, widths, strict=True)]
    buffer = torch.zeros(sum(sizes), dtype=dtype, device=device)
    offset = 0
    for (ids, values), cap, width, size in zip(rows, caps, widths, sizes, strict=True):
        block = buffer[offset : offset + size].view(cap, 1 + width)
        block[:, 0] = -1
        block[: len(ids), 0] = ids.to(dtype)
        block[: len(ids), 1:] = values.reshape(len(ids), width).to(dtype)
        offset += size
    gathered = torch.empty(world * buffer.numel(), dtype=dtype, device=device)
    _all_gather_single(gathered, buffer)
    gathered = gathered.view(world, -1)
    offset = 0
    for p, cap, width, size, used in zip(params, caps, widths, sizes, anywhere, strict=True):
        blocks = gathered[:, offset : offset + size].reshape(world * cap, 1 + width)
        offset += size
        if not used:
            continue
        keep = blocks[:, 0] >= 0
        ids = blocks[keep, 0].long()
        values = blocks[keep, 1:].to(p.dtype).view(-1, *p.shape[1:])
        if scale != 1.0:
            values = values * scale
        p.grad = torch.sparse_coo_tensor(
            ids.unsqueeze(0), values, p.shape, check_invariants=False
        ).coalesce()


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order (``[obj]`` when single)."""
    if not info().enabled:
        return [obj]
    out: list = [None] * info().world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` on every rank."""
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and return its result on every rank (after a barrier).

    An exception on rank 0 is raised there as is and, on the other ranks, as a `ConfigError`
    carrying its message, so no rank waits forever for the others.
    """
    if not info().enabled:
        return fn()
    result: object = None
    error: BaseException | None = None
    if info().is_main:
        try:
            result = fn()
        except Exception as exc:  # shared with the other ranks below
            error = exc
    message, value = broadcast_object((None if error is None else str(error), result))
    if error is not None:
        raise error
    if message is not None:
        raise ConfigError(message)
    return value  # type: ignore[return-value]


def evaluate(model, split, ks=(10, 20, 50), phase: str = "test", **kwargs):
    """`recpress.evaluation.evaluate`, shared over the ranks when distributed.

    Each rank ranks its contiguous part of the evaluated users (``shard=(rank, world)``); the
    per-user values are gathered in rank order, i.e. in ascending user order as in one process,
    and every rank gets the same `EvalResult` with the means over all users (on the CPU the
    same numbers as a single-process evaluation of the same weights).
    """
    import dataclasses

    import numpy as np

    from recpress.evaluation import evaluate as evaluate_all

    rank = info()
    if not rank.enabled:
        return evaluate_all(model, split, ks=ks, phase=phase, **kwargs)
    keep_per_user = bool(kwargs.pop("per_user", False))
    part = evaluate_all(model, split, ks=ks, phase=phase, per_user=True, shard=rank.shard, **kwargs)
    parts = all_gather_objects((part.users, part.per_user))
    users = np.concatenate([u for u, _ in parts])
    per_user = {n: np.concatenate([p[n] for _, p in parts]) for n in part.per_user or {}}
    # the same reduction as one process: the float64 mean of the (n_users,) tensor
    metrics = {n: float(torch.from_numpy(v).mean()) for n, v in per_user.items()}
    return dataclasses.replace(
        part,
        metrics=metrics,
        n_users=int(users.size),
        users=users,
        per_user=per_user if keep_per_user else None,
    )


__all__ = [
    "DistInfo",
    "SINGLE",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "evaluate",
    "info",
    "local_device",
    "on_main",
    "requested",
    "setup",
    "sum_sparse_grads",
    "teardown",
]
