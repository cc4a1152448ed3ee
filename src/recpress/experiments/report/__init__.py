"""Sweep reports: report.md + a self-contained report.html (PNG figures embedded as base64).

`tables` reads the runs, summarises them and renders the markdown tables (with the paired tests
and the latency measurement); `plots` draws the figures; `html` renders the self-contained HTML;
`build` puts them together (`build_report`, `write_report`); `claims` checks the claims of the
sweep's reference experiment (`recpress.experiments.reference`, a data file) on the table.
"""

from recpress.experiments.report.build import build_report, write_report
from recpress.experiments.report.claims import check_claims, claim_arms
from recpress.experiments.report.plots import palette
from recpress.experiments.report.tables import (
    PER_USER_FILE,
    SELECTION_LABEL,
    RunResult,
    _reference_summary,
    best_methods,
    collect,
    measure_latency,
    paired_tests,
    read_run,
    reference_cell,
    selection_label,
    summarize,
)

__all__ = [
    "PER_USER_FILE",
    "SELECTION_LABEL",
    "RunResult",
    "_reference_summary",
    "best_methods",
    "build_report",
    "check_claims",
    "claim_arms",
    "collect",
    "measure_latency",
    "paired_tests",
    "palette",
    "read_run",
    "reference_cell",
    "selection_label",
    "summarize",
    "write_report",
]
