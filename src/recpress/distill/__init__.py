"""Knowledge distillation: the `Distiller` contract, the registry, teacher knowledge, methods.

Training a student is an experiment (a later stage): :func:`recpress.experiments.distill.distill`,
or a `RunConfig` with a ``distill`` section given to :func:`recpress.experiments.run.train_run`.
"""

from __future__ import annotations

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
    "rce_kd",
    "pckd",
    "hetcomp",
):
    try:
        __import__(f"recpress.distill.{_mod}")
    except ModuleNotFoundError as _err:
        if _err.name != f"recpress.distill.{_mod}":
            raise


__all__ = [
    "DISTILLERS",
    "Distiller",
    "Knowledge",
    "describe",
    "make_distillers",
    "prepare_distillers",
    "register",
]
