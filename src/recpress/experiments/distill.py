"""Distil a student from Python: one call from a teacher run to a finished student run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recpress.experiments.config import student_config
from recpress.experiments.run import train_run
from recpress.serving.profile import profile_run


def distill(
    teacher_dir: str | Path | dict[str, str | Path],
    method: str,
    dim: int,
    out: str | Path,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    teacher_of: dict[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a student of width `dim` with `method` from a teacher run; returns metrics.json.

    `teacher_dir` is one teacher, or name -> teacher with ``teacher_of`` (method term ->
    name). The student uses the (first) teacher run's data and train sections. ``overrides``
    are ``section.key``-style settings with dots written as ``__``, e.g. ``train__epochs=50``,
    ``distill__weights={"de": 0.1}``, ``distill__params={"rrd": {"K": 20}}``. With the
    config's ``profile`` (default) the efficiency profile is measured and added to the metrics.
    """
    sets = {k.replace("__", "."): v for k, v in overrides.items()}
    config = student_config(teacher_dir, method, dim, seed=seed, values=sets, teacher_of=teacher_of)
    metrics = train_run(config, out, overwrite=overwrite, progress=progress)
    if config.profile and "profile" not in metrics:
        metrics["profile"] = profile_run(out, write=True, n_requests=100)
    return metrics
