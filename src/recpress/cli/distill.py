"""The `distill` command: train a small student from a teacher run with a KD method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recpress.cli.app import SetOption, app, console
from recpress.errors import ConfigError


def parse_pairs(text: str, option: str) -> dict[str, str]:
    """``"a=x,b=y"`` -> ``{"a": "x", "b": "y"}`` (ConfigError naming `option` otherwise)."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        if not item or not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{option} expects name=value,name=value, got {text!r}")
        out[key.strip()] = value.strip()
    return out


def parse_teachers(text: str) -> dict[str, str]:
    """``"a=P,Q"`` -> ``{"a": "P", "<Q's directory name>": "Q"}``: a path without a name is
    named after its directory (an .npz after its stem); a name given twice is a ConfigError."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            key, value = Path(item.rstrip("/")).stem, item
        key, value = key.strip(), value.strip()
        if not item or not key or not value:
            raise ConfigError(f"--teachers expects path,path or name=path,name=path; got {text!r}")
        if key in out:
            raise ConfigError(
                f"--teachers names teacher {key!r} twice; give distinct names as name=path",
                field="--teachers",
            )
        out[key] = value
    return out


def parse_teacher_of(text: str) -> dict[str, str | list[str]]:
    """``"rrd=bpr,hetcomp=a+b"`` -> ``{"rrd": "bpr", "hetcomp": ["a", "b"]}``."""
    pairs = parse_pairs(text, "--teacher-of")
    return {k: (v.split("+") if "+" in v else v) for k, v in pairs.items()}


@app.command()
def distill(
    method: Annotated[
        str, typer.Option(help="KD method or composition, e.g. de, rrd, de+rrd, ir-rrd, none.")
    ],
    dim: Annotated[int, typer.Option(help="Student embedding dimension (> 0).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Student run directory to write.")],
    teacher: Annotated[
        Path | None,
        typer.Option(help="Teacher run directory (from `recpress train`) or a teacher .npz."),
    ] = None,
    teachers: Annotated[
        str | None,
        typer.Option(
            help="Several teachers: path,path or name=path,... (a path's name is its directory "
            "name); instead of --teacher."
        ),
    ] = None,
    teacher_of: Annotated[
        str | None,
        typer.Option(
            help="Which teacher each method term learns from: method=name,...; a multi-teacher "
            "method takes name+name (default: all teachers)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Student model (default: the first teacher run's model)."),
    ] = None,
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

    Several teachers: --teachers bpr=runs/t1,big=runs/t2 --teacher-of de=big,rrd=bpr
    (each term learns from its own teacher). HetComp learns from all of them at once:
    --method hetcomp --teachers runs/bpr,runs/lightgcn,runs/neumf --model bpr (each teacher run
    needs trajectories, `recpress trajectories`). Data and training settings default to the
    (first) teacher run's; change any with --set, e.g.
    --set distill.weights.de=0.01 --set distill.params.rrd.K=40 --set train.lr=0.001.
    The run directory holds config.yaml (with the distill section), history, the student
    weights, and metrics.json with parameter counts with and without auxiliary modules.
    Rerunning the same command resumes an interrupted run and skips a finished one.
    """
    from recpress.cli.core import _print_metrics, profile_after
    from recpress.experiments.config import student_config
    from recpress.experiments.run import train_run

    if (teacher is None) == (teachers is None):
        raise ConfigError("give one of --teacher PATH or --teachers name=path,name=path")
    given = teacher if teacher is not None else parse_teachers(teachers)
    values = {"data.dataset": dataset} if dataset else {}
    config = student_config(
        given,
        method,
        dim,
        seed=seed,
        epochs=epochs,
        assignments=set_ or [],
        values=values,
        teacher_of=parse_teacher_of(teacher_of) if teacher_of else None,
        model=model,
    )
    metrics = train_run(config, out, overwrite=overwrite, progress=progress)
    profile_after(config, out, metrics)
    _print_metrics(
        metrics, title=f"{out}: {method} student, test metrics at epoch {metrics['best_epoch']}"
    )
    if "aux_parameters" in metrics:
        console.print(
            f"parameters: {metrics['parameters']:,} at inference, "
            f"{metrics['training_parameters']:,} in training "
            f"({metrics['aux_parameters']:,} auxiliary, dropped at inference)"
        )
