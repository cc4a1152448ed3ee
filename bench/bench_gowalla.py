"""The Gowalla-size must-reach check: a BPR-MF d=64 teacher and a d=8 HTD student on the
generated `synthetic-gowalla` (29,858 users x 40,981 items x 1,027,370 interactions), each
trained by the documented command (docs/scaling.md) in its own process on this CPU.

Per run: wall time of the whole command (start-up, data generation and evaluations included),
the child's peak RSS (``getrusage``), the run's own seconds per epoch and peak RSS from its
metrics.json, and its test Recall/NDCG@20/50. Runs already finished in ``--runs`` are not
retrained: their numbers are read from a previous record of this script in ``--out`` when it
has them, else from the run's metrics.json (``wall_seconds_this_session``: training and
evaluation, without start-up).

    RECPRESS_DATA=../shared/datasets python bench/bench_gowalla.py [--runs runs/gowalla]
        [--out bench/results/gowalla_scale.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MINUTES, TARGET_GB = 10.0, 4.0


def commands(runs: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "recpress"]
    teacher, student = runs / "bpr64", runs / "htd8"
    return {
        "teacher": [*cli, "train", "--config", str(ROOT / "configs" / "gowalla-scale.yaml"),
                    "--out", str(teacher), "--no-progress"],
        "student": [*cli, "distill", "--method", "htd", "--dim", "8", "--teacher", str(teacher),
                    "--epochs", "10", "--set", "train.eval_every=5", "--out", str(student),
                    "--no-progress"],
    }  # fmt: skip


def run_record(name: str, cmd: list[str], run_dir: Path, previous: dict) -> dict:
    """Train `run_dir` with `cmd` unless it is finished; its measured record."""
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        old = previous.get(name) or {}
        wall, rss, how = old.get("wall_seconds"), old.get("child_peak_rss_mb"), old.get("wall_from")
    else:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = round(time.perf_counter() - t0, 1)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rss = round(max(before, after) / 1024, 1)  # KiB on Linux; the largest child so far
        how = "this script (whole command)"
    metrics = json.loads(metrics_file.read_text())
    if wall is None:
        wall, how = metrics.get("wall_seconds_this_session"), "metrics.json (without start-up)"
    test = metrics.get("test", {})
    return {
        "command": " ".join(cmd[2:]),
        "wall_seconds": wall,
        "wall_from": how,
        "child_peak_rss_mb": rss,
        "run_peak_rss_mb": (metrics.get("memory") or {}).get("peak_rss_mb"),
        "seconds_per_epoch": metrics.get("seconds_per_epoch"),
        "epochs": metrics.get("epochs_run"),
        "torch_threads": metrics.get("torch_threads"),
        "test": {k: round(v, 4) for k, v in test.items() if k.split("@")[0] in ("recall", "ndcg")},
        "split": metrics.get("split"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "gowalla")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gowalla_scale.json")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_core import machine

    previous = json.loads(args.out.read_text()).get("runs", {}) if args.out.is_file() else {}
    records = {
        name: run_record(name, cmd, args.runs / ("bpr64" if name == "teacher" else "htd8"),
                         previous)
        for name, cmd in commands(args.runs).items()
    }  # fmt: skip
    for name, r in records.items():
        rss = max(x for x in (r["child_peak_rss_mb"], r["run_peak_rss_mb"]) if x is not None)
        r["meets"] = bool(r["wall_seconds"] <= TARGET_MINUTES * 60 and rss <= TARGET_GB * 1024)
        print(
            f"{name:8s} {r['wall_seconds'] / 60:5.2f} min  peak {rss:7.1f} MiB  "
            f"{r['seconds_per_epoch']:.2f} s/epoch  test recall@20 {r['test'].get('recall@20')}"
            f"  meets <= {TARGET_MINUTES:g} min, <= {TARGET_GB:g} GB: {r['meets']}"
        )
    out = {"runs": records, "targets": {"minutes": TARGET_MINUTES, "peak_gb": TARGET_GB},
           "machine": machine(), "command": " ".join(sys.argv)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
