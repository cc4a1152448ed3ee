"""Benchmark: the one-seed reference sweep of the Topology Distillation experiment.

Runs `configs/td-citeulike.yaml` restricted to the 13 reference runs (teacher + students
d ∈ {10, 20, 100, 200} × {none, ftd, htd}, seed 0, 101 passes each, evaluation every 10 epochs)
into a fresh sweep directory, and reports the total wall time, the wall time of each run and the
training time per epoch per method and dim (FTD / HTD next to the no-KD student). Writes
bench/results/sweep.json. The target is ≤ 15 minutes on the 2-core CPU: run it on a quiet
machine (the load average at start and end is recorded; a shared CPU inflates every number).

    python bench/bench_sweep.py                         # the reference 13 runs
    python bench/bench_sweep.py --config configs/smoke.yaml --epochs 2   # smoke test
    python bench/bench_sweep.py --set students.train.device=cuda         # any --set override
    python bench/bench_sweep.py --jobs 2                # two student runs at once

Rerunning with the same --out resumes (finished runs are skipped and not re-timed); pass
--fresh to delete the output directory first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from recpress.experiments.sweep import load_sweep_config, plan, run_sweep
from recpress.runs import read_json
from recpress.training.trainer import resolve_device

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "td-citeulike.yaml"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "work" / "sweep"))
    ap.add_argument("--methods", default="none,ftd,htd")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override teacher+student epochs")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    ap.add_argument("--jobs", type=int, default=1, help="student runs at once (sweep --jobs)")
    ap.add_argument("--result", default=str(ROOT / "bench" / "results" / "sweep.json"))
    args = ap.parse_args()

    sets = [
        f"students.methods=[{args.methods}]",
        f"students.seeds=[{args.seed}]",
        "report.reference=none",
        *args.sets,
    ]
    if args.epochs is not None:
        sets += [f"teacher.train.epochs={args.epochs}", f"students.train.epochs={args.epochs}"]
    cfg = load_sweep_config(args.config, sets)
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    summary = run_sweep(cfg, out, restart=True, progress=True, jobs=args.jobs)
    total = time.perf_counter() - t0
    load_end = os.getloadavg()

    student_device = resolve_device(cfg.students.train.device)
    runs = []
    for spec in plan(cfg, out):
        m = read_json(spec.path / "metrics.json")
        runs.append(
            {
                "run": spec.label,
                "dim": spec.dim if spec.dim is not None else cfg.main_teacher().model.embedding_dim,
                "method": "teacher" if spec.is_teacher else spec.method,
                "epochs": m["epochs_run"],
                "seconds_per_epoch": m["seconds_per_epoch"],
                "wall_seconds": summary["seconds"].get(spec.label),
                "prepare_seconds": m.get("prepare_seconds"),
                "test_recall@50_final": m["test"].get("recall@50"),
            }
        )
    per_method: dict[str, dict[str, float]] = {}
    for r in runs:
        per_method.setdefault(r["method"], {})[str(r["dim"])] = r["seconds_per_epoch"]
    result = {
        "config": str(args.config),
        "overrides": sets,
        "total_wall_seconds": round(total, 1),
        "jobs": args.jobs,
        "trained_runs": len(summary["trained"]),
        "skipped_runs": len(summary["skipped"]),
        "target_seconds": 900,
        "seconds_per_epoch": per_method,
        "runs": runs,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(student_device),
        "cuda_device": (
            torch.cuda.get_device_name(student_device) if student_device.type == "cuda" else None
        ),
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"total {total:.1f}s for {len(summary['trained'])} trained runs "
        f"({len(summary['skipped'])} skipped)"
    )
    print("seconds per epoch:")
    for method, dims in per_method.items():
        print(f"  {method:8s} " + "  ".join(f"d={d}: {s:.3f}" for d, s in dims.items()))
    print(f"load average start {load_start[0]:.2f}, end {load_end[0]:.2f}; wrote {args.result}")


if __name__ == "__main__":
    main()
