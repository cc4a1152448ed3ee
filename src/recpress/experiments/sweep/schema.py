"""The sweep config: data, a teacher, a student grid, named grids and what the report shows.

Layout of a sweep directory::

    sweep.yaml                      the sweep config (normalised); a different config refuses
    teacher/                        the teacher run (trained once)
    runs/<dim>/<method>/seed<k>/    one student run each (method "none" = plain student)
    report.md, report.html          written by `recpress report`

Every run is a normal run directory: a finished run is skipped, an interrupted one resumes from
its last checkpoint. Students train a fixed schedule evaluating validation *and* test every
``eval_every`` epochs (history.csv), so the report reads the fixed-epoch result (last evaluation)
and the validation-selected one (best validation metric) from the same history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recpress.errors import ConfigError
from recpress.experiments.config import (
    DataConfig,
    ModelConfig,
    apply_overrides,
    load_yaml,
    parse_config,
)
from recpress.experiments.reference import NO_REFERENCE, load_reference, resolve_reference
from recpress.training.config import TrainConfig

SWEEP_FILE = "sweep.yaml"
TEACHER_DIR = "teacher"
TEACHERS_DIR = "teachers"
RUNS_DIR = "runs"
SELECTIONS = ("fixed_epochs", "best_valid")


def _student_train_default() -> TrainConfig:
    return TrainConfig(epochs=101, selection="fixed_epochs", eval_every=10, patience=None)


class TeacherSpec(BaseModel):
    """The teacher: trained once (seed ``train.seed``) into ``teacher/``."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=_student_train_default)


class ArmSpec(BaseModel):
    """A named variant of a method, e.g. ``htd-paper: {method: htd, params: {htd: {...}}}``."""

    model_config = ConfigDict(extra="forbid")

    method: str
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    teacher_of: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="method term -> teacher name, or names for a multi-teacher term (overrides "
        "the grid's)",
    )


class StudentsSpec(BaseModel):
    """The student grid.

    ``methods`` are registered methods or compositions (``none``, ``ftd``, ``htd``, ``de``,
    ``rrd``, ``de+rrd``, ``htd+rrd``, ...) or names of ``arms``. ``weights`` / ``params`` apply
    per component method to every composition that uses it (an arm's own weights/params override
    them).
    """

    model_config = ConfigDict(extra="forbid")

    dims: list[int] = Field(default_factory=lambda: [10, 20, 100, 200])
    methods: list[str] = Field(default_factory=lambda: ["none", "ftd", "htd"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    model: str | None = Field(None, description="model name; default: the teacher's")
    init_std: float | None = Field(None, gt=0)
    train: TrainConfig = Field(default_factory=_student_train_default)
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    topn: int = Field(500, ge=1)
    arms: dict[str, ArmSpec] = Field(default_factory=dict)
    teacher_of: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="method term -> name under `teachers` (needed for every term with several); "
        "a multi-teacher term (hetcomp) takes a list and defaults to every teacher",
    )

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if not dims or any(d <= 0 for d in dims):
            raise ValueError("dims must be a non-empty list of positive integers")
        if len(set(dims)) != len(dims):
            raise ValueError("dims must not repeat")
        return dims

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be a non-empty list without repeats")
        return seeds

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("methods must be a non-empty list")
        out = [str(m).strip().lower() for m in methods]
        if len(set(out)) != len(out):
            raise ValueError("methods must not repeat")
        return out


class ReportSpec(BaseModel):
    """What `recpress report` shows."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "recall@50"
    selections: list[Literal["fixed_epochs", "best_valid", "fixed_epoch"]] = Field(
        default_factory=lambda: ["fixed_epochs", "best_valid"],
        description="fixed_epochs = the last evaluation, best_valid = the best validation "
        "evaluation, fixed_epoch = the evaluation at epoch `fixed_epoch` (same runs)",
    )
    fixed_epoch: int | None = Field(
        None, ge=0, description="the epoch of the fixed_epoch selection (e.g. 100)"
    )
    reference: str = Field(
        NO_REFERENCE,
        description="a reference experiment (bundled name such as td-citeulike, or a YAML path) "
        "whose logged numbers are shown as reference columns",
    )
    curve_methods: list[str] = Field(default_factory=lambda: ["none", "ftd", "htd"])
    claims: bool | str = Field(
        True,
        description="claims checked: true = the reference's, a reference name or path = its "
        "claims, false = none",
    )
    latency: bool = True

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        try:
            value = resolve_reference(value)
            load_reference(value)
        except ConfigError as err:
            raise ValueError(err.message) from None
        return value

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: bool | str) -> bool | str:
        if isinstance(value, bool):
            return value
        try:
            value = resolve_reference(value, "report.claims")
            load_reference(value, "report.claims")
        except ConfigError as err:
            raise ValueError(err.message) from None
        return value

    @model_validator(mode="after")
    def _fixed_epoch_given(self) -> ReportSpec:
        if "fixed_epoch" in self.selections and self.fixed_epoch is None:
            raise ValueError(
                "selection fixed_epoch needs report.fixed_epoch (the epoch to read, e.g. 100)"
            )
        return self

    def claims_source(self) -> str | None:
        """The reference whose claims the report checks, or None."""
        if self.claims is False:
            return None
        source = self.reference if self.claims is True else self.claims
        return None if source == NO_REFERENCE else source


class GridSpec(BaseModel):
    """A named grid: replaces the students' dims, methods or seeds (unset: kept)."""

    model_config = ConfigDict(extra="forbid")

    dims: list[int] | None = None
    methods: list[str] | None = None
    seeds: list[int] | None = None


class SweepConfig(BaseModel):
    """A sweep: data, a teacher, a student grid, and what the report shows."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherSpec | None = Field(None, description="the one teacher (into teacher/)")
    teachers: dict[str, TeacherSpec] = Field(
        default_factory=dict, description="several teachers, each trained into teachers/<name>/"
    )
    students: StudentsSpec = Field(default_factory=StudentsSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    grids: dict[str, GridSpec] = Field(
        default_factory=dict, description="named grids, chosen with `recpress sweep --grid NAME`"
    )

    @model_validator(mode="after")
    def _known_methods(self) -> SweepConfig:
        if self.teacher is not None and self.teachers:
            raise ValueError("give either teacher (one) or teachers (name: spec), not both")
        if self.teacher is None and not self.teachers:
            self.teacher = TeacherSpec()
        for i, m in enumerate(self.students.methods):
            if m in self.students.arms:
                continue
            _check_method(m, f"students.methods.{i}", self.students.arms)
        for label, arm in self.students.arms.items():
            _check_method(arm.method, f"students.arms.{label}.method", {})
        _check_method_settings(self.students)
        for name, grid in self.grids.items():
            try:
                students = _grid_students(self.students, grid)
            except ValueError as err:
                raise ValueError(f"grids.{name}: {err}") from None
            for i, m in enumerate(students.methods):
                if m not in students.arms:
                    _check_method(m, f"grids.{name}.methods.{i}", students.arms)
            _check_method_settings(students)
        _check_claims(self)
        for m in self.students.methods + [
            m for g in self.grids.values() for m in (g.methods or [])
        ]:
            teacher_of(self, m)
        return self

    def teacher_specs(self) -> dict[str, TeacherSpec]:
        """Teachers by name: ``{"teacher": spec}`` for the single form, else ``teachers``."""
        return {"teacher": self.teacher} if self.teacher is not None else dict(self.teachers)

    def main_teacher(self) -> TeacherSpec:
        """The single teacher, or the first of ``teachers`` (the students' default model)."""
        return next(iter(self.teacher_specs().values()))

    def with_grid(self, grid: str | None = None, seeds: list[int] | None = None) -> SweepConfig:
        """This config with the named grid's dims/methods/seeds (None: the top-level students),
        then `seeds` (if given) as the students' seeds."""
        students = self.students
        if grid is not None:
            if grid not in self.grids:
                known = ", ".join(sorted(self.grids)) or "none defined"
                raise ConfigError(f"unknown grid {grid!r}; grids of this config: {known}", "grid")
            students = _grid_students(students, self.grids[grid])
        if seeds is not None:
            try:
                students = _grid_students(students, GridSpec(seeds=list(seeds)))
            except ValueError as err:
                raise ConfigError(str(err), field="seeds") from None
        return self.model_copy(update={"students": students})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _grid_students(students: StudentsSpec, grid: GridSpec) -> StudentsSpec:
    data = students.model_dump()
    data.update({k: v for k, v in grid.model_dump().items() if v is not None})
    from pydantic import ValidationError

    try:
        return StudentsSpec.model_validate(data)
    except ValidationError as err:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        ) from None


def _check_claims(cfg: SweepConfig) -> None:
    """Every method a claim names is a registered method, ``none``, an arm, or ``arms_of``."""
    source = cfg.report.claims_source()
    reference = load_reference(source) if source else None
    if reference is None:
        return
    arms = dict(cfg.students.arms)
    for claim in reference.claims.rules:
        for m in claim.methods():
            if m == reference.claims.arms_of or m in arms:
                continue
            _check_method(m, f"claim {claim.id!r} of reference {source}", arms)


def _check_method(method: str, where: str, arms: dict) -> None:
    import recpress.distill  # noqa: F401  (registers the methods)
    from recpress.distill.registry import DISTILLERS, NO_KD, parse_method

    try:
        parse_method(method)
    except ConfigError:
        known = sorted(DISTILLERS) + [NO_KD] + sorted(arms)
        raise ValueError(
            f"unknown method {method!r} at {where}; allowed: {', '.join(known)} or a "
            "composition with + (e.g. htd+rrd), or a name defined under students.arms"
        ) from None


def _check_method_settings(s: StudentsSpec) -> None:
    """Build every method's distillers (constructors only: cheap) so that a bad weight or
    parameter is reported when the config is read, not after the teacher has trained."""
    import recpress.distill  # noqa: F401  (registers the methods)
    from recpress.distill.registry import DISTILLERS, make_distillers

    for section in ("weights", "params"):
        unknown = sorted(set(getattr(s, section)) - set(DISTILLERS))
        if unknown:  # a typo would otherwise be ignored (unused methods' settings are allowed)
            raise ValueError(
                f"students.{section} names {', '.join(unknown)}, which is not a method; "
                f"methods: {', '.join(sorted(DISTILLERS))}"
            )
    for method in s.methods:
        base, weights, params = method_settings(s, method)
        where = f"students.arms.{method}" if method in s.arms else "students"
        try:
            make_distillers(base, weights, params)
        except ConfigError as err:
            field = (err.field or "distill").replace("distill", where, 1)
            raise ValueError(f"{field} (method {method!r}): {err.message}") from None


def method_settings(
    s: StudentsSpec, method: str
) -> tuple[str, dict[str, float], dict[str, dict[str, Any]]]:
    """(registered method, KD weights, KD params) of a grid method or arm: the grid's weights and
    params of its component methods, overridden by the arm's own."""
    from recpress.distill.registry import parse_method

    arm = s.arms.get(method)
    base_method = arm.method if arm else method
    names = parse_method(base_method)
    weights = _component_dict(names, s.weights)
    params = {k: dict(v) for k, v in _component_dict(names, s.params).items()}
    if arm:
        weights.update(arm.weights)
        for k, v in arm.params.items():
            params.setdefault(k, {}).update(v)
    return base_method, weights, params


def teacher_of(cfg: SweepConfig, method: str) -> dict[str, str | list[str]]:
    """Method term -> teacher name of a grid method or arm (the grid's ``teacher_of``, then the
    arm's); empty with a single teacher. A multi-teacher term (HetComp) maps to a list of names,
    by default every teacher in ``teachers`` order. ValueError if a term lacks a teacher or
    names an unknown one."""
    from recpress.distill.registry import DISTILLERS, parse_method

    s = cfg.students
    arm = s.arms.get(method)
    terms = parse_method(arm.method if arm else method)
    mapping = {t: n for t, n in s.teacher_of.items() if t in terms}
    mapping.update(arm.teacher_of if arm else {})
    if not cfg.teachers:
        return {}
    names = sorted(cfg.teachers)
    for term in terms:
        name = mapping.get(term)
        if DISTILLERS[term].multi_teacher:
            listed = (
                list(cfg.teachers) if name is None else [name] if isinstance(name, str) else name
            )
            unknown = [n for n in listed if n not in cfg.teachers]
            if unknown or not listed:
                raise ValueError(
                    f"method {method!r}: teachers {unknown or listed} of {term!r} are not in "
                    f"{names}"
                )
            mapping[term] = list(listed)
            continue
        if isinstance(name, list):
            if len(name) != 1:
                raise ValueError(
                    f"method {method!r}: term {term!r} learns from one teacher, but teacher_of "
                    f"lists {name}"
                )
            name = name[0]
        if name is None and len(names) > 1:
            raise ValueError(
                f"method {method!r}: term {term!r} has no teacher; with several teachers give "
                f"students.teacher_of (or the arm's teacher_of) {{{term}: one of {names}}}"
            )
        if name is not None and name not in cfg.teachers:
            raise ValueError(f"method {method!r}: teacher {name!r} of {term!r} is not in {names}")
        mapping[term] = name or names[0]
    return mapping


def _component_dict(names: list[str], given: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in given.items() if k in names}


def load_sweep_config(
    path: str | Path,
    assignments: list[str] | None = None,
    grid: str | None = None,
    seeds: list[int] | None = None,
) -> SweepConfig:
    """Read and validate a sweep YAML (``--set`` overrides applied, then the named `grid` and
    the `seeds`, see `SweepConfig.with_grid`); errors name the key."""
    data = apply_overrides(load_yaml(path), assignments or [])
    try:
        cfg = parse_config(SweepConfig, data, str(path))
    except ConfigError:
        raise
    except ValueError as err:  # raised from our validators outside pydantic's wrapping
        raise ConfigError(f"invalid {path}: {err}") from None
    return cfg.with_grid(grid, seeds) if grid is not None or seeds is not None else cfg
