"""Run directories: the on-disk record of one training run.

Layout: ``config.yaml`` (everything to rerun), ``split.json`` (dataset, protocol, fingerprint,
counts), ``history.csv``, ``model.safetensors`` (selected weights), ``checkpoint.pt`` (resume
state, removed when the run finishes), ``metrics.json`` (written last: its presence marks a
finished run). Every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recpress.errors import ConfigError, RecPressError
from recpress.fileio import atomic_write_bytes
from recpress.training.trainer import CHECKPOINT

CONFIG = "config.yaml"
METRICS = "metrics.json"
SPLIT = "split.json"


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda p: p.write_text(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def is_finished(run_dir: Path) -> bool:
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
    (see `same_config`) lets a config stored by an older version match.
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
        for name in (
            CONFIG,
            METRICS,
            SPLIT,
            CHECKPOINT,
            "history.csv",
            "model.safetensors",
            "aux.safetensors",
        ):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG, config_yaml)
    return "new"
