"""Run directories: the on-disk record of one training run, and its one owner.

Layout of a run directory (every file written atomically)::

    config.yaml         everything to rerun (data, model, train, distill, profile sections)
    split.json          dataset, protocol, split fingerprint, counts
    history.csv         one row per evaluated epoch
    model.safetensors   the selected weights of the model
    aux.safetensors     the selected weights of KD auxiliary modules (distilled students only)
    checkpoint.pt       resume state; removed when the run finishes
    metrics.json        written last: its presence marks a finished run
    profile.json        the efficiency profile (when profiled)
    knowledge/          teacher knowledge cached when the run serves as a teacher
    trajectories.safetensors  per-user top-K lists at chosen epochs (teacher trajectories)
    checkpoints/        weights kept at chosen epochs: epoch_XXXX.safetensors (0-based epoch)

The trainer writes history, weights and checkpoint; `recpress.experiments.run.train_run` writes
config, split and metrics; `load_run` reads a run back. Only the ``data`` and ``model`` sections
are parsed here, so every stage above the models can load a run without the experiment schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recpress.data.config import DataConfig, load_split_for
from recpress.data.types import Split
from recpress.errors import ConfigError, RecPressError
from recpress.fileio import atomic_write_bytes
from recpress.models import Recommender, build_model
from recpress.models.config import ModelConfig
from recpress.schema import load_yaml, parse_config

CONFIG = "config.yaml"
SPLIT = "split.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
WEIGHTS = "model.safetensors"
AUX_WEIGHTS = "aux.safetensors"
CHECKPOINT = "checkpoint.pt"
PROFILE = "profile.json"
KNOWLEDGE_DIR = "knowledge"
TRAJECTORIES = "trajectories.safetensors"
CHECKPOINTS_DIR = "checkpoints"

#: files a run of another config is replaced by on ``overwrite`` (knowledge/ is kept;
#: checkpoints/ goes too)
RUN_FILES = (CONFIG, METRICS, SPLIT, CHECKPOINT, HISTORY, WEIGHTS, AUX_WEIGHTS, TRAJECTORIES)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader sees the old or the new file, never half)."""
    atomic_write_bytes(path, lambda p: p.write_text(text))


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def is_finished(run_dir: Path) -> bool:
    """Whether the run's metrics.json exists (it is written last)."""
    return (Path(run_dir) / METRICS).is_file()


def same_config(existing_yaml: str, config_yaml: str, normalise: Callable[[str], str]) -> bool:
    """Whether a stored config means the same as `config_yaml` under the current schema.

    The stored text is re-read with `normalise` (parse, fill defaults, dump), so a setting added
    to the schema later, with a default that keeps the old behaviour, does not orphan old runs.
    A stored config the current schema rejects is a different config.
    """
    if existing_yaml == config_yaml:
        return True
    try:
        return normalise(existing_yaml) == config_yaml
    except (RecPressError, ValueError, TypeError):
        return False


def prepare_run_dir(
    run_dir: Path,
    config_yaml: str,
    overwrite: bool = False,
    normalise: Callable[[str], str] | None = None,
) -> str:
    """Create or reuse `run_dir` for a run with this config.

    Returns "new", "resume" (same config, checkpoint present), "finished" (same config, done).
    A directory holding a run of another config is refused unless ``overwrite``. `normalise`
    (see `same_config`) lets a config stored by an older version match; the stored text is
    then rewritten in the current schema.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a directory; choose another --out")
    existing = run_dir / CONFIG
    if existing.is_file() and not overwrite:
        stored = existing.read_text()
        if stored != config_yaml and normalise and same_config(stored, config_yaml, normalise):
            write_text(existing, config_yaml)  # the same run, now in the current schema
            stored = config_yaml
        if stored != config_yaml:
            raise ConfigError(
                f"{run_dir} holds a run with a different config.yaml; use another --out, or "
                "--overwrite to start over"
            )
        if is_finished(run_dir):
            return "finished"
        return "resume" if (run_dir / CHECKPOINT).exists() else "new"
    if overwrite and run_dir.exists():
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for kept in (run_dir / CHECKPOINTS_DIR).glob("epoch_*.safetensors"):
            kept.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG, config_yaml)
    return "new"


def split_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The run's split.json record (dataset, protocol, fingerprint, counts), or None."""
    record = Path(run_dir) / SPLIT
    return read_json(record) if record.is_file() else None


def split_mismatch(run_dir: Path, split: Split) -> dict[str, Any] | None:
    """The run's split.json record when its fingerprint differs from `split`'s, else None
    (also None for a run that recorded no fingerprint)."""
    record = split_fingerprint(run_dir)
    expected = (record or {}).get("fingerprint")
    return record if expected and expected != split.fingerprint() else None


@dataclass(frozen=True)
class LoadedRun:
    """A saved run read back: `config` is the raw config.yaml mapping, `model` in eval mode."""

    path: Path
    config: Mapping[str, Any]
    model: Recommender
    split: Split
    metrics: dict[str, Any] | None

    @property
    def data_config(self) -> DataConfig:
        return parse_config(DataConfig, dict(self.config.get("data") or {}), f"{self.path} data")

    @property
    def model_config(self) -> ModelConfig:
        return parse_config(ModelConfig, dict(self.config.get("model") or {}), f"{self.path} model")


def check_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` as a Path, or ConfigError when it holds no config.yaml or no weights yet."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG}); pass a --out of train")
    if not (run_dir / WEIGHTS).is_file():
        raise ConfigError(f"{run_dir} has no {WEIGHTS} yet: train it first (rerun `train`)")
    return run_dir


def load_split_of(run_dir: str | Path, data_path: str | Path | None = None) -> Split:
    """The split a run was trained on, read from its ``data`` section (`data_path` overrides
    where the dataset files are looked up)."""
    run_dir = Path(run_dir)
    raw = load_yaml(run_dir / CONFIG)
    data = dict(raw.get("data") or {})
    if data_path is not None:
        data["path"] = str(data_path)
    return load_split_for(parse_config(DataConfig, data, f"{run_dir / CONFIG} data"))


def load_run(run_dir: str | Path, split: Split | None = None) -> LoadedRun:
    """Rebuild a saved run: its model with the selected weights, its split, config, metrics.

    `split` (default: loaded from the run's ``data`` section) is checked against the
    fingerprint recorded in split.json.
    """
    from safetensors.torch import load_file

    run_dir = check_run_dir(run_dir)
    raw = load_yaml(run_dir / CONFIG)
    source = str(run_dir / CONFIG)
    model_config = parse_config(ModelConfig, dict(raw.get("model") or {}), f"{source} model")
    if split is None:
        data = parse_config(DataConfig, dict(raw.get("data") or {}), f"{source} data")
        split = load_split_for(data)
    record = split_mismatch(run_dir, split)
    if record is not None:
        raise ConfigError(
            f"{run_dir} was trained on a split with fingerprint {record['fingerprint']}, but "
            f"the data found now has {split.fingerprint()}; point --data-path at the original data"
        )
    model = build_model(model_config, split)
    model.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    model.eval()
    metrics = read_json(run_dir / METRICS) if is_finished(run_dir) else None
    return LoadedRun(path=run_dir, config=raw, model=model, split=split, metrics=metrics)


# -- teacher trajectories and kept checkpoints ---------------------------------------------------


def split_record(split: Split) -> dict[str, Any]:
    """What split.json records of `split`: dataset, protocol, fingerprint and counts."""
    return {
        "dataset": split.dataset,
        "protocol": split.protocol,
        "fingerprint": split.fingerprint(),
        **split.stats(),
    }


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """Where the weights kept at 0-based `epoch` live: ``checkpoints/epoch_XXXX.safetensors``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"epoch_{int(epoch):04d}.safetensors"


def kept_checkpoints(run_dir: str | Path) -> list[int]:
    """The 0-based epochs whose weights are kept in `run_dir`'s checkpoints/, ascending."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("epoch_*.safetensors"):
        digits = p.name[len("epoch_") : -len(".safetensors")]
        if digits.isdigit():
            out.append(int(digits))
    return sorted(out)


@dataclass
class Trajectories:
    """Per-user top-K lists of one model at several epochs (docs/methods.md, HetComp).

    Attributes:
        epochs: the 0-based epochs, ascending (C of them).
        lists: (C, n_users, K) int32 item ids, best first; the user's training items are
            excluded; a user with fewer than K other items is padded with -1 at the end.
        k: K.
        fingerprint: the split record (dataset, protocol, fingerprint, counts) of the split
            the lists were made on, or None when unknown.
    """

    epochs: list[int]
    lists: torch.Tensor
    k: int
    fingerprint: dict[str, Any] | None

    def at(self, epoch: int) -> torch.Tensor:
        """(n_users, K) int32 lists at 0-based `epoch`."""
        return self.lists[self.epochs.index(int(epoch))]


def _trajectory_command(run_dir: Path, epochs: Sequence[int] | None) -> str:
    shown = ",".join(str(e) for e in epochs) if epochs else "E1,E2,..."
    return f"recpress trajectories {run_dir} --epochs {shown}"


def _read_raw(path: Path) -> tuple[dict[int, torch.Tensor], int, dict[str, Any] | None]:
    from safetensors import safe_open

    lists: dict[int, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        for key in fh.keys():
            lists[int(key[len("epoch_") :])] = fh.get_tensor(key)
    split = json.loads(meta["split"]) if meta.get("split") else None
    return lists, int(meta.get("k", 0)), split


def write_trajectories(
    run_dir: str | Path,
    epochs: Sequence[int],
    lists: torch.Tensor,
    fingerprint: Mapping[str, Any] | None,
    replace: bool = False,
) -> Path:
    """Store (C, n_users, K) int32 `lists` of 0-based `epochs` in ``trajectories.safetensors``.

    The write is atomic and merges with the epochs already stored (a stored epoch given again
    is replaced); ``replace`` drops the stored ones instead. Stored lists of another K or
    another split (fingerprint) are a ConfigError: remove the file to start over. Returns the
    file's path.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    epochs = [int(e) for e in epochs]
    lists = torch.as_tensor(lists)
    if lists.dim() == 2 and len(epochs) == 1:
        lists = lists.unsqueeze(0)
    if lists.dim() != 3 or lists.shape[0] != len(epochs):
        raise ValueError(
            f"lists must be (C={len(epochs)}, n_users, K), got shape {tuple(lists.shape)}"
        )
    if len(set(epochs)) != len(epochs) or any(e < 0 for e in epochs):
        raise ValueError(f"epochs must be distinct 0-based epochs, got {epochs}")
    k = int(lists.shape[2])
    path = run_dir / TRAJECTORIES
    stored: dict[int, torch.Tensor] = {}
    record = dict(fingerprint) if fingerprint is not None else None
    if path.is_file() and not replace:
        stored, stored_k, stored_split = _read_raw(path)
        old_fp = (stored_split or {}).get("fingerprint")
        new_fp = (record or {}).get("fingerprint")
        if old_fp and new_fp and old_fp != new_fp:
            raise ConfigError(
                f"{path} holds lists of a split with fingerprint {old_fp}, these are of "
                f"{new_fp}; remove the file to store lists of the new split"
            )
        if stored and stored_k != k:
            raise ConfigError(
                f"{path} holds top-{stored_k} lists (epochs {sorted(stored)}), these are "
                f"top-{k}; use K={stored_k}, or remove the file to store top-{k} lists"
            )
        record = record or stored_split
    for e, rows in zip(epochs, lists.to(torch.int32).cpu(), strict=True):
        stored[e] = rows.contiguous()
    tensors = {f"epoch_{e:04d}": stored[e] for e in sorted(stored)}
    meta = {"k": str(k), "epochs": json.dumps(sorted(stored))}
    if record is not None:
        meta["split"] = json.dumps(record)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda p: save_file(tensors, str(p), metadata=meta))
    return path


def stored_trajectory_epochs(run_dir: str | Path) -> tuple[list[int], int]:
    """(epochs, K) stored in `run_dir`'s trajectories file; ([], 0) when there is none."""
    path = Path(run_dir) / TRAJECTORIES
    if not path.is_file():
        return [], 0
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta.get("epochs", "[]")), int(meta.get("k", 0))


def read_trajectories(
    run_dir: str | Path,
    epochs: Sequence[int] | None = None,
    k: int | None = None,
    split: Split | None = None,
) -> Trajectories:
    """The teacher trajectories stored in `run_dir` (see `Trajectories`).

    `epochs` selects (and requires) those epochs, `k` cuts the lists to their first k items
    (and requires K >= k), `split` requires the lists to be of that split (fingerprint). Each
    failed requirement, and a missing file, is a ConfigError whose message says what to run.
    """
    run_dir = Path(run_dir)
    path = run_dir / TRAJECTORIES
    if not path.is_file():
        raise ConfigError(
            f"teacher {run_dir} has no trajectories ({TRAJECTORIES}); make them from its kept "
            f"checkpoints with `{_trajectory_command(run_dir, epochs)}`, or retrain it with "
            "train.trajectory_epochs set"
        )
    stored, stored_k, record = _read_raw(path)
    if split is not None:
        expected = (record or {}).get("fingerprint")
        if expected and expected != split.fingerprint():
            raise ConfigError(
                f"the trajectories of {run_dir} were made on a split with fingerprint "
                f"{expected} ({(record or {}).get('dataset')}), but the student's split has "
                f"{split.fingerprint()} ({split.dataset}): teacher and student must use the "
                "same split"
            )
    if k is not None and int(k) > stored_k:
        raise ConfigError(
            f"{path} holds top-{stored_k} lists but top-{int(k)} are asked; make longer ones "
            f"with `{_trajectory_command(run_dir, sorted(stored))} --k {int(k)}` (from the "
            f"run's kept weights), or ask for K <= {stored_k}"
        )
    chosen = sorted(stored) if epochs is None else [int(e) for e in epochs]
    missing = [e for e in chosen if e not in stored]
    if missing:
        raise ConfigError(
            f"{path} has no lists for epochs {missing} (it holds {sorted(stored)}); make them "
            f"with `{_trajectory_command(run_dir, missing)}`"
        )
    if not chosen:
        raise ConfigError(f"{path} holds no lists; make them with `recpress trajectories`")
    cut = stored_k if k is None else int(k)
    lists = torch.stack([stored[e][:, :cut] for e in chosen])
    return Trajectories(epochs=chosen, lists=lists, k=cut, fingerprint=record)
