"""Core commands: datasets, train, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from recpress.cli.app import SetOption, app, console, parse_ks
from recpress.errors import ConfigError


@app.command()
def datasets() -> None:
    """List the named datasets, where their files are found, and their statistics."""
    from recpress.data import list_datasets

    table = Table(title="RecPress datasets")
    table.add_column("name", no_wrap=True)
    table.add_column("local", no_wrap=True)
    for col in ("users", "items", "interactions", "density"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("description")
    for row in list_datasets():
        stats = row.get("stats") or {}
        fmt = lambda v: f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))  # noqa: E731
        density = stats.get("density")
        table.add_row(
            row["name"],
            "yes" if row.get("available") else "no: downloads",
            fmt(stats.get("users")),
            fmt(stats.get("items")),
            fmt(stats.get("interactions")),
            f"{density:.4%}" if isinstance(density, float) else "",
            row.get("description", ""),
        )
    console.print(table)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    config: Annotated[Path | None, typer.Option(help="YAML run config (data/model/train).")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name (see `recpress datasets`).")
    ] = None,
    data_path: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset files.")
    ] = None,
    interactions: Annotated[
        Path | None, typer.Option(help="Your own interactions file (instead of --dataset).")
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Format of --interactions: users-dat, pairs, movielens, lightgcn, recbole, table.",
        ),
    ] = None,
    protocol: Annotated[
        str | None, typer.Option(help="Split protocol: loo, ratio, temporal, fixed.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model name: bpr, lightgcn, neumf, cml, multvae, cdae (docs/methods.md §3)."
        ),
    ] = None,
    dim: Annotated[int | None, typer.Option(help="Embedding dimension.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training data.")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Coupled L2 weight decay.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Triples per batch (users for multvae and cdae).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Start over if --out holds another run.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a model (e.g. the BPR teacher) and write a run directory.

    Rerunning the same command resumes an interrupted run and skips a finished one.
    """
    from recpress.experiments.config import RunConfig, apply_overrides, load_yaml, parse_config
    from recpress.experiments.run import train_run

    data = load_yaml(config) if config else {}
    flags = {
        "data.dataset": dataset,
        "data.path": str(data_path) if data_path else None,
        "data.protocol": protocol,
        "data.interactions": str(interactions) if interactions else None,
        "data.format": file_format,
        "model.name": model,
        "model.embedding_dim": dim,
        "train.epochs": epochs,
        "train.lr": lr,
        "train.weight_decay": weight_decay,
        "train.batch_size": batch_size,
        "train.seed": seed,
        "train.device": device,
    }
    for key, value in flags.items():
        if value is not None:
            section, name = key.split(".")
            data.setdefault(section, {})[name] = value
    apply_overrides(data, set_ or [])
    run_config = parse_config(RunConfig, data, str(config) if config else "options")
    metrics = train_run(run_config, out, overwrite=overwrite, progress=progress)
    profile_after(run_config, out, metrics)
    _print_metrics(metrics, title=f"{out}: test metrics at epoch {metrics['best_epoch']}")


def profile_after(run_config, out: Path, metrics: dict) -> None:
    """Measure the efficiency profile of a just-finished run when its config asks for it (once:
    by rank 0 under torchrun)."""
    from recpress.training import distributed

    if not distributed.info().is_main:
        return
    if run_config.profile and "profile" not in metrics:
        from recpress.serving.profile import profile_run

        metrics["profile"] = profile_run(out, write=True, n_requests=100)


def _print_metrics(metrics: dict, title: str) -> None:
    from recpress.training import distributed

    if not distributed.info().is_main:  # under torchrun: printed once
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    for name, value in metrics["test"].items():
        table.add_row(name, f"{metrics['valid'].get(name, float('nan')):.4f}", f"{value:.4f}")
    console.print(table)
    if "seconds_per_epoch" in metrics:
        console.print(
            f"{metrics['seconds_per_epoch']:.3f} s per epoch, "
            f"{metrics.get('epochs_run', '?')} epochs"
        )


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train/distill.")],
    phase: Annotated[str, typer.Option(help="valid or test.")] = "test",
    ks: Annotated[str, typer.Option(help="Cut-offs, comma-separated.")] = "10,20,50",
    data_path: Annotated[
        Path | None, typer.Option(help="Folder holding the dataset files.")
    ] = None,
    per_user: Annotated[
        Path | None, typer.Option(help="Write per-user metrics to this CSV.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Evaluate a saved run on its split (full ranking; valid masks train, test masks train+valid)."""
    from recpress.evaluation import evaluate as run_evaluate
    from recpress.runs import check_run_dir, load_run, load_split_of

    if phase not in ("valid", "test"):
        raise ConfigError(f"--phase must be valid or test, got {phase!r}")
    k_list = parse_ks(ks)
    split = None
    if data_path is not None:
        split = load_split_of(check_run_dir(run_dir), data_path=data_path)
    run = load_run(run_dir, split=split)
    model, split = run.model, run.split
    result = run_evaluate(model, split, ks=k_list, phase=phase, per_user=per_user is not None)
    if per_user is not None:
        import pandas as pd

        frame = pd.DataFrame({"user": split.user_ids[result.users], **result.per_user})
        frame.to_csv(per_user, index=False)
    if as_json:
        console.print_json(
            json.dumps({"phase": phase, "n_users": result.n_users, **result.metrics})
        )
        return
    table = Table(title=f"{run_dir} — {phase}, {result.n_users:,} users evaluated")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)
