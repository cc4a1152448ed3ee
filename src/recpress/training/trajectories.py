"""Teacher trajectories during training: per-user top-K lists and kept weights at chosen epochs.

At the end of each epoch in ``train.trajectory_epochs`` the trainer stores the current model's
per-user top-``trajectory_k`` unobserved lists in the run's ``trajectories.safetensors``; at
each epoch in ``train.keep_checkpoints`` it keeps the weights in
``checkpoints/epoch_XXXX.safetensors``. Both read the model as the evaluation would: with the
lazy optimiser's pending momentum applied. When the trainer would not have applied it at that
epoch, it is applied for the reading only and undone afterwards, so keeping trajectories never
changes the training itself (the run ends with the same weights as without them).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from recpress.data.types import Split
from recpress.models.base import Recommender
from recpress.runs import checkpoint_path, split_record, write_trajectories
from recpress.training.config import TrainConfig


def records_epoch(config: TrainConfig, epoch: int) -> bool:
    """Whether 0-based `epoch` stores trajectory lists or keeps its weights."""
    return epoch in config.trajectory_epochs or epoch in config.keep_checkpoints


@contextmanager
def caught_up(model: Recommender, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """The model with the lazy optimiser's pending updates applied, for reading only.

    Inside the block the weights are those after ``optimizer.flush()`` (and the model's
    ``post_step``); on exit the model's state and the optimiser's state are restored in place,
    bit for bit. An optimiser without ``flush`` (dense Adam) leaves nothing pending.
    """
    flush = getattr(optimizer, "flush", None)
    if flush is None:
        yield
        return
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_params = [p.detach().clone() for p in params]
    saved_state = {
        p: {k: (v.clone() if isinstance(v, torch.Tensor) else copy.copy(v)) for k, v in s.items()}
        for p, s in optimizer.state.items()
    }
    try:
        flush()
        model.post_step()
        yield
    finally:
        with torch.no_grad():
            for p, saved in zip(params, saved_params, strict=True):
                p.copy_(saved)
            for p, saved in saved_state.items():
                state = optimizer.state[p]
                for k, v in saved.items():
                    if isinstance(v, torch.Tensor) and isinstance(state.get(k), torch.Tensor):
                        state[k].copy_(v)
                    else:
                        state[k] = v
            model.load_state_dict(saved_model)


def record_epoch(
    run_dir: str | Path,
    config: TrainConfig,
    epoch: int,
    model: Recommender,
    split: Split,
    optimizer: torch.optim.Optimizer | None = None,
    pending: bool = False,
) -> None:
    """Store what `config` asks for at 0-based `epoch`: the (n_users, trajectory_k) int32 lists
    and/or the kept weights. ``pending``: the optimiser still holds updates the model does not
    show yet (they are applied for the reading only, see `caught_up`)."""
    from safetensors.torch import save_file

    from recpress.evaluation.ranking import top_k_unobserved
    from recpress.fileio import atomic_write_bytes

    run_dir = Path(run_dir)
    if pending and optimizer is not None:
        with caught_up(model, optimizer):
            record_epoch(run_dir, config, epoch, model, split)
        return
    if epoch in config.keep_checkpoints:
        path = checkpoint_path(run_dir, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        atomic_write_bytes(path, lambda p: save_file(state, str(p)))
    if epoch in config.trajectory_epochs:
        k = min(config.trajectory_k, split.n_items)
        lists = top_k_unobserved(model, split, k)
        write_trajectories(run_dir, [epoch], lists.unsqueeze(0), split_record(split))
