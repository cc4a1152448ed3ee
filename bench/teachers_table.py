"""The teachers' table: test Recall@50 of every base model on citeulike-t-td over seeds.

Summarises finished run directories (from ``recpress train`` or a sweep's ``teachers/<name>/``);
it trains nothing. Each ``--run LABEL=DIR`` adds one seed of the model LABEL. Per run, the
history (validation and test every ``eval_every`` epochs) gives two selections, as the sweep
report reads them: ``best_valid`` (the evaluation with the best validation Recall@50) and
``fixed_epochs`` (the last evaluation); seconds per epoch are the training time per pass from
metrics.json. Per label: mean ± std over seeds, the per-seed values and the selected epochs.

    python bench/teachers_table.py --run bpr-d200=runs/t/bpr-s0 --run bpr-d200=runs/t/bpr-s1 \\
        --run lightgcn-d64=runs/t/lgcn-s0 [--metric recall@50] [--out bench/results/teachers.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

from recpress.experiments.report.tables import read_run

ROOT = Path(__file__).resolve().parents[1]
SELECTIONS = ("best_valid", "fixed_epochs")


def summarise(label: str, dirs: list[Path], metric: str) -> dict:
    """One table row: the model config of the first run and the selections over `dirs`."""
    config = yaml.safe_load((dirs[0] / "config.yaml").read_text())
    runs = [read_run(d, metric, None, label, None) for d in dirs]
    seeds = [yaml.safe_load((d / "config.yaml").read_text())["train"]["seed"] for d in dirs]
    row: dict = {
        "label": label,
        "model": config["model"],
        "train": {
            k: config["train"].get(k)
            for k in ("optimizer", "epochs", "lr", "weight_decay", "batch_size", "reduction_base")
        },
        "seeds": seeds,
        "runs": [str(d) for d in dirs],
        "parameters": runs[0].parameters,
        "seconds_per_epoch": [r.seconds_per_epoch for r in runs],
        "epochs_run": [r.epochs_run for r in runs],
    }
    for sel in SELECTIONS:
        values = [r.results[sel][metric] for r in runs if sel in r.results]
        row[sel] = {
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "per_seed": values,
            "epochs": [r.selected_epoch.get(sel) for r in runs],
        }
    return row


def markdown(rows: list[dict], metric: str) -> str:
    def cell(s: dict) -> str:
        if s["mean"] is None:
            return "—"
        text = f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["std"] is not None else "")
        return f"{text} (epochs {', '.join(map(str, s['epochs']))})"

    lines = [
        f"| model | seeds | test {metric}, validation-selected | test {metric}, last epoch | "
        "s/epoch | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        spe = statistics.median(r["seconds_per_epoch"])
        lines.append(
            f"| {r['label']} | {len(r['seeds'])} | {cell(r['best_valid'])} | "
            f"{cell(r['fixed_epochs'])} | {spe:.3f} | {r['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], metavar="LABEL=DIR", required=True)
    parser.add_argument("--metric", default="recall@50")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/teachers.json")
    args = parser.parse_args()
    groups: dict[str, list[Path]] = {}
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep or not (Path(path) / "metrics.json").is_file():
            parser.error(f"--run {item!r}: expected LABEL=DIR of a finished run directory")
        groups.setdefault(label, []).append(Path(path))
    rows = [summarise(label, dirs, args.metric) for label, dirs in groups.items()]
    table = markdown(rows, args.metric)
    print(table)
    out = {"dataset": "citeulike-t-td", "metric": args.metric, "rows": rows, "markdown": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
