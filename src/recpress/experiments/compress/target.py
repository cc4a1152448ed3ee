"""The target of `recpress compress` (``recall@50>=0.95xteacher``) and its search budget."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from recpress.errors import ConfigError

#: metric families a target may name (each at a cut-off K: ``recall@50``)
METRICS = ("recall", "ndcg", "hr", "precision", "mrr")

_TARGET = re.compile(
    r"^\s*(?P<metric>[a-z]+@\d+)\s*>=\s*(?P<value>[0-9]*\.?[0-9]+(?:e-?\d+)?)"
    r"\s*(?P<rel>[x*]\s*teacher)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Target:
    """``metric >= value`` (absolute) or ``metric >= factor × the teacher's metric``.

    The search selects on validation (``threshold(teacher_valid)``); the same rule applied to
    the teacher's test metric is what the chosen student is reported against on test.
    """

    metric: str
    value: float
    relative: bool

    @property
    def k(self) -> int:
        return int(self.metric.partition("@")[2])

    def threshold(self, teacher_metrics: dict[str, float] | None) -> float:
        """The value to reach, given the teacher's metrics of one phase (name -> value)."""
        if not self.relative:
            return self.value
        if not teacher_metrics or self.metric not in teacher_metrics:
            have = ", ".join(sorted(teacher_metrics or {})) or "(none)"
            raise ConfigError(
                f"target {self} needs the teacher's {self.metric}, which its metrics.json does "
                f"not hold; it holds: {have}",
                field="--target",
            )
        return self.value * float(teacher_metrics[self.metric])

    def __str__(self) -> str:
        return f"{self.metric}>={self.value:g}{'xteacher' if self.relative else ''}"


def parse_target(text: str) -> Target:
    """Parse ``METRIC>=VALUE`` or ``METRIC>=FxTEACHER`` (e.g. ``recall@50>=0.9xteacher``).

    Raises ConfigError naming the grammar, or the allowed metrics for an unknown one.
    """
    m = _TARGET.match(str(text))
    if m is None:
        raise ConfigError(
            f"--target {text!r} is not METRIC>=VALUE or METRIC>=FxTEACHER, e.g. "
            "recall@50>=0.95xteacher or ndcg@20>=0.1",
            field="--target",
        )
    metric = m["metric"].lower()
    family, _, k = metric.partition("@")
    if family not in METRICS or int(k) < 1:
        raise ConfigError(
            f"--target names unknown metric {metric!r}; allowed: "
            f"{', '.join(f'{f}@K' for f in METRICS)} with K >= 1 (e.g. recall@50)",
            field="--target",
        )
    value = float(m["value"])
    relative = m["rel"] is not None
    if relative and not 0 < value <= 10:
        raise ConfigError(f"--target factor must be in (0, 10], got {value:g}", field="--target")
    if not relative and not 0 <= value <= 1:
        raise ConfigError(
            f"--target value of {metric} must be in [0, 1], got {value:g}", field="--target"
        )
    return Target(metric, value, relative)


@dataclass(frozen=True)
class Budget:
    """What the search may spend and what a chosen student may cost.

    ``minutes``: wall-clock budget of all trials together (over resumed sessions too);
    ``max_params`` / ``max_latency_ms``: limits on the student's inference parameters and its
    measured p50 single-user latency; ``proxy_epochs``: epochs of a stage-1 proxy trial;
    ``full_epochs`` / ``patience``: the most epochs of a stage-2 trial and its early stopping
    (evaluations without improvement); ``finalists``: methods taken from stage 1 to stage 2;
    ``run_share``: the largest fraction of ``minutes`` one estimated full trial may take (a
    method above it is left out, with the estimate said).
    """

    minutes: float = 60.0
    max_params: int | None = None
    max_latency_ms: float | None = None
    proxy_epochs: int = 10
    full_epochs: int = 120
    patience: int = 3
    finalists: int = 2
    run_share: float = 0.25

    #: the settings that change what a trial trains (a resumed search must keep them)
    TRIAL_KEYS = ("proxy_epochs", "full_epochs", "patience")

    def trial_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.TRIAL_KEYS}


def budget_keys() -> list[str]:
    return [f.name for f in fields(Budget)]


def parse_budget(text: str | None, base: Budget | None = None) -> Budget:
    """``"minutes=30,max_params=200000"`` applied on `base` (ConfigError naming the allowed
    keys for an unknown one, and the expected type for a bad value)."""
    budget = base or Budget()
    if not text:
        return budget
    changes: dict[str, Any] = {}
    types = {f.name: f.type for f in fields(Budget)}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--budget expects key=value,key=value, got {item!r}", "--budget")
        if key not in types:
            raise ConfigError(
                f"--budget has unknown key {key!r}; allowed: {', '.join(budget_keys())}",
                field="--budget",
            )
        changes[key] = _number(key, raw.strip(), "int" in str(types[key]))
    return check_budget(replace(budget, **changes))


def _number(key: str, raw: str, integer: bool) -> float | int:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"--budget {key} must be {kind}, got {raw!r}", field="--budget")
    return int(value) if integer else value


def check_budget(budget: Budget) -> Budget:
    """`budget` if every value is in range, else ConfigError naming the key."""
    positive = {
        "minutes": budget.minutes,
        "proxy_epochs": budget.proxy_epochs,
        "full_epochs": budget.full_epochs,
        "patience": budget.patience,
        "finalists": budget.finalists,
        "run_share": budget.run_share,
        "max_params": budget.max_params if budget.max_params is not None else 1,
        "max_latency_ms": budget.max_latency_ms if budget.max_latency_ms is not None else 1,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"budget {key} must be > 0, got {value}", field=f"--budget {key}")
    return budget
