"""Reference experiments as data: a paper's logged numbers and the claims a sweep checks.

A reference file is YAML (bundled ones live in ``recpress/experiments/references/``)::

    name: td-citeulike
    log:                     # the authors' logged test metric, one list per run, per epoch
      metric: recall@50
      epochs: [0, 10, ..., 100]
      teacher: [...]
      students: {10: {none: [...], ftd: [...]}, ...}
    claims:
      arms_of: htd           # claims are checked once per grid arm of this method (optional)
      rules:
        - {id: ..., text: ..., rule: order_margin, phi: {max: 0.1}, order: [htd, ftd, none]}
        - {id: ..., text: ..., rule: gap_collapse, small_phi: {max: 0.1}, large_phi: {min: 0.5},
           gap: [htd, ftd], floor: [ftd, none]}

φ = student dim / teacher dim. Rules (see `recpress.experiments.report.claims`):

* ``order_margin``: at every dim in ``phi``, mean(order[0]) > mean(order[1]) > ... and
  order[0] − order[1] > ``margin`` × pooled std.
* ``gap_collapse``: Δ = gap[0] − gap[1]; max Δ over ``large_phi`` < min Δ over ``small_phi``;
  at ``large_phi`` dims, mean(floor[0]) ≥ mean(floor[1]) and |Δ| ≤ ``noise`` × pooled std.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recpress.errors import ConfigError

#: the value of ``report.reference`` / ``report.claims`` that names no reference
NO_REFERENCE = "none"


class PhiRange(BaseModel):
    """Inclusive range of φ = student dim / teacher dim (tolerance 1e-9); no bound: open."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = Field(None, ge=0)
    max: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PhiRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def contains(self, phi: float) -> bool:
        lo_ok = self.min is None or phi >= self.min - 1e-9
        return lo_ok and (self.max is None or phi <= self.max + 1e-9)


class _Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)

    def methods(self) -> list[str]:
        raise NotImplementedError


class OrderMarginClaim(_Claim):
    """Means strictly ordered at every dim in ``phi``; the first two apart by a margin."""

    rule: Literal["order_margin"]
    phi: PhiRange
    order: list[str] = Field(min_length=2)
    margin: float = Field(2.0, ge=0, description="× pooled std of order[0] and order[1]")

    def methods(self) -> list[str]:
        return list(self.order)


class GapCollapseClaim(_Claim):
    """Δ = gap[0] − gap[1] smaller at large φ than at small φ, and within noise at large φ."""

    rule: Literal["gap_collapse"]
    small_phi: PhiRange
    large_phi: PhiRange
    gap: list[str] = Field(min_length=2, max_length=2)
    floor: list[str] | None = Field(None, min_length=2, max_length=2)
    noise: float = Field(2.0, ge=0, description="|Δ| ≤ noise × pooled std at large φ")

    def methods(self) -> list[str]:
        return list(self.gap) + list(self.floor or [])


ClaimSpec = Annotated[OrderMarginClaim | GapCollapseClaim, Field(discriminator="rule")]


class ClaimsSpec(BaseModel):
    """The claims of a reference; with ``arms_of`` they are checked once per grid arm of that
    method (a claim naming ``arms_of`` then means that arm)."""

    model_config = ConfigDict(extra="forbid")

    arms_of: str | None = None
    rules: list[ClaimSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> ClaimsSpec:
        ids = [c.id for c in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError(f"claim ids must not repeat: {ids}")
        return self


class LogSpec(BaseModel):
    """Logged test values of ``teacher`` and ``students[dim][method]``, one per epoch."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    epochs: list[int] = Field(min_length=1)
    teacher: list[float] | None = None
    students: dict[int, dict[str, list[float]]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _lengths(self) -> LogSpec:
        n = len(self.epochs)
        series = [("teacher", self.teacher)] if self.teacher is not None else []
        series += [
            (f"students.{d}.{m}", v) for d, ms in self.students.items() for m, v in ms.items()
        ]
        for where, values in series:
            if len(values) != n:
                raise ValueError(f"{where} has {len(values)} values for {n} epochs")
        return self

    def final(self, dim: int | None, method: str) -> float | None:
        """The last logged value of the teacher (dim None) or of a student, or None."""
        values = self.teacher if dim is None else self.students.get(dim, {}).get(method)
        return values[-1] if values else None

    def series(self, dim: int | None, method: str) -> list[float] | None:
        return self.teacher if dim is None else self.students.get(dim, {}).get(method)


class Reference(BaseModel):
    """One reference experiment: its log and its claims (either may be absent)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    log: LogSpec | None = None
    claims: ClaimsSpec = Field(default_factory=ClaimsSpec)


def bundled_references() -> list[str]:
    """Names of the reference files shipped with the package."""
    folder = resources.files("recpress.experiments") / "references"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_reference(value: str, field: str = "report.reference") -> str:
    """A bundled name as is, ``none`` as is, anything else as an absolute file path."""
    if value == NO_REFERENCE or value in bundled_references():
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{value!r} is neither a bundled reference ({', '.join(bundled_references())}) nor "
            "a file; give one of those names, a path to a reference YAML, or none",
            field=field,
        )
    return str(path.resolve())


@lru_cache(maxsize=32)
def _load(value: str) -> Reference:
    if value in bundled_references():
        source = resources.files("recpress.experiments") / "references" / f"{value}.yaml"
    else:
        source = Path(value)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read reference {value}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"reference {value} must be a YAML mapping")
    try:
        return Reference.model_validate(data)
    except ValidationError as err:
        from recpress.experiments.config import validation_message

        raise ConfigError(validation_message(err, f"reference {value}")) from None


def load_reference(value: str | None, field: str = "report.reference") -> Reference | None:
    """The reference named by a bundled name or a path (None for ``none``); ConfigError if it is
    missing or malformed (the message names the file and the bad field)."""
    if value is None or value == NO_REFERENCE:
        return None
    return _load(resolve_reference(value, field))
