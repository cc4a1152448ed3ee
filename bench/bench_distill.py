"""Benchmark: every distillation method vs the no-KD student and the teacher.

citeulike-t-td (the Topology Distillation split), BPR teacher dim 200 (trained here for
--teacher-epochs, or reused from --teacher), students dim 20, --seeds seeds each, model
selection on validation Recall@50 (eval every 10 epochs, patience 5, at most --max-epochs).
Writes bench/results/distill.json and distill.md (mean ± std over seeds of test
Recall/NDCG@10/20/50, seconds per epoch, relative to the no-KD student and the teacher).

Resumable: one run directory per method × seed under --work; finished runs are skipped and an
interrupted run resumes from its checkpoint. Smoke test:

    OMP_NUM_THREADS=1 python bench/bench_distill.py --seeds 1 --max-epochs 3 --teacher-epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

METRICS = [f"{m}@{k}" for m in ("recall", "ndcg") for k in (10, 20, 50)]
DEFAULT_METHODS = ["none", "de", "rrd", "de+rrd", "ir-rrd", "kd", "rd", "cd", "dcd", "unkd"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=None, help="reuse this teacher run directory")
    p.add_argument("--work", type=Path, default=Path("bench/work/distill"))
    p.add_argument("--dataset", default="citeulike-t-td")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--teacher-epochs", type=int, default=100)
    p.add_argument("--teacher-dim", type=int, default=200)
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--device", default="auto")
    p.add_argument("--results", type=Path, default=Path("bench/results"))
    p.add_argument("--progress", action="store_true")
    return p.parse_args(argv)


def train_teacher(args) -> Path:
    from recpress.experiments.config import DataConfig, ModelConfig, RunConfig
    from recpress.experiments.run import train_run
    from recpress.training.config import TrainConfig

    if args.teacher is not None:
        return args.teacher
    out = args.work / "teacher"
    cfg = RunConfig(
        data=DataConfig(dataset=args.dataset),
        model=ModelConfig(embedding_dim=args.teacher_dim),
        train=TrainConfig(
            epochs=args.teacher_epochs, eval_every=10, patience=5, device=args.device, seed=0
        ),
    )
    t0 = time.perf_counter()
    train_run(cfg, out, progress=args.progress)
    print(f"teacher ready in {out} ({time.perf_counter() - t0:.0f} s this session)")
    return out


def mean_std(values):
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None) -> None:
    import recpress.distill  # noqa: F401  (registers methods)
    from recpress.distill.registry import DISTILLERS
    from recpress.experiments.config import student_config
    from recpress.experiments.run import train_run

    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = train_teacher(args)
    teacher_metrics = json.loads((teacher / "metrics.json").read_text())
    methods = []
    for m in args.methods.split(","):
        m = m.strip()
        if m == "none" or all(part in DISTILLERS for part in m.split("+")):
            methods.append(m)
        else:
            print(f"skip {m}: not registered in this build")
    runs: dict[str, list[dict]] = {}
    for method in methods:
        for seed in range(args.seeds):
            out = args.work / f"{method}_dim{args.dim}_s{seed}"
            cfg = student_config(
                teacher,
                method,
                args.dim,
                seed=seed,
                values={
                    "train.epochs": args.max_epochs,
                    "train.eval_every": 10,
                    "train.patience": 5,
                    "train.device": args.device,
                },
            )
            t0 = time.perf_counter()
            m = train_run(cfg, out, progress=args.progress)
            print(
                f"{method:>8} seed {seed}: test recall@50 {m['test'].get('recall@50', 0):.4f} "
                f"(best epoch {m['best_epoch']}, {m['seconds_per_epoch']:.2f} s/epoch, "
                f"{time.perf_counter() - t0:.0f} s this session)",
                flush=True,
            )
            runs.setdefault(method, []).append(m)

    table = {}
    for method, ms in runs.items():
        row = {"seeds": len(ms)}
        for k in METRICS:
            row[k] = mean_std([m["test"][k] for m in ms])
        row["seconds_per_epoch"] = mean_std([m["seconds_per_epoch"] for m in ms])
        row["epochs_run"] = mean_std([m["epochs_run"] for m in ms])
        row["aux_parameters"] = ms[0].get("aux_parameters", 0)
        row["parameters"] = ms[0]["parameters"]
        row["distill"] = ms[0].get("distill")
        table[method] = row
    base = table.get("none")
    result = {
        "dataset": args.dataset,
        "teacher": {
            "path": str(teacher),
            "test": teacher_metrics["test"],
            "parameters": teacher_metrics["parameters"],
            "seconds_per_epoch": teacher_metrics["seconds_per_epoch"],
        },
        "student_dim": args.dim,
        "seeds": args.seeds,
        "max_epochs": args.max_epochs,
        "selection": "validation recall@50, eval every 10, patience 5",
        "methods": table,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "distill.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result, base)
    (args.results / "distill.md").write_text(md)
    print(md)


def render(result, base) -> str:
    t = result["teacher"]
    lines = [
        f"# Distillation on {result['dataset']}: BPR teacher → dim {result['student_dim']} "
        f"students ({result['seeds']} seeds, ≤ {result['max_epochs']} epochs, "
        f"{result['selection']})",
        "",
        "Test metrics, mean ± std over seeds; Δ R@50 relative to the no-KD student; "
        "s/epoch = training time per epoch (sampling + updates, no evaluation).",
        "",
        "| method | " + " | ".join(METRICS) + " | Δ R@50 vs no-KD | % of teacher R@50 | "
        "s/epoch | × no-KD time | aux params |",
        "|---|" + "---|" * (len(METRICS) + 5),
        "| teacher (BPR) | "
        + " | ".join(f"{t['test'][k]:.4f}" for k in METRICS)
        + f" | | 100% | {t['seconds_per_epoch']:.2f} | | |",
    ]
    statements = []
    for method, row in result["methods"].items():
        cells = [f"{row[k][0]:.4f} ± {row[k][1]:.4f}" for k in METRICS]
        r50 = row["recall@50"][0]
        delta = ""
        if base is not None and method != "none" and base["recall@50"][0] > 0:
            rel = (r50 / base["recall@50"][0] - 1) * 100
            delta = f"{rel:+.1f}%"
            verdict = "helped" if rel > 0 else "did not help"
            statements.append(
                f"- **{method}** {verdict}: test Recall@50 {r50:.4f} vs {base['recall@50'][0]:.4f} "
                f"without KD ({rel:+.1f}%), NDCG@50 {row['ndcg@50'][0]:.4f} vs "
                f"{base['ndcg@50'][0]:.4f}."
            )
        pct = f"{100 * r50 / t['test']['recall@50']:.0f}%" if t["test"]["recall@50"] else ""
        spe = row["seconds_per_epoch"][0]
        ratio = f"{spe / base['seconds_per_epoch'][0]:.1f}×" if base else ""
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {delta} | {pct} | {spe:.2f} | {ratio} | {row['aux_parameters']:,} |"
        )
    lines += ["", "## Which methods helped", ""] + (statements or ["- (no no-KD baseline run)"])
    m = result["methods"]
    if all(k in m for k in ("de", "rrd", "de+rrd")):
        best = max(m["de"]["recall@50"][0], m["rrd"]["recall@50"][0])
        ok = m["de+rrd"]["recall@50"][0] >= best
        lines.append(
            f"- DE-RRD {'is' if ok else 'is not'} at least as good as the better of DE and RRD "
            f"on test Recall@50 ({m['de+rrd']['recall@50'][0]:.4f} vs {best:.4f})."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
