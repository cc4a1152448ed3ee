"""The authors' logged cells of a reference experiment decided from a stored sweep report.

Reads the per-seed fixed-epoch values of a report.json (``recpress report`` output; its run
directories need not exist) and, for every cell of the reference log, runs the one-sided test
the report uses (`recpress.experiments.report.reference_cell`): H0 μ ≥ log vs H1 μ < log,
t = (mean − log) / (s/√n), p = P(T(n−1) ≤ t), reached unless p < 0.05. Writes a JSON file.

    python bench/bench_reference_cells.py bench/results/td-citeulike/report.json \\
        --reference td-citeulike --out bench/results/td-citeulike/reference_cells.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a report.json written by `recpress report`")
    p.add_argument("--reference", default="td-citeulike")
    p.add_argument("--selection", default="fixed_epochs")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from recpress.experiments.reference import load_reference
    from recpress.experiments.report import reference_cell

    table = json.loads(args.report.read_text())["table"]
    log = load_reference(args.reference).log
    cells = []
    for key, entry in table.items():
        dim, _, method = key.partition("/")
        if dim == "None" or args.selection not in entry:
            continue
        value = log.final(int(dim), method)
        if value is not None:
            cells.append(reference_cell(int(dim), method, entry[args.selection], value))
    cells.sort(key=lambda c: (c["dim"], c["method"]))
    testable = [c for c in cells if c["reached"] is not None]
    out = {
        "benchmark": "reference_cells",
        "report": str(args.report),
        "reference": args.reference,
        "selection": args.selection,
        "test": "one-sample one-sided t-test, H0 mean >= log vs H1 mean < log, alpha 0.05",
        "reached": sum(bool(c["reached"]) for c in testable),
        "testable": len(testable),
        "cells": cells,
    }
    for c in cells:
        print(
            f"d={c['dim']:>3} {c['method']:<5} ours {c['ours']:.4f} (n={c['n']}) log "
            f"{c['log']:.4f}  t={c['t']:+.2f} p={c['p']:.3g}  {c['verdict']}"
        )
    print(f"{out['reached']} of {out['testable']} testable cells reached")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
