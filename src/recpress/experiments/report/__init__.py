"""Sweep reports: report.md + a self-contained report.html (PNG figures embedded as base64).

`build` reads the runs and renders tables, figures and HTML; `claims` checks the claims of the
sweep's reference experiment (`recpress.experiments.reference`, a data file) on the table.
"""

from recpress.experiments.report.build import (
    PER_USER_FILE,
    SELECTION_LABEL,
    RunResult,
    _reference_summary,
    build_report,
    collect,
    measure_latency,
    paired_tests,
    palette,
    read_run,
    summarize,
    write_report,
)
from recpress.experiments.report.claims import check_claims, claim_arms, log_z

__all__ = [
    "PER_USER_FILE",
    "SELECTION_LABEL",
    "RunResult",
    "_reference_summary",
    "build_report",
    "check_claims",
    "claim_arms",
    "collect",
    "log_z",
    "measure_latency",
    "paired_tests",
    "palette",
    "read_run",
    "summarize",
    "write_report",
]
