"""Typed run configuration: YAML ⇄ objects, with one clear error per bad key or value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recpress.errors import ConfigError
from recpress.training.config import TrainConfig


class DataConfig(BaseModel):
    """Which data and which split protocol.

    ``dataset`` is a registry name (``recpress datasets`` lists them); ``path`` overrides where
    its files are looked up. Your own files: ``interactions`` (one file, split by ``protocol``)
    or ``train``/``valid``/``test`` (a fixed split), read as ``format``; then ``dataset`` is
    only a label. ``protocol`` None means the dataset's default (``fixed`` for a
    dataset that ships its split, ``loo`` otherwise).
    """

    model_config = ConfigDict(extra="forbid")

    dataset: str = "citeulike-t-td"
    path: str | None = None
    protocol: str | None = None
    split_seed: int = 0
    min_rating: float | None = None
    kcore: int = Field(0, ge=0)
    interactions: str | None = Field(None, description="your own interactions file")
    train: str | None = Field(None, description="your own training file (fixed split)")
    valid: str | None = None
    test: str | None = None
    format: str | None = Field(
        None, description="users-dat, pairs, movielens, lightgcn, recbole or table"
    )
    columns: dict[str, str] | None = Field(
        None, description="table format: column names for user, item, rating, timestamp"
    )


class ModelConfig(BaseModel):
    """Which base model and its hyperparameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = "bpr"
    embedding_dim: int = Field(200, ge=1)
    init_std: float = Field(0.01, gt=0)


class DistillConfig(BaseModel):
    """Knowledge distillation of the student from a teacher.

    ``teacher``: a teacher run directory (or an external teacher .npz, see
    :mod:`recpress.distill.teachers`). ``method``: a registered method or a composition such as
    ``de+rrd``; ``none`` trains a plain student the same way. ``weights``: λ per method
    (missing → the method's default, methods.md); each method's loss is reduced with its own
    ``reduction`` parameter (sum by default, as the references). ``params``: per-method
    hyperparameters (missing → the paper defaults). ``topn``: length of the teacher top-N lists
    precomputed and cached with the teacher (methods that need longer lists compute them).
    """

    model_config = ConfigDict(extra="forbid")

    teacher: str
    method: str = "none"
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    topn: int = Field(500, ge=1)

    @field_validator("weights")
    @classmethod
    def _finite(cls, weights: dict[str, float]) -> dict[str, float]:
        import math

        for name, w in weights.items():
            if not math.isfinite(w):
                raise ValueError(f"KD weight of {name!r} must be a finite number, got {w}")
        return weights


class RunConfig(BaseModel):
    """Everything needed to rerun a training run."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig | None = None
    profile: bool = Field(
        True, description="measure the efficiency profile (size, latency, throughput) at the end"
    )

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        if data.get("distill") is None:  # keep the config.yaml of plain runs as before
            data.pop("distill", None)
        return yaml.safe_dump(data, sort_keys=False)


def normalise_run_yaml(text: str) -> str:
    """A stored run config.yaml re-read with the current schema (defaults filled) and dumped."""
    return parse_config(RunConfig, yaml.safe_load(text) or {}).to_yaml()


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


def set_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set already-parsed values by dotted key (``train.lr``) in a nested dict."""
    for key, value in values.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is not a section")
        node[parts[-1]] = value
    return data


def student_config(
    teacher: str | Path,
    method: str,
    dim: int,
    seed: int | None = None,
    epochs: int | None = None,
    assignments: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """The run config of a student distilled from `teacher`.

    Data and train sections (and the model name) come from the teacher run's config.yaml; the
    student's width is `dim`. ``assignments`` are ``--set`` strings, ``values`` parsed values by
    dotted key; both are applied last. Raises ConfigError on any bad input.
    """
    try:
        dim_ok = int(dim) > 0 and int(dim) == dim
    except (TypeError, ValueError):
        dim_ok = False
    if not dim_ok:
        raise ConfigError(f"student dimension must be a positive integer, got {dim!r}", "--dim")
    tpath = Path(teacher)
    if not tpath.exists():
        raise ConfigError(
            f"teacher {tpath} does not exist; pass a run directory written by `recpress train` "
            "or an .npz teacher",
            field="--teacher",
        )
    data: dict[str, Any] = {}
    if tpath.is_dir():
        if not (tpath / "config.yaml").is_file():
            raise ConfigError(
                f"teacher {tpath} is not a run directory (no config.yaml)", field="--teacher"
            )
        tdata = load_yaml(tpath / "config.yaml")
        data = {k: tdata[k] for k in ("data", "train") if k in tdata}
        data["model"] = dict(tdata.get("model", {}))
    data.setdefault("model", {})["embedding_dim"] = int(dim)
    train = data.setdefault("train", {})
    if seed is not None:
        train["seed"] = seed
    if epochs is not None:
        train["epochs"] = epochs
    data["distill"] = {"teacher": str(tpath), "method": method}
    apply_overrides(data, assignments or [])
    set_values(data, values or {})
    return parse_config(RunConfig, data, "student config")
