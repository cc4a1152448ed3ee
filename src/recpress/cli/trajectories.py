"""`recpress trajectories`: a run's per-user top-K lists at chosen epochs, from kept weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recpress.cli.app import app, console, err_console
from recpress.errors import ConfigError


def parse_epochs(text: str) -> list[int]:
    """Parse "49,99,149" into [49, 99, 149] (0-based epochs)."""
    try:
        epochs = [int(e) for e in text.split(",") if e.strip()]
    except ValueError:
        raise ConfigError(
            f"--epochs expects comma-separated 0-based epochs like 49,99,149, got {text!r}",
            "--epochs",
        ) from None
    if not epochs or any(e < 0 for e in epochs):
        raise ConfigError(f"--epochs expects 0-based epochs (>= 0), got {text!r}", "--epochs")
    return epochs


@app.command()
def trajectories(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train/distill.")],
    epochs: Annotated[str, typer.Option(help="0-based epochs, comma-separated (e.g. 49,99,149).")],
    k: Annotated[int, typer.Option("--k", help="List length per user.")] = 100,
    data_path: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset files.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Drop the stored lists first (trajectories.safetensors afresh).")
    ] = False,
) -> None:
    """Store per-user top-K unobserved lists (HetComp teacher trajectories) of a run at chosen
    epochs, from its kept checkpoints (train.keep_checkpoints) or, for the selected epoch,
    model.safetensors. Epochs already stored are skipped; a larger --k than stored remakes
    them all."""
    from recpress.experiments.trajectories import make_trajectories

    made = make_trajectories(
        run_dir,
        parse_epochs(epochs),
        k=k,
        data_path=data_path,
        overwrite=overwrite,
        progress=lambda line: err_console.print(line, highlight=False),
    )
    shape = "x".join(str(n) for n in made.lists.shape)
    console.print(f"{run_dir / 'trajectories.safetensors'}: epochs {made.epochs}, top-{made.k}")
    console.print(f"lists {shape} int32")
