"""The `distill` command: train a small student from a teacher run with a KD method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recpress.cli.app import SetOption, app, console


@app.command()
def distill(
    teacher: Annotated[
        Path, typer.Option(help="Teacher run directory (from `recpress train`) or a teacher .npz.")
    ],
    method: Annotated[
        str, typer.Option(help="KD method or composition, e.g. de, rrd, de+rrd, ir-rrd, none.")
    ],
    dim: Annotated[int, typer.Option(help="Student embedding dimension (> 0).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Student run directory to write.")],
    epochs: Annotated[int | None, typer.Option(help="Maximum passes over the data.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the student.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset, for an .npz teacher (a run knows its own).")
    ] = None,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Start over if --out holds another run.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Distil a student from a teacher: e.g. `--method de+rrd --dim 20`.

    Data and training settings default to the teacher run's; change any with --set, e.g.
    --set distill.weights.de=0.01 --set distill.params.rrd.K=40 --set train.lr=0.001.
    The run directory holds config.yaml (with the distill section), history, the student
    weights, and metrics.json with parameter counts with and without auxiliary modules.
    Rerunning the same command resumes an interrupted run and skips a finished one.
    """
    from recpress.cli.core import _print_metrics
    from recpress.experiments.config import student_config
    from recpress.experiments.run import train_run

    values = {"data.dataset": dataset} if dataset else {}
    config = student_config(
        teacher, method, dim, seed=seed, epochs=epochs, assignments=set_ or [], values=values
    )
    metrics = train_run(config, out, overwrite=overwrite, progress=progress)
    _print_metrics(
        metrics, title=f"{out}: {method} student, test metrics at epoch {metrics['best_epoch']}"
    )
    if "aux_parameters" in metrics:
        console.print(
            f"parameters: {metrics['parameters']:,} at inference, "
            f"{metrics['training_parameters']:,} in training "
            f"({metrics['aux_parameters']:,} auxiliary, dropped at inference)"
        )
