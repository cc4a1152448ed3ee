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

The trainer writes history, weights and checkpoint; `recpress.experiments.run.train_run` writes
config, split and metrics; `load_run` reads a run back. Only the ``data`` and ``model`` sections
are parsed here, so every stage above the models can load a run without the experiment schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

#: files a run of another config is replaced by on ``overwrite`` (knowledge/ is kept)
RUN_FILES = (CONFIG, METRICS, SPLIT, CHECKPOINT, HISTORY, WEIGHTS, AUX_WEIGHTS)


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
