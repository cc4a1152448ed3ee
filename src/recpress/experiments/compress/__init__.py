"""`recpress compress`: the smallest student of a teacher that meets an accuracy target.

`target.py` (the target grammar and the budget), `search.py` (proxies, then a bisection over
dims with full trials; resumable), `pareto.py` (the Pareto front and the report files).
"""

from recpress.experiments.compress.pareto import front_of, pareto_front, write_pareto
from recpress.experiments.compress.search import (
    DEFAULT_DIMS,
    DEFAULT_METHODS,
    NOT_MET,
    Search,
    compress,
)
from recpress.experiments.compress.target import Budget, Target, parse_budget, parse_target

__all__ = [
    "DEFAULT_DIMS",
    "DEFAULT_METHODS",
    "NOT_MET",
    "Budget",
    "Search",
    "Target",
    "compress",
    "front_of",
    "pareto_front",
    "parse_budget",
    "parse_target",
    "write_pareto",
]
