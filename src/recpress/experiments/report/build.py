"""Sweep reports: report.md + a self-contained report.html (PNG figures embedded as base64).

Contents:

* one table per student dim: mean ± std over seeds of the test metric, for the fixed-epoch result
  (last evaluation) and the validation-selected one (evaluation with the best validation metric,
  same run, see `recpress.experiments.sweep`), best in bold, the difference to the no-KD student
  and a two-sided paired t-test on per-user test values (saved weights, per-user values averaged
  over seeds) vs the no-KD student; the authors' logged numbers as reference columns;
* test metric vs epoch, one panel per student dim (``report.curve_methods``, mean ± std);
* accuracy vs size: inference parameters and measured scoring latency;
* training seconds per epoch per method;
* the claims of the sweep's reference experiment (``report.claims``, a data file, see
  `recpress.experiments.reference`), each "holds" / "does not hold" / "undecided" with the
  numbers that decide it;
* the runs that are missing or unfinished (an incomplete sweep reports what is there).
"""

from __future__ import annotations

import json
from pathlib import Path

from recpress.experiments.reference import load_reference
from recpress.experiments.report.html import _html
from recpress.experiments.report.plots import _figures
from recpress.experiments.report.tables import (
    _claims,
    _intro,
    _missing,
    _reference_bullets,
    _reference_summary,
    _Report,
    _student_table,
    _timing,
    best_methods,
    collect,
    measure_latency,
    paired_tests,
    summarize,
)
from recpress.experiments.sweep import SweepConfig, plan, read_sweep
from recpress.runs import write_json, write_text


def _load_split(cfg: SweepConfig, sweep_dir: Path):
    try:
        from recpress.experiments.run import load_split_for

        return load_split_for(plan(cfg, sweep_dir)[0].config)
    except Exception:
        return None


def build_report(
    sweep_dir: str | Path, paired: bool = True, latency: bool = True
) -> tuple[str, dict[str, bytes], dict]:
    """Markdown text, figures (name → PNG bytes) and the numbers (JSON-able) of a sweep."""
    sweep_dir = Path(sweep_dir)
    cfg = read_sweep(sweep_dir)
    metric = cfg.report.metric
    found, missing = collect(cfg, sweep_dir)
    ref = load_reference(cfg.report.reference)
    has_log = ref is not None and ref.log is not None and ref.log.metric == metric
    r = _Report(cfg, summarize(cfg, found), list(cfg.report.selections), ref if has_log else None)
    wants_split = found and (paired or (latency and cfg.report.latency))
    split = _load_split(cfg, sweep_dir) if wants_split else None
    r.best = best_methods(r.table, list(cfg.students.methods), r.sels[0])
    r.tests = paired_tests(found, metric, split, r.best) if paired and split is not None else {}
    lat = measure_latency(found, split) if latency and cfg.report.latency and split else {}
    n_total = len(plan(cfg, sweep_dir))
    md = _intro(r, sweep_dir, n_total - len(missing), n_total)
    for dim in r.dims:
        md += _student_table(r, dim)
    figure_md, figures = _figures(r, found, lat)
    md += figure_md + _timing(r)
    claims_md, claims = _claims(r)
    md += claims_md
    if r.reference_cells:
        epoch = r.reference.log.epochs[-1] if r.reference else ""
        md += [
            f"## Authors' logged table (test {metric} at epoch {epoch}) vs our fixed-epoch mean",
            "",
        ]
        md += _reference_bullets(r.reference_cells) + _reference_summary(r.reference_cells)
    md += _missing(missing)
    numbers = {
        "table": {f"{d}/{m}": v for (d, m), v in r.table.items()},
        "paired_tests": {f"{d}/{m}": v for (d, m), v in r.tests.items()},
        "latency": {str(k): v for k, v in lat.items()},
        "claims": claims,
        "best": {str(d): m for d, m in r.best.items()},
        "reference_cells": r.reference_cells,
        "missing": missing,
    }
    return "\n".join(md), figures, numbers


def write_report(sweep_dir: str | Path, paired: bool = True, latency: bool = True) -> dict:
    """Write report.md (+ report_assets/*.png), report.html (self-contained) and report.json."""
    sweep_dir = Path(sweep_dir)
    text, figures, numbers = build_report(sweep_dir, paired=paired, latency=latency)
    assets = sweep_dir / "report_assets"
    assets.mkdir(exist_ok=True)
    for name, data in figures.items():
        tmp = assets / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(assets / name)
    write_text(sweep_dir / "report.md", text)
    write_text(sweep_dir / "report.html", _html(text, figures, f"RecPress report {sweep_dir.name}"))
    write_json(sweep_dir / "report.json", json.loads(json.dumps(numbers, default=str)))
    return {
        "md": sweep_dir / "report.md",
        "html": sweep_dir / "report.html",
        "missing": len(numbers["missing"]),
    }
