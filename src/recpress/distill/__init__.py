"""Knowledge distillation: the `Distiller` contract, the registry, teacher knowledge, methods.

Python use::

    from recpress.distill import distill
    metrics = distill("runs/teacher", "de+rrd", dim=20, out="runs/de_rrd", seed=0)

or build a `RunConfig` with a ``distill`` section and call
:func:`recpress.experiments.run.train_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recpress.distill import distillation_experts, relaxed_ranking  # noqa: F401 (register)
from recpress.distill.base import Distiller
from recpress.distill.knowledge import Knowledge
from recpress.distill.registry import (
    DISTILLERS,
    describe,
    make_distillers,
    prepare_distillers,
    register,
)

# methods written in other modules; each may land later, so a missing one is skipped
for _mod in (
    "soft_label",
    "ranking_distillation",
    "collaborative",
    "dual_correction",
    "unbiased",
    "topology",
):
    try:
        __import__(f"recpress.distill.{_mod}")
    except ModuleNotFoundError as _err:
        if _err.name != f"recpress.distill.{_mod}":
            raise


def distill(
    teacher_dir: str | Path,
    method: str,
    dim: int,
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a student of width `dim` with `method` from a teacher run; returns metrics.json.

    The student uses the teacher run's data and train sections. ``overrides`` are
    ``section.key``-style settings with dots written as ``__``, e.g. ``train__epochs=50``,
    ``distill__weights={"de": 0.1}``, ``distill__params={"rrd": {"K": 20}}``.
    """
    from recpress.experiments.config import student_config
    from recpress.experiments.run import train_run

    sets = {k.replace("__", "."): v for k, v in overrides.items()}
    config = student_config(teacher_dir, method, dim, seed=seed, values=sets)
    return train_run(config, out, overwrite=overwrite, progress=progress)


__all__ = [
    "DISTILLERS",
    "Distiller",
    "Knowledge",
    "describe",
    "distill",
    "make_distillers",
    "prepare_distillers",
    "register",
]
