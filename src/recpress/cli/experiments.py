"""Experiment commands: sweep (resumable grid of runs) and report (tables, plots, claims)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recpress.cli.app import SetOption, app, console


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep YAML (e.g. configs/td-citeulike.yaml).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Sweep directory (default runs/<name>).")
    ] = None,
    set_: SetOption = None,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Only runs whose label contains this text, e.g. 'd=20' (repeatable)."),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(help="If --out holds a sweep of another config, delete it and start over."),
    ] = False,
    report: Annotated[bool, typer.Option(help="Write the report when done.")] = True,
    progress: Annotated[bool, typer.Option(help="Show the overall progress bar.")] = True,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Student runs trained at once (processes sharing the cores).",
        ),
    ] = 1,
    distributed: Annotated[
        int,
        typer.Option(
            "--distributed",
            min=1,
            help="Processes per run: train each run with torchrun --nproc-per-node N (DDP).",
        ),
    ] = 1,
    grid: Annotated[
        str | None,
        typer.Option(help="A named grid of the config's `grids:` (e.g. full); default: students."),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Seeds to run, comma-separated (e.g. 0,1,2).")
    ] = None,
) -> None:
    """Train a teacher once, then students over dims × methods × seeds, one run directory each.

    Resumable: rerun the same command after an interruption; finished runs are skipped and an
    interrupted run continues from its last checkpoint. Adding or dropping dims, methods or seeds
    keeps the finished runs; any other change to the config needs another --out or --restart.
    """
    from recpress.errors import ConfigError
    from recpress.experiments.sweep import load_sweep_config, run_sweep

    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            msg = f"expects integers separated by commas, got {seeds!r}"
            raise ConfigError(msg, "--seeds") from None
    cfg = load_sweep_config(config, set_ or [], grid=grid, seeds=seed_list)
    out = out or Path("runs") / cfg.name
    summary = run_sweep(
        cfg, out, restart=restart, progress=progress, only=only, jobs=jobs, distributed=distributed
    )
    change = summary.get("grid_change")
    if change and (change["added"] or change["dropped"]):
        console.print(
            f"{out}: same experiment, grid changed ({change['added']} runs added, "
            f"{change['dropped']} dropped from the report, their directories kept); "
            "finished runs were kept"
        )
    elif change:
        console.print(f"{out}: same runs; the stored config was updated (name or report settings)")
    console.print(
        f"sweep {out}: trained {len(summary['trained'])}, skipped {len(summary['skipped'])} "
        f"finished, {summary['wall_seconds']:.0f}s"
    )
    if report:
        from recpress.experiments.report import write_report

        paths = write_report(out)
        console.print(f"report: {paths['md']} and {paths['html']}")


@app.command()
def report(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory written by `sweep`.")],
    paired: Annotated[
        bool, typer.Option(help="Paired t-tests vs no-KD (re-evaluates saved weights per user).")
    ] = True,
    latency: Annotated[bool, typer.Option(help="Measure scoring latency per student size.")] = True,
) -> None:
    """Write report.md and a self-contained report.html for a sweep (complete or not)."""
    from recpress.experiments.report import write_report

    paths = write_report(sweep_dir, paired=paired, latency=latency)
    console.print(f"report: {paths['md']} and {paths['html']}")
    if paths.get("missing"):
        console.print(f"{paths['missing']} runs missing (listed in the report)", style="yellow")
