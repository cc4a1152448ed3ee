"""Evaluation: full-ranking top-K metrics (chunked, masked) and statistics over seeds.

Main entry point: ``evaluate(model_or_score_fn, split, ks=(10, 20, 50), phase="test")``.
"""

from recpress.evaluation.metrics import (
    METRIC_FUNCTIONS,
    METRICS,
    compute_metrics,
    hits_at_k,
    hr_at_k,
    metric_name,
    mrr_at_k,
    ndcg_at_k,
    parse_metric_name,
    precision_at_k,
    recall_at_k,
)
from recpress.evaluation.ranking import (
    DEFAULT_EXCLUDE,
    PHASES,
    EvalResult,
    ScoreFn,
    default_exclude,
    evaluate,
)
from recpress.evaluation.stats import (
    TTestResult,
    aggregate_seeds,
    format_mean_std,
    mean_std,
    one_sided_ttest_below,
    paired_ttest,
)

__all__ = [
    "DEFAULT_EXCLUDE",
    "METRICS",
    "METRIC_FUNCTIONS",
    "PHASES",
    "EvalResult",
    "ScoreFn",
    "TTestResult",
    "aggregate_seeds",
    "compute_metrics",
    "default_exclude",
    "evaluate",
    "format_mean_std",
    "hits_at_k",
    "hr_at_k",
    "mean_std",
    "metric_name",
    "mrr_at_k",
    "ndcg_at_k",
    "one_sided_ttest_below",
    "paired_ttest",
    "parse_metric_name",
    "precision_at_k",
    "recall_at_k",
]
