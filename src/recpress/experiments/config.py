"""Typed run configuration: YAML ⇄ objects, with one clear error per bad key or value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from recpress.data.config import DataConfig
from recpress.errors import ConfigError
from recpress.models.config import ModelConfig
from recpress.schema import load_yaml, parse_config, validation_message
from recpress.training.config import TrainConfig

__all__ = [
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "RunConfig",
    "apply_overrides",
    "load_yaml",
    "normalise_run_yaml",
    "parse_config",
    "parse_value",
    "set_values",
    "student_config",
    "validation_message",
]

#: the teacher name of the single-teacher form ``distill: {teacher: PATH}``
SINGLE_TEACHER = "teacher"


class DistillConfig(BaseModel):
    """Knowledge distillation of the student from one or more teachers.

    ``teachers``: name -> a teacher run directory (or an external teacher .npz, see
    :mod:`recpress.distill.teachers`). The single form ``teacher: PATH`` means
    ``teachers: {teacher: PATH}`` and is how such a config is dumped, so configs stored by older
    versions stay the same. ``teacher_of``: method term -> teacher name; a term not listed uses
    the only teacher (with several teachers every term must be listed). A multi-teacher term
    (HetComp) takes a list of names and defaults to every teacher, in ``teachers`` order.
    ``method``: a
    registered method or a composition such as ``de+rrd``; ``none`` trains a plain student the
    same way. ``weights``: λ per method (missing → the method's default, docs/methods.md §4.0); each
    method's loss is reduced with its own ``reduction`` parameter (sum by default, as the
    references). ``params``: per-method hyperparameters (missing → the paper defaults).
    ``topn``: length of the teacher top-N lists precomputed and cached with each teacher
    (methods that need longer lists compute them).
    """

    model_config = ConfigDict(extra="forbid")

    teachers: dict[str, str]
    teacher_of: dict[str, str | list[str]] = Field(default_factory=dict)
    method: str = "none"
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    topn: int = Field(500, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _single_teacher(cls, data: Any) -> Any:
        if isinstance(data, dict) and "teacher" in data:
            data = dict(data)
            if "teachers" in data:
                raise ValueError(
                    "give either teacher (one path) or teachers (name: path), not both"
                )
            data["teachers"] = {SINGLE_TEACHER: data.pop("teacher")}
        return data

    @field_validator("teachers")
    @classmethod
    def _some_teacher(cls, teachers: dict[str, str]) -> dict[str, str]:
        if not teachers:
            raise ValueError("needs at least one teacher (teachers: {name: run directory or .npz})")
        return teachers

    @field_validator("weights")
    @classmethod
    def _finite(cls, weights: dict[str, float]) -> dict[str, float]:
        import math

        for name, w in weights.items():
            if not math.isfinite(w):
                raise ValueError(f"KD weight of {name!r} must be a finite number, got {w}")
        return weights

    @model_validator(mode="after")
    def _known_teachers(self) -> DistillConfig:
        names = ", ".join(self.teachers)
        for term, given in self.teacher_of.items():
            listed = [given] if isinstance(given, str) else list(given)
            if not listed:
                raise ValueError(f"teacher_of.{term} is an empty list; name teachers from: {names}")
            for name in listed:
                if name not in self.teachers:
                    raise ValueError(
                        f"teacher_of.{term} names teacher {name!r}, but the teachers are: {names}"
                    )
            if len(set(listed)) != len(listed):
                raise ValueError(f"teacher_of.{term} names a teacher twice: {listed}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        data = handler(self)
        if list(self.teachers) == [SINGLE_TEACHER] and not self.teacher_of:
            path = data.pop("teachers")[SINGLE_TEACHER]
            data.pop("teacher_of", None)
            data = {"teacher": path, **data}
        return data

    @property
    def teacher(self) -> str | None:
        """The path of the only teacher (None with several)."""
        return next(iter(self.teachers.values())) if len(self.teachers) == 1 else None

    def teacher_for(self, term: str) -> str:
        """Name of the teacher of method term `term` (ConfigError when ambiguous)."""
        if term in self.teacher_of:
            given = self.teacher_of[term]
            if isinstance(given, str):
                return given
            if len(given) == 1:
                return given[0]
            raise ConfigError(
                f"teacher_of.{term} lists {len(given)} teachers ({', '.join(given)}), but "
                f"method {term!r} learns from one; name one of them",
                field=f"distill.teacher_of.{term}",
            )
        if len(self.teachers) == 1:
            return next(iter(self.teachers))
        raise ConfigError(
            f"method {term!r} names no teacher, and there are several: "
            f"{', '.join(self.teachers)}; set distill.teacher_of.{term} to one of them",
            field=f"distill.teacher_of.{term}",
        )

    def teachers_for(self, term: str) -> list[str]:
        """Names of the teachers of a multi-teacher term: its ``teacher_of`` entry (one name or
        a list), default every teacher in ``teachers`` order."""
        given = self.teacher_of.get(term)
        if given is None:
            return list(self.teachers)
        return [given] if isinstance(given, str) else list(given)


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


def _check_student_model(name: str | None, teacher: Path | None, given: str | None) -> None:
    """ConfigError when the student would be a user-batch model (Mult-VAE, CDAE): the
    distillation losses need triplet batches (docs/methods.md §3.4)."""
    from recpress.models import MODELS

    cls = MODELS.get(name or "")
    if cls is None or cls.batch_kind == "triplets":
        return
    where = "--model" if given is not None else f"the teacher run {teacher}"
    raise ConfigError(
        f"the student model would be {name!r} ({where}), which trains on batches of whole user "
        "rows; the distillation losses are defined on (user, positive, negative) triplets, so "
        f"{name!r} can be a teacher but not a student. Pass --model bpr (or lightgcn, neumf, "
        "cml), and the student's train settings (the teacher's are inherited: e.g. --set "
        "train.batch_size=1024 --set train.reduction_base=sum)",
        field="--model",
    )


def student_config(
    teacher: str | Path | dict[str, str | Path],
    method: str,
    dim: int,
    seed: int | None = None,
    epochs: int | None = None,
    assignments: list[str] | None = None,
    values: dict[str, Any] | None = None,
    teacher_of: dict[str, str | list[str]] | None = None,
    model: str | None = None,
) -> RunConfig:
    """The run config of a student distilled from `teacher` (a path, or name -> path).

    Data and train sections (and the model, unless `model` names another one, which then takes
    its own defaults) come from the (first) teacher run's config.yaml; the student's width is
    `dim`; the teacher's trajectory settings (``trajectory_epochs``, ``trajectory_k``,
    ``keep_checkpoints``) are not copied. ``teacher_of`` maps method terms to teacher names (a
    list for a multi-teacher term).
    ``assignments`` are ``--set`` strings, ``values`` parsed values by dotted key; both are
    applied last. Raises ConfigError on any bad input.
    """
    try:
        dim_ok = int(dim) > 0 and int(dim) == dim
    except (TypeError, ValueError):
        dim_ok = False
    if not dim_ok:
        raise ConfigError(f"student dimension must be a positive integer, got {dim!r}", "--dim")
    named = dict(teacher) if isinstance(teacher, dict) else {SINGLE_TEACHER: teacher}
    if not named:
        raise ConfigError(
            "give a teacher (--teacher PATH or --teachers name=PATH,...)", "--teacher"
        )
    paths = {name: Path(p) for name, p in named.items()}
    for name, tpath in paths.items():
        where = "--teacher" if name == SINGLE_TEACHER else f"--teachers {name}"
        if not tpath.exists():
            raise ConfigError(
                f"teacher {tpath} does not exist; pass a run directory written by `recpress "
                "train` or an .npz teacher",
                field=where,
            )
        if tpath.is_dir() and not (tpath / "config.yaml").is_file():
            raise ConfigError(
                f"teacher {tpath} is not a run directory (no config.yaml)", field=where
            )
    data: dict[str, Any] = {}
    tpath = next((p for p in paths.values() if p.is_dir()), None)
    if tpath is not None:
        tdata = load_yaml(tpath / "config.yaml")
        data = {k: tdata[k] for k in ("data", "train") if k in tdata}
        # what the teacher kept for later students (trajectories, checkpoints) is not the
        # student's business
        data["train"] = {
            k: v
            for k, v in dict(data.get("train", {})).items()
            if k not in ("trajectory_epochs", "trajectory_k", "keep_checkpoints")
        }
        data["model"] = dict(tdata.get("model", {}))
    if model is not None and data.get("model", {}).get("name") != model:
        data["model"] = {"name": model}
    _check_student_model(data.get("model", {}).get("name"), tpath, model)
    data.setdefault("model", {})["embedding_dim"] = int(dim)
    train = data.setdefault("train", {})
    if seed is not None:
        train["seed"] = seed
    if epochs is not None:
        train["epochs"] = epochs
    if list(paths) == [SINGLE_TEACHER] and not teacher_of:
        data["distill"] = {"teacher": str(paths[SINGLE_TEACHER]), "method": method}
    else:
        data["distill"] = {
            "teachers": {name: str(p) for name, p in paths.items()},
            "teacher_of": dict(teacher_of or {}),
            "method": method,
        }
    apply_overrides(data, assignments or [])
    set_values(data, values or {})
    return parse_config(RunConfig, data, "student config")
