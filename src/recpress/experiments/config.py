"""Typed run configuration: YAML ⇄ objects, with one clear error per bad key or value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recpress.errors import ConfigError
from recpress.training.config import TrainConfig


class DataConfig(BaseModel):
    """Which data and which split protocol.

    ``dataset`` is a registry name (``recpress datasets`` lists them); ``path`` overrides where
    its files are looked up. ``protocol`` None means the dataset's default (``fixed`` for a
    dataset that ships its split, ``loo`` otherwise).
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str = "citeulike-t-td"
    path: str | None = None
    protocol: str | None = None
    split_seed: int = 0
    min_rating: float | None = None
    kcore: int = Field(0, ge=0)


class ModelConfig(BaseModel):
    """Which base model and its hyperparameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = "bpr"
    embedding_dim: int = Field(200, ge=1)
    init_std: float = Field(0.01, gt=0)


class RunConfig(BaseModel):
    """Everything needed to rerun a training run."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def validation_message(err: ValidationError, source: str = "config") -> str:
    """Turn a pydantic error into one line per bad field: `field: problem (allowed ...)`."""
    lines = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        lines.append(f"{where}: {msg}")
    return f"invalid {source}: " + "; ".join(lines)


def parse_config(cls: type[BaseModel], data: dict[str, Any], source: str = "config"):
    """Validate `data` into `cls`, raising ConfigError that names each bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(validation_message(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def parse_value(text: str) -> Any:
    """Parse a `--set` value with YAML rules (numbers, booleans, lists)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` assignments (from `--set`) to a nested dict."""
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. train.lr=0.001), got {item!r}")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
        node[parts[-1]] = parse_value(value)
    return data
