"""Benchmark: every distillation method of issue 3 vs the no-KD student and the teacher.

Drives the sweep ``configs/derrd-citeulike.yaml`` (citeulike-t-td, BPR teacher d=200, students
d=20, KD, RD, CD, RRD, IR-RRD, DCD, UnKD, DE, DE-RRD and no KD, 3 seeds, 101 passes with
validation and test every 10 epochs) through `recpress.experiments.sweep.run_sweep`, so it is
resumable (finished runs are skipped, an interrupted one resumes) and shares its run directories
with ``recpress sweep`` / ``recpress report``. Then, per method: test Recall/NDCG@10/20/50 of
the validation-selected epoch (mean ± std over seeds), test Recall@50 at the last epoch, a
paired t-test against the no-KD student (per-user Recall@50, averaged over common seeds),
seconds per epoch (training only) and the auxiliary parameters; and a plain statement of which
methods helped (p < 0.05) and by how much. Writes bench/results/distill.json and distill.md.

    RECPRESS_DATA=../shared/datasets python bench/bench_distill.py \\
        --sweep runs/derrd-citeulike [--jobs 2] [--only 'd=20 de seed'] [--no-train]

``--no-train`` only summarises the runs that exist (missing ones are listed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = [f"{m}@{k}" for m in ("recall", "ndcg") for k in (10, 20, 50)]
SELECTED = "best_valid"
#: a method "helped" (or "hurt") only where the paired t-test vs no KD has p below this
ALPHA = 0.05
#: the must-reach comparison of issue 3
CORE = ("de", "rrd", "de+rrd")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "derrd-citeulike.yaml")
    p.add_argument("--sweep", type=Path, default=ROOT / "runs" / "derrd-citeulike")
    p.add_argument("--only", action="append", default=None, help="train only matching labels")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--no-train", action="store_true", help="summarise the existing runs only")
    p.add_argument("--no-paired", action="store_true", help="skip the paired t-tests")
    p.add_argument(
        "--timing-note",
        default="runs trained with torch's default threads, one at a time.",
        help="how the runs were trained (threads, concurrency), printed next to s/epoch",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill.json")
    return p.parse_args(argv)


def mean_std(values: list[float]) -> dict[str, float]:
    """{"mean", "std"} (sample std; nan for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "std": std}


def _threads(run_dir: Path) -> int | str:
    """Torch threads the run trained with (metrics.json; "?" for runs written before it was)."""
    return json.loads((run_dir / "metrics.json").read_text()).get("torch_threads", "?")


def summarise(found: dict, dim: int, paired: dict) -> dict:
    """Per method at student ``dim``: metrics (mean, std, values), timing, size, paired test."""
    rows: dict = {}
    for (d, method), runs in sorted(found.items(), key=lambda kv: str(kv[0])):
        if d != dim:
            continue
        runs = [r for r in runs if SELECTED in r.results]
        if not runs:
            continue
        row: dict = {"seeds": sorted(r.seed for r in runs)}
        for k in METRICS:
            vals = [r.results[SELECTED][k] for r in runs]
            row[k] = {**mean_std(vals), "values": vals}
        last = [r.results["fixed_epochs"]["recall@50"] for r in runs]
        row["recall@50_last_epoch"] = mean_std(last)
        row["selected_epochs"] = [r.selected_epoch[SELECTED] for r in runs]
        row["seconds_per_epoch"] = sum(r.seconds_per_epoch for r in runs) / len(runs)
        row["torch_threads"] = sorted({_threads(r.path) for r in runs}, key=str)
        row["parameters"] = runs[0].parameters
        row["aux_parameters"] = runs[0].aux_parameters
        if (dim, method) in paired:
            row["paired_vs_none"] = paired[(dim, method)]
        rows[method] = row
    return rows


def verdicts(rows: dict) -> tuple[list[str], dict]:
    """Plain statements (which methods helped, by how much) and the must-reach checks."""
    base = rows.get("none")
    lines: list[str] = []
    checks: dict = {}
    if base is None:
        return ["- no no-KD student run yet: nothing to compare against"], checks
    b = base["recall@50"]["mean"]
    ranked = sorted((m for m in rows if m != "none"), key=lambda m: -rows[m]["recall@50"]["mean"])
    for m in ranked:
        r = rows[m]["recall@50"]["mean"]
        rel = (r / b - 1) * 100
        test = rows[m].get("paired_vs_none")
        sig = ""
        verb = "helped" if r > b else "did not help"
        if test is not None:
            sig = f"; paired t-test over {test['n_users']} users p = {test['p']:.2g}"
            if test["p"] >= ALPHA:
                verb = "made no clear difference"
            elif r < b:
                verb = "hurt"
        n = len(rows[m]["seeds"])
        lines.append(
            f"- **{m}** {verb}: test Recall@50 {r:.4f} vs {b:.4f} without KD "
            f"({r - b:+.4f}, {rel:+.1f}%), NDCG@50 {rows[m]['ndcg@50']['mean']:.4f} vs "
            f"{base['ndcg@50']['mean']:.4f} ({n} seed{'s' if n != 1 else ''}{sig})."
        )
    for m in CORE:
        if m in rows:
            checks[f"{m} beats no-KD"] = rows[m]["recall@50"]["mean"] > b
    if all(m in rows for m in CORE):
        best = max(rows["de"]["recall@50"]["mean"], rows["rrd"]["recall@50"]["mean"])
        checks["de+rrd >= max(de, rrd)"] = rows["de+rrd"]["recall@50"]["mean"] >= best
        ok = checks["de+rrd >= max(de, rrd)"]
        lines.append(
            f"- DE-RRD {'is' if ok else 'is not'} at least as good as the better of DE and RRD "
            f"on test Recall@50 ({rows['de+rrd']['recall@50']['mean']:.4f} vs {best:.4f})."
        )
    return lines, checks


def render(result: dict) -> str:
    t = result["teacher"]
    rows = result["methods"]
    base = rows.get("none")
    head = (
        f"# Distillation on {result['dataset']}: BPR d={t['dim']} teacher → d={result['dim']} "
        "students"
    )
    lines = [
        head,
        "",
        f"Sweep `{result['sweep']}` ({result['config']}). Test metrics at the validation-selected "
        "epoch (best validation Recall@50 of the evaluations every 10 epochs), mean ± std over "
        "seeds; `R@50 last` = epoch 100. s/epoch = training only (sampling, losses, updates; no "
        f"evaluation) as logged by each run: "
        f"{result['timing_note']} Clean side-by-side epoch times: `bench/bench_method_speed.py`.",
        "",
        "| method | seeds | "
        + " | ".join(METRICS)
        + " | R@50 last | Δ R@50 vs no-KD | % of teacher R@50 | s/epoch | × no-KD time |"
        " aux params |",
        "|---|" + "---|" * (len(METRICS) + 7),
        f"| teacher (BPR d={t['dim']}) | 1 | "
        + " | ".join(f"{t['test'][k]:.4f}" for k in METRICS)
        + f" | {t['test']['recall@50']:.4f} | | 100% | {t['seconds_per_epoch']:.2f} | | |",
    ]
    order = ["none"] + sorted((m for m in rows if m != "none"), key=lambda m: m)
    for m in order:
        if m not in rows:
            continue
        row = rows[m]
        n = len(row["seeds"])
        cells = [
            f"{row[k]['mean']:.4f}" + (f" ± {row[k]['std']:.4f}" if n > 1 else "") for k in METRICS
        ]
        r50 = row["recall@50"]["mean"]
        delta = speed = ""
        if base is not None and m != "none":
            delta = f"{r50 - base['recall@50']['mean']:+.4f}"
        if base is not None:
            speed = f"{row['seconds_per_epoch'] / base['seconds_per_epoch']:.1f}×"
        pct = f"{100 * r50 / t['test']['recall@50']:.1f}%"
        lines.append(
            f"| {m} | {n} | "
            + " | ".join(cells)
            + f" | {row['recall@50_last_epoch']['mean']:.4f} | {delta} | {pct} | "
            f"{row['seconds_per_epoch']:.2f} | {speed} | {row['aux_parameters']:,} |"
        )
    lines += ["", "## Which methods helped", ""] + result["statements"]
    if result["checks"]:
        lines += ["", "## Must-reach checks", ""]
        lines += [f"- {k}: {'yes' if v else 'NO'}" for k, v in result["checks"].items()]
    if result["missing"]:
        lines += ["", f"## Missing runs ({len(result['missing'])})", ""]
        lines += [f"- {m['run']}: {m['state']}" for m in result["missing"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from recpress.experiments.report import collect, paired_tests
    from recpress.experiments.run import load_split_for
    from recpress.experiments.sweep import load_sweep_config, plan, run_sweep

    cfg = load_sweep_config(args.config)
    if not args.no_train:
        run_sweep(cfg, args.sweep, only=args.only, jobs=args.jobs)
    found, missing = collect(cfg, args.sweep)
    if (None, "teacher") not in found:
        raise SystemExit(f"error: no finished teacher in {args.sweep}; run without --no-train")
    split = load_split_for(plan(cfg, args.sweep)[0].config)
    paired = {} if args.no_paired else paired_tests(found, "recall@50", split)
    teacher = found[(None, "teacher")][0]
    teacher_metrics = json.loads((teacher.path / "metrics.json").read_text())
    dim = cfg.students.dims[0]
    rows = summarise(found, dim, paired)
    statements, checks = verdicts(rows)
    result = {
        "benchmark": "distill",
        "dataset": cfg.data.dataset,
        "config": str(args.config),
        "sweep": str(args.sweep),
        "dim": dim,
        "selection": "validation recall@50 (eval every 10 epochs, 101 passes)",
        "teacher": {
            "dim": cfg.teacher.model.embedding_dim,
            "test": teacher.results.get("fixed_epochs", teacher_metrics.get("test", {})),
            "parameters": teacher.parameters,
            "seconds_per_epoch": teacher.seconds_per_epoch,
        },
        "methods": rows,
        "statements": statements,
        "checks": checks,
        "missing": missing,
        "timing_note": args.timing_note,
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads_per_run": max(1, torch.get_num_threads() // max(1, args.jobs)),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = render(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
