"""The one training loop: epochs, evaluation cadence, early stopping, best checkpoint, resume."""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from recpress.data.types import Split
from recpress.errors import ConfigError
from recpress.fileio import atomic_write_bytes
from recpress.models.base import Recommender
from recpress.runs import AUX_WEIGHTS, CHECKPOINT, HISTORY, WEIGHTS  # noqa: F401 (names kept here)
from recpress.training import distributed
from recpress.training.config import TrainConfig
from recpress.training.objective import TrainingObjective
from recpress.training.optim import make_optimizer
from recpress.training.trajectories import record_epoch, records_epoch


def resolve_device(device: str) -> torch.device:
    """ "auto" → CUDA when present, else CPU; under torchrun on CUDA, this rank's card."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.local_device(torch.device(device))


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """Save a module's state dict as safetensors, atomically (contiguous CPU copies)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, lambda p: save_file(state, str(p)))


def typical_epoch_seconds(history: Sequence[dict]) -> float:
    """The median of the history rows' ``seconds`` (0.0 for an empty history).

    The median, not the mean: one pass that spans a suspended process (a laptop asleep, a paused
    VM) or a resume would otherwise dominate the figure reported as the cost of an epoch.
    """
    seconds = [float(row["seconds"]) for row in history if "seconds" in row]
    return statistics.median(seconds) if seconds else 0.0


@dataclass
class FitResult:
    """What a finished fit returns.

    Attributes:
        best_epoch: the selected epoch (0-based pass index).
        valid: validation metrics at the selected epoch; test: test metrics at that epoch.
        history: one dict per epoch (loss, time, and metrics at evaluation epochs).
        epochs_run: passes actually trained (early stopping may end sooner).
        seconds_per_epoch: median training time of one pass (sampling + updates, no
            evaluation); see `typical_epoch_seconds`.
    """

    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    seconds_per_epoch: float = 0.0
    n_eval_users: dict[str, int] = field(default_factory=dict)


class Trainer:
    """Trains a `Recommender` on a `Split`, optionally with weighted distillers.

    Loss per batch (a `TrainingObjective` over the student and the distillers):
    reduce(model(batch)) + Σ_m λ_m · distiller_m.loss(student, batch, epoch), reduce = sum or
    mean over the B triples (``config.reduction_base``).

    With ``run_dir`` set, it writes ``history.csv``, the best weights ``model.safetensors`` and a
    resume checkpoint every ``checkpoint_every`` epochs; calling ``fit`` again on the same
    ``run_dir`` continues from the last checkpoint with the same RNG state, so an interrupted run
    ends exactly as an uninterrupted one would.
    """

    def __init__(self, config: TrainConfig | None = None, **overrides) -> None:
        base = config or TrainConfig()
        self.config = base.model_copy(update=overrides) if overrides else base
        if overrides:
            self.config = TrainConfig.model_validate(self.config.model_dump())

    # ------------------------------------------------------------------------------------------
    def fit(
        self,
        model: Recommender,
        split: Split,
        distillers: Sequence[tuple[torch.nn.Module, float]] = (),
        run_dir: str | Path | None = None,
        progress: bool = True,
        on_evaluation: Callable[[int, dict], None] | None = None,
    ) -> FitResult:
        from recpress.training.distributed import evaluate  # sharded over ranks under torchrun

        cfg = self.config
        rank = distributed.setup(cfg.device)
        device = resolve_device(cfg.device)
        batch_size = _rank_batch_size(cfg.batch_size, rank.world)
        # every rank draws the same numbers from the same generator (same permutation, same
        # distiller samples); each then trains on its own shard of the epoch
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
        if not model.is_built:
            model.build(split, generator=generator)
        objective = TrainingObjective(model, distillers, reduction=cfg.reduction_base)
        objective.to(device)
        step_loss = _wrap_distributed(objective, rank, device, cfg.reduction_base)
        autocast = _autocast(cfg.amp, device)
        params = list(objective.parameters())  # the student's, then each distiller's
        optimizer = make_optimizer(
            cfg.optimizer, params, cfg.lr, cfg.weight_decay, fused=cfg.fused_optimizer
        )
        flush = getattr(optimizer, "flush", None)

        run_path = Path(run_dir) if run_dir is not None else None
        if run_path is not None and rank.is_main:
            run_path.mkdir(parents=True, exist_ok=True)
        distributed.barrier()  # every rank sees rank 0's directory (and its checkpoint)
        # only rank 0 writes the run directory; every rank reads the checkpoint to resume
        write_path = run_path if rank.is_main else None
        history: list[dict] = []
        start_epoch = 0
        best = {"epoch": -1, "value": -float("inf"), "valid": {}, "test": {}, "bad_evals": 0}
        best_state: dict | None = None
        train_seconds = 0.0
        if run_path is not None and (run_path / CHECKPOINT).exists():
            ckpt = torch.load(run_path / CHECKPOINT, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            for i, (d, _) in enumerate(distillers):
                d.load_state_dict(ckpt["distillers"][i])
            generator.set_state(ckpt["generator"])
            history = json.loads(ckpt["history"])
            best = json.loads(ckpt["best"])
            best_state = ckpt.get("best_state")
            start_epoch = int(ckpt["epoch"]) + 1
            train_seconds = float(ckpt.get("train_seconds", 0.0))
            model.to(device)

        bar = _Progress(cfg.epochs, enabled=progress and rank.is_main, start=start_epoch)
        stop = best["bad_evals"] >= (cfg.patience or 10**9) and cfg.selection == "best_valid"
        epoch = start_epoch - 1
        try:
            for epoch in range(start_epoch, cfg.epochs):
                if stop:
                    break
                model.train()
                t0 = time.perf_counter()
                for d, _ in distillers:
                    d.on_epoch_start(model, epoch, generator)
                total = torch.zeros((), device=device)
                batches = model.epoch_batches(split, generator, batch_size, device, rank.shard)
                for batch in batches:
                    with autocast:
                        loss = step_loss(batch, epoch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    step_loss.sync_gradients()
                    optimizer.step()
                    model.post_step(batch)
                    total += loss.detach()  # stays on the device: no host sync per batch
                if rank.enabled:  # the global batch's loss (each rank's loss was scaled by
                    # W for a summed base loss, and is a 1/W share of the mean for a mean)
                    total = distributed.all_reduce_sum(total) / rank.world
                for d, _ in distillers:
                    d.on_epoch_end(epoch)
                is_last = epoch == cfg.epochs - 1
                evaluating = epoch % cfg.eval_every == 0 or is_last
                if flush is not None and (evaluating or distillers):
                    flush()  # pending momentum of the lazy optimiser, before reading the model
                    model.post_step()  # the catch-up moved rows outside the batches too
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                row: dict = {"epoch": epoch, "loss": float(total), "seconds": round(seconds, 4)}
                if write_path is not None and records_epoch(cfg, epoch):  # lists / kept weights
                    caught_up = flush is None or evaluating or bool(distillers)
                    record_epoch(write_path, cfg, epoch, model, split, optimizer, not caught_up)

                if evaluating:
                    valid = evaluate(model, split, ks=cfg.ks, phase="valid").metrics
                    row.update({f"valid_{k}": v for k, v in valid.items()})
                    test = {}
                    if cfg.eval_test_every_eval or is_last:
                        test = evaluate(model, split, ks=cfg.ks, phase="test").metrics
                        row.update({f"test_{k}": v for k, v in test.items()})
                    if cfg.selection == "fixed_epochs":
                        improved = True
                    else:
                        improved = valid[cfg.selection_metric] > best["value"]
                    if improved:
                        if not test:
                            test = evaluate(model, split, ks=cfg.ks, phase="test").metrics
                        best.update(
                            epoch=epoch,
                            value=valid[cfg.selection_metric],
                            valid=valid,
                            test=test,
                            bad_evals=0,
                        )
                        best_state = {
                            k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()
                        }
                        if write_path is not None:
                            save_weights(model, write_path / WEIGHTS)
                    else:
                        best["bad_evals"] += 1
                        if cfg.patience is not None and best["bad_evals"] >= cfg.patience:
                            stop = cfg.selection == "best_valid"
                    if on_evaluation is not None:
                        on_evaluation(epoch, row)
                history.append(row)
                bar.update(epoch, row, best)
                if write_path is not None and (
                    (epoch + 1) % cfg.checkpoint_every == 0 or is_last or stop
                ):
                    self._write_history(write_path, history)
                    self._checkpoint(
                        write_path,
                        epoch,
                        model,
                        optimizer,
                        distillers,
                        generator,
                        history,
                        best,
                        best_state,
                        train_seconds,
                    )
        finally:
            bar.close()

        if best_state is not None:
            model.load_state_dict(best_state)
        epochs_run = len(history)
        return FitResult(
            best_epoch=int(best["epoch"]),
            valid=best["valid"],
            test=best["test"],
            history=history,
            epochs_run=epochs_run,
            seconds_per_epoch=typical_epoch_seconds(history),
        )

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _write_history(run_path: Path, history: list[dict]) -> None:
        columns: list[str] = []
        for row in history:
            columns += [c for c in row if c not in columns]

        def write(p: Path) -> None:
            with open(p, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                writer.writerows(history)

        atomic_write_bytes(run_path / HISTORY, write)

    @staticmethod
    def _checkpoint(
        run_path,
        epoch,
        model,
        optimizer,
        distillers,
        generator,
        history,
        best,
        best_state,
        train_seconds,
    ) -> None:
        state = {
            "epoch": epoch,
            "model": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
            "optimizer": _to_cpu(optimizer.state_dict()),
            "distillers": [
                {k: v.detach().to("cpu") for k, v in d.state_dict().items()} for d, _ in distillers
            ],
            "generator": generator.get_state(),
            "history": json.dumps(history),
            "best": json.dumps(best),
            "best_state": best_state,
            "train_seconds": train_seconds,
        }
        atomic_write_bytes(run_path / CHECKPOINT, lambda p: torch.save(state, p))


def _rank_batch_size(batch_size: int, world: int) -> int:
    """Triples per step on each rank: ``train.batch_size`` is the global batch."""
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch, split evenly over {world} "
            f"processes: make it a multiple of {world}",
            field="train.batch_size",
        )
    return batch_size // world


class _Step:
    """One training step's loss and gradient exchange: ``loss = step(batch, epoch)``, then
    ``loss.backward()`` and ``step.sync_gradients()`` before the optimiser step. In one process
    the loss is the objective's and the exchange does nothing."""

    def __init__(
        self,
        forward: Callable,
        scale: int = 1,
        sparse: Sequence[nn.Parameter] = (),
        world: int = 1,
    ) -> None:
        self._forward = forward
        self._scale = scale
        self._sparse = list(sparse)
        self._world = world

    def __call__(self, batch, epoch: int) -> torch.Tensor:
        loss = self._forward(batch, epoch)
        return loss * self._scale if self._scale != 1 else loss

    def sync_gradients(self) -> None:
        """The row-sparse gradients averaged over the ranks, as DDP averages the dense ones."""
        if self._sparse:
            distributed.sum_sparse_grads(self._sparse, scale=1.0 / self._world)


def _wrap_distributed(
    objective: TrainingObjective, rank: distributed.DistInfo, device: torch.device, reduction: str
) -> _Step:
    """The training step: the objective itself in one process; under torchrun the dense
    parameters in DistributedDataParallel and the row-sparse embedding tables exchanged by
    `distributed.sum_sparse_grads` (two collectives per step for all tables, where DDP's sparse
    path would spend three per table).

    DDP averages the ranks' gradients; the sparse exchange averages too. With a summed base loss
    each rank's loss is scaled by W, so the applied gradient is the sum over ranks: the gradient
    of the global batch's sum. With a mean the average of the equal-size per-rank means is
    already the global mean. NCCL reduces dense gradients only, so there the embedding tables
    produce dense gradients and DDP reduces every parameter.
    """
    if not rank.enabled:
        return _Step(objective)
    from torch.nn.parallel import DistributedDataParallel

    embeddings = [m for m in objective.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    if rank.backend == "nccl":
        for module in embeddings:
            module.sparse = False
    sparse_ids = {id(m.weight) for m in embeddings if m.sparse and m.weight.requires_grad}
    sparse = [p for p in objective.parameters() if id(p) in sparse_ids]
    dense = [p for p in objective.parameters() if p.requires_grad and id(p) not in sparse_ids]
    for p in sparse:  # equal on every rank from the shared seed; made certain once
        torch.distributed.broadcast(p.data, src=0)
    scale = rank.world if reduction == "sum" else 1
    forward: Callable = objective
    if dense:
        # buffers are built identically on every rank from the shared seed: never broadcast;
        # the sparse tables are exchanged by the step itself
        ignored = [name for name, _ in objective.named_buffers()]
        ignored += [n for n, p in objective.named_parameters() if id(p) in sparse_ids]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(objective, ignored)
        forward = DistributedDataParallel(
            objective,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=len(objective.distillers) > 0,
        )
    return _Step(forward, scale, sparse, rank.world)


def _autocast(amp: str, device: torch.device):
    """The autocast context of ``train.amp``: bf16 on the model's device, or a no-op."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return copy.copy(obj)


class _Progress:
    """A rich progress bar over epochs showing the loss and the selection metric."""

    def __init__(self, total: int, enabled: bool, start: int = 0) -> None:
        self._progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, info="")
        self._progress.start()

    def update(self, epoch: int, row: dict, best: dict) -> None:
        if self._progress is None:
            return
        info = f"loss {row['loss']:.4g}"
        if best["epoch"] >= 0:
            info += f" | best valid {best['value']:.4f} @ {best['epoch']}"
        self._progress.update(self._task, completed=epoch + 1, info=info)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
