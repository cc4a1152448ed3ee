"""Teacher trajectories made after training, from a run's kept weights (`recpress trajectories`).

A run keeps weights at chosen epochs when trained with ``train.keep_checkpoints``
(``checkpoints/epoch_XXXX.safetensors``, 0-based epochs). Besides those, ``model.safetensors``
holds the weights of the run's *selected* epoch: ``best_epoch`` in metrics.json, which is the
last trained epoch under ``selection: fixed_epochs`` and the best validation epoch under
``best_valid``. It is used only for that epoch and only once the run has finished (before,
the selected epoch can still change).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from recpress.errors import ConfigError
from recpress.models import Recommender, build_model
from recpress.models.config import ModelConfig
from recpress.runs import (
    CONFIG,
    METRICS,
    TRAJECTORIES,
    WEIGHTS,
    Trajectories,
    checkpoint_path,
    is_finished,
    kept_checkpoints,
    load_split_of,
    read_json,
    read_trajectories,
    split_mismatch,
    split_record,
    stored_trajectory_epochs,
    write_trajectories,
)
from recpress.schema import load_yaml, parse_config


def weight_sources(run_dir: str | Path) -> dict[int, Path]:
    """0-based epoch -> the weights file holding the model at the end of that epoch."""
    run_dir = Path(run_dir)
    sources = {e: checkpoint_path(run_dir, e) for e in kept_checkpoints(run_dir)}
    if is_finished(run_dir) and (run_dir / WEIGHTS).is_file():
        best = read_json(run_dir / METRICS).get("best_epoch")
        if isinstance(best, int) and best >= 0:
            sources.setdefault(best, run_dir / WEIGHTS)
    return sources


def _describe_sources(sources: dict[int, Path]) -> str:
    kept = sorted(e for e, p in sources.items() if p.name != WEIGHTS)
    selected = [e for e, p in sources.items() if p.name == WEIGHTS]
    parts = [f"kept checkpoints: epochs {kept}" if kept else "no kept checkpoints"]
    if selected:
        parts.append(f"{WEIGHTS} holds the selected epoch {selected[0]}")
    return "; ".join(parts)


def make_trajectories(
    run_dir: str | Path,
    epochs: Sequence[int],
    k: int = 100,
    data_path: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Trajectories:
    """Make (and store in ``trajectories.safetensors``) the run's per-user top-`k` unobserved
    lists at 0-based `epochs`, from the weights kept for those epochs.

    Epochs already stored with at least `k` items are not recomputed (an interrupted call
    resumes); each epoch is written atomically as soon as it is made. New epochs get the stored
    length when it is at least `k`; a larger `k` remakes every stored epoch at `k` (from its
    kept weights) and replaces the file once. ``overwrite`` starts the file afresh. A missing
    epoch is a ConfigError naming the epochs that can be made. `progress` receives one line per
    epoch. Returns the stored trajectories of `epochs`, cut to `k`.
    """
    from safetensors.torch import load_file

    from recpress.evaluation.ranking import top_k_unobserved

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG}); pass a --out of train")
    epochs = sorted({int(e) for e in epochs})
    if not epochs or epochs[0] < 0:
        raise ConfigError(f"--epochs must be 0-based epochs (>= 0), got {epochs}", "--epochs")
    k = int(k)
    if k < 1:
        raise ConfigError(f"--k must be a positive integer, got {k}", "--k")
    path = run_dir / TRAJECTORIES
    if overwrite:
        path.unlink(missing_ok=True)
    stored, stored_k = stored_trajectory_epochs(run_dir)
    sources = weight_sources(run_dir)
    longer = bool(stored) and stored_k < k  # every list is remade at the new length
    if longer and any(e not in sources for e in stored):
        raise ConfigError(
            f"{path} holds top-{stored_k} lists (epochs {stored}) and top-{k} are asked, but "
            f"epochs {[e for e in stored if e not in sources]} have no kept weights to remake "
            f"them from: pass --k {stored_k} or less, or --overwrite to drop the stored lists"
        )
    todo = sorted(set(epochs) | set(stored)) if longer else [e for e in epochs if e not in stored]
    missing = [e for e in todo if e not in sources]
    if missing:
        raise ConfigError(
            f"{run_dir} has no weights for epochs {missing} ({_describe_sources(sources)}"
            "); choose among those, or retrain with train.keep_checkpoints (or "
            "train.trajectory_epochs) listing the epochs"
        )
    if todo:
        split = load_split_of(run_dir, data_path=data_path)
        record = split_mismatch(run_dir, split)
        if record is not None:
            raise ConfigError(
                f"{run_dir} was trained on a split with fingerprint {record['fingerprint']}, "
                f"but the data found now has {split.fingerprint()}; point --data-path at the "
                "original data"
            )
        raw = load_yaml(run_dir / CONFIG)
        config = parse_config(ModelConfig, dict(raw.get("model") or {}), f"{run_dir} model")
        model: Recommender = build_model(config, split)
        length = k if longer or not stored else stored_k  # new epochs keep the stored length
        made = []
        for i, epoch in enumerate(todo, 1):
            source = sources[epoch]
            if progress is not None:
                where = source.relative_to(run_dir)
                progress(f"epoch {epoch} ({i}/{len(todo)}): top-{length} lists from {where}")
            model.load_state_dict(load_file(str(source)))
            lists = top_k_unobserved(model, split, length).unsqueeze(0)
            if longer:  # the file is replaced once every list is made
                made.append(lists)
            else:  # written one epoch at a time: an interrupted call resumes
                write_trajectories(run_dir, [epoch], lists, split_record(split))
        if longer:
            lists = torch.cat(made)
            write_trajectories(run_dir, todo, lists, split_record(split), replace=True)
    elif progress is not None:
        progress(f"epochs {epochs} are stored already")
    return read_trajectories(run_dir, epochs=epochs, k=k)


__all__ = ["Trajectories", "make_trajectories", "weight_sources"]
