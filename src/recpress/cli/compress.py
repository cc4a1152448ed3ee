"""The `compress` command: the smallest student of a teacher that meets an accuracy target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recpress.cli.app import app, console, err_console
from recpress.errors import ConfigError


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated integers, got {text!r}") from None


@app.command()
def compress(
    teacher: Annotated[Path, typer.Argument(help="A finished teacher run directory.")],
    target: Annotated[
        str,
        typer.Option(help="METRIC>=VALUE or METRIC>=FxTEACHER, e.g. recall@50>=0.95xteacher."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Search directory (default: TEACHER-compress)."),
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option(help="Largest p50 single-user latency (ms).")
    ] = None,
    max_params: Annotated[int | None, typer.Option(help="Most inference parameters.")] = None,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Wall-clock budget of all trials (default 60).")
    ] = None,
    dims: Annotated[
        str | None, typer.Option(help="Student dims searched (default 8,10,16,20,32,64).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="Candidate methods (default none,kd,rrd,rce-kd,pckd,ftd)."),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            help="More budget settings: key=value,... (minutes, max_params, max_latency_ms, "
            "proxy_epochs, full_epochs, patience, finalists, run_share)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show each trial's progress bar.")] = False,
) -> None:
    """Search student dims × KD methods for the smallest student that meets --target.

    Cheap proxies first (few epochs, every dim × method that fits the budget), then the best
    methods trained fully with early stopping in a bisection over the dims. Writes OUT/pareto.md
    (+ .json, .png), OUT/compress.json (the resumable state: rerun the same command to resume)
    and the chosen student as an artifact in OUT/artifact. Exit code 3 when the target is not
    met (the best found is reported and exported).
    """
    from recpress.experiments.compress import (
        DEFAULT_DIMS,
        DEFAULT_METHODS,
        NOT_MET,
        Budget,
        compress,
        parse_budget,
        parse_target,
    )
    from recpress.experiments.compress.search import default_train

    parsed = parse_target(target)
    base = Budget(
        minutes=budget_minutes if budget_minutes is not None else Budget.minutes,
        max_params=max_params,
        max_latency_ms=max_latency_ms,
    )
    plan = parse_budget(budget, base)
    out = out if out is not None else teacher.with_name(teacher.name + "-compress")
    result = compress(
        teacher,
        parsed,
        out,
        dims=_ints(dims, "--dims") if dims else DEFAULT_DIMS,
        methods=[m for m in methods.split(",") if m.strip()] if methods else DEFAULT_METHODS,
        budget=plan,
        train_fn=default_train(progress=progress),
        log=console.print,
    )
    console.print(result["decision"]["text"].replace("**", ""))
    console.print(f"report: {out / 'pareto.md'}; artifact: {out / 'artifact'}")
    if not result["met"]:
        err_console.print(f"target not met (exit code {NOT_MET})")
        raise typer.Exit(NOT_MET)
