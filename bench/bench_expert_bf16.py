"""Does ``expert_precision: bf16`` keep HTD / DE accuracy? Trained runs vs fp32 seeds.

Reads finished bf16 runs of a sweep directory (e.g. the grid of ``configs/td-citeulike.yaml``
with the arm ``htd-bf16: {method: htd, params: {htd: {expert_precision: bf16}}}``) and the fp32
per-seed values of the same cells, from a stored report.json (``--fp32-report``, e.g. the
previous 3-seed sweep in bench/results/td-citeulike/) and/or fp32 runs of a sweep directory.
Per (dim, method): test Recall@50 at the last epoch (the fixed-epoch protocol), Welch's
two-sample t-test (two-sided, scipy.stats.ttest_ind(equal_var=False)) and |Δ| against
2 × the fp32 seed std; "within seed noise" = p > 0.05 and |Δ| < 2 std. Also each run's
training seconds (history.csv; they depend on what else ran on the machine). Writes JSON.

    python bench/bench_expert_bf16.py --bf16 runs/expert-bf16 \\
        --fp32-report bench/results/td-citeulike/report.json --out bench/results/expert_bf16.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

METRIC = "recall@50"


def _run_value(run_dir: Path) -> tuple[float, int, float] | None:
    """(test metric at the last evaluation, its epoch, training seconds) of a finished run."""
    if not (run_dir / "metrics.json").is_file():
        return None
    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tested = [r for r in rows if r.get(f"test_{METRIC}")]
    seconds = sum(float(r["seconds"]) for r in rows if r.get("seconds"))
    return float(tested[-1][f"test_{METRIC}"]), int(tested[-1]["epoch"]), seconds


def _runs(sweep: Path, arm_suffix: str) -> dict[tuple[int, str], dict[int, tuple]]:
    """(dim, base method) → seed → run value, for the method directories ending in the suffix."""
    out: dict[tuple[int, str], dict[int, tuple]] = {}
    for seed_dir in sorted(sweep.glob("runs/*/*/seed*")):
        method = seed_dir.parent.name
        if arm_suffix and not method.endswith(arm_suffix):
            continue
        if not arm_suffix and "-" in method:
            continue
        value = _run_value(seed_dir)
        if value is not None:
            base = method[: -len(arm_suffix)] if arm_suffix else method
            key = (int(seed_dir.parent.parent.name), base)
            out.setdefault(key, {})[int(seed_dir.name[4:])] = value
    return out


def main(argv=None) -> dict:
    from scipy import stats

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bf16", type=Path, default=None, help="sweep dir with *-bf16 arm runs")
    p.add_argument(
        "--bf16-distill-json", type=Path, default=None,
        help="bench/results/distill.json (bench_distill.py) of a sweep whose DE ran in bf16: "
        "its methods' per-seed values where every seed selected the last epoch (100)",
    )  # fmt: skip
    p.add_argument("--distill-dim", type=int, default=20)
    p.add_argument("--fp32-report", type=Path, default=None, help="report.json with fp32 seeds")
    p.add_argument("--fp32", type=Path, default=None, help="sweep dir with fp32 runs")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    bf16 = _runs(args.bf16, "-bf16") if args.bf16 else {}
    if args.bf16_distill_json:
        for method, e in json.loads(args.bf16_distill_json.read_text())["methods"].items():
            if "de" not in method.split("+") or set(e.get("selected_epochs", [])) != {100}:
                continue
            bf16[(args.distill_dim, method)] = {
                s: (v, 100, e["seconds_per_epoch"] * 101)
                for s, v in zip(e["seeds"], e["recall@50"]["values"], strict=True)
            }
    fp32: dict[tuple[int, str], dict[str, float]] = {}
    fp32_speed: dict[tuple[int, str], float] = {}
    if args.fp32_report:
        table = json.loads(args.fp32_report.read_text())["table"]
        for key in bf16:
            entry = table.get(f"{key[0]}/{key[1]}", {}).get("fixed_epochs")
            if entry:
                seeds = table[f"{key[0]}/{key[1]}"]["seeds"]
                fp32[key] = {
                    f"report seed {s}": v for s, v in zip(seeds, entry["values"], strict=True)
                }
                fp32_speed[key] = table[f"{key[0]}/{key[1]}"]["seconds_per_epoch"]
    if args.fp32:
        for key, seeds in _runs(args.fp32, "").items():
            if key in bf16:
                fp32.setdefault(key, {}).update({f"rerun seed {s}": v[0] for s, v in seeds.items()})
    cells = []
    for key in sorted(bf16):
        low = [v[0] for _, v in sorted(bf16[key].items())]
        ref = list(fp32.get(key, {}).values())
        cell = {
            "dim": key[0], "method": key[1],
            "bf16": {f"seed {s}": v[0] for s, v in sorted(bf16[key].items())},
            "bf16_epoch": sorted({v[1] for v in bf16[key].values()}),
            "bf16_train_seconds": {f"seed {s}": round(v[2], 1) for s, v in bf16[key].items()},
            "fp32": fp32.get(key, {}),
            "bf16_seconds_per_epoch": round(
                float(np.mean([v[2] / (v[1] + 1) for v in bf16[key].values()])), 3
            ),
            "fp32_seconds_per_epoch_report": fp32_speed.get(key),
            "bf16_mean": float(np.mean(low)),
            "fp32_mean": float(np.mean(ref)) if ref else None,
        }  # fmt: skip
        if ref and len(ref) >= 2:
            sd = float(np.std(ref, ddof=1))
            delta = cell["bf16_mean"] - cell["fp32_mean"]
            if len(low) >= 2:
                w = stats.ttest_ind(low, ref, equal_var=False)
                t, pv = float(w.statistic), float(w.pvalue)
            else:  # one bf16 seed: its z against the fp32 seeds (no Welch test possible)
                t, pv = float("nan"), float("nan")
            cell.update(
                delta=delta, fp32_std=sd, delta_over_std=delta / sd, welch_t=t, welch_p=pv,
                within_noise=(abs(delta) < 2 * sd) and (math.isnan(pv) or pv > 0.05),
                test="Welch two-sample t-test (two-sided) and |delta| < 2 fp32 std"
                if len(low) >= 2 else "one bf16 seed: only |delta| < 2 fp32 std",
            )  # fmt: skip
        same = {
            f"seed {sd}": v[0] - fp32[key][f"report seed {sd}"]
            for sd, v in sorted(bf16[key].items())
            if f"report seed {sd}" in fp32.get(key, {})
        }
        if same:  # same seed: same initialisation and draws, only the arithmetic differs
            cell["same_seed_delta"] = same
        cells.append(cell)
        print(json.dumps(cell))
    out = {"benchmark": "expert_bf16", "metric": f"test {METRIC} (last epoch)", "cells": cells}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


if __name__ == "__main__":
    main()
