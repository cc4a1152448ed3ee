"""Serving commands: profile, export, recommend, serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from recpress.cli.app import app, console
from recpress.errors import ConfigError


def _threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def worker_threads(workers: int, threads: int | None, cpu_count: int | None) -> int | None:
    """Threads per serving worker: as given, else None (torch's default, all cores) for one
    worker and cores ÷ workers (at least 1) for several: parallel regions of workers that share
    cores wait on each other's preempted threads, which costs several times the throughput."""
    if threads is not None or workers <= 1:
        return threads
    return max(1, (cpu_count or 1) // workers)


@app.command()
def profile(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    teacher: Annotated[
        Path | None,
        typer.Option(help="Teacher run directory (default: the one named in metrics.json)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="List length of the requests.")] = 50,
    requests: Annotated[int, typer.Option(help="Single-user requests timed.")] = 200,
    repeats: Annotated[int, typer.Option(help="All-user passes (best is kept).")] = 1,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    write: Annotated[bool, typer.Option(help="Write profile.json and add to metrics.json.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Efficiency profile: parameters, bytes, FLOPs/user, latency p50/p95/p99, throughput, memory."""
    from recpress.serving.profile import profile_run

    if k < 1 or requests < 1 or repeats < 1:
        raise ConfigError("-k, --requests and --repeats must be >= 1")
    _threads(threads)
    prof = profile_run(run_dir, teacher=teacher, write=write, k=k, n_requests=requests,
                       repeats=repeats)  # fmt: skip
    if as_json:
        console.print_json(json.dumps(prof))
        return
    _print_profile(prof)


def _print_profile(prof: dict) -> None:
    from rich.table import Table

    rows = [
        ("parameters (inference)", lambda p: f"{p['parameters']:,}"),
        ("parameters (training)", lambda p: f"{p['training_parameters']:,}"),
        ("bytes on disk", lambda p: f"{p['bytes_on_disk']:,}"),
        ("FLOPs per user", lambda p: f"{p['flops_per_user']:,}"),
        ("latency p50 ms", lambda p: f"{p['latency_ms']['p50']:.3f}"),
        ("latency p95 ms", lambda p: f"{p['latency_ms']['p95']:.3f}"),
        ("latency p99 ms", lambda p: f"{p['latency_ms']['p99']:.3f}"),
        ("all-user users/s", lambda p: f"{p['throughput']['users_per_s']:,.0f}"),
        ("peak RSS MB", lambda p: f"{p['memory']['peak_rss_mb']:.1f}"),
    ]
    teacher = prof.get("teacher")
    table = Table(title=f"{prof['run_dir']}: efficiency (top-{prof['k']}, "
                        f"{prof['environment']['torch_threads']} threads)")  # fmt: skip
    table.add_column("")
    table.add_column("model", justify="right")
    if teacher:
        table.add_column("teacher", justify="right")
    for name, get in rows:
        table.add_row(name, get(prof), *([get(teacher)] if teacher else []))
    console.print(table)
    if teacher:
        console.print("teacher ÷ student: " + json.dumps(prof["ratios"]))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact folder to write.")],
    format: Annotated[str, typer.Option("--format", help="npz, onnx or torchscript.")] = "npz",
    quantise: Annotated[
        str, typer.Option("--quantise", "--quantize", help="none, fp16 or int8 (per-row).")
    ] = "none",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Export a run as an artifact (data only, checksummed), with an optional parity-checked
    ONNX / TorchScript scorer and post-training quantisation (reports the accuracy change)."""
    from recpress.serving.export import export_run

    report = export_run(run_dir, out, format=format, quantisation=quantise, overwrite=overwrite)
    (out / "export_report.json").write_text(json.dumps(report, indent=2))
    if as_json:
        console.print_json(json.dumps(report))
        return
    console.print(f"wrote {out} ({report['bytes']:,} bytes; weights {report['weights_bytes']:,})")
    if "parity" in report:
        p = report["parity"]
        console.print(
            f"{format} parity on {p['users']:,} users: top-{p['k']} identical "
            f"({p['tie_swaps']} tie swaps), max |Δscore| {p['max_abs_score_diff']:.2e}; "
            f"scoring {p['seconds_exported']:.3f}s vs PyTorch {p['seconds_reference']:.3f}s"
        )
    if "accuracy" in report:
        a = report["accuracy"]
        changes = ", ".join(
            f"{m} {a['fp32'][m]:.4f}→{a['quantised'][m]:.4f} ({a['relative_change'][m]:+.2%})"
            for m in a["fp32"]
            if m.startswith(("recall", "ndcg"))
        )
        console.print(f"{quantise} on {a['phase']} ({a['n_users']:,} users): {changes}")


def _read_users(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"--users-file {path} does not exist")
    users = [line.strip() for line in path.read_text().splitlines()]
    users = [u for u in users if u]
    if users and users[0].lower() in ("user", "user_id", "users"):
        users = users[1:]
    if not users:
        raise ConfigError(f"--users-file {path} holds no user ids (one per line)")
    return users


@app.command()
def recommend(
    artifact: Annotated[Path, typer.Argument(help="An artifact folder written by export.")],
    user: Annotated[
        list[str] | None, typer.Option("--user", "-u", help="Original user id (repeatable).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user.")] = 20,
    users_file: Annotated[
        Path | None, typer.Option(help="File with one user id per line (batch).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write .csv or .jsonl instead of stdout.")
    ] = None,
    unknown: Annotated[
        str, typer.Option(help="Unknown users: popularity or error.")
    ] = "popularity",
    include_seen: Annotated[bool, typer.Option(help="Do not drop training items.")] = False,
) -> None:
    """Top-k items for users (original ids), excluding items they have seen."""
    from recpress.serving.recommender import TopKRecommender

    users = list(user or [])
    if users_file is not None:
        users += _read_users(users_file)
    if not users:
        raise ConfigError("give --user ID (repeatable) or --users-file FILE")
    if k < 1:
        raise ConfigError(f"-k must be a positive integer, got {k}")
    if out is not None and out.suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"--out must end in .csv or .jsonl, got {out}")
    rec = TopKRecommender.load(artifact, unknown=unknown)
    if rec.user_ids_are_int:
        users = [int(u) if u.lstrip("-").isdigit() else u for u in users]
    rows = rec.recommend(users, k, exclude_seen=not include_seen).rows()
    if out is None:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        if out.suffix == ".jsonl":
            for row in rows:
                f.write(json.dumps(row) + "\n")
        else:
            import csv

            w = csv.writer(f)
            w.writerow(["user", "rank", "item", "score", "fallback"])
            for row in rows:
                for rank, (item, score) in enumerate(zip(row["items"], row["scores"], strict=True)):
                    w.writerow([row["user"], rank + 1, item, f"{score:.6g}", int(row["fallback"])])
    tmp.replace(out)
    n_fb = sum(r["fallback"] for r in rows)
    console.print(f"wrote {len(rows):,} users × top-{k} to {out} ({n_fb} unknown → popularity)")


@app.command()
def serve(
    artifact: Annotated[Path, typer.Argument(help="An artifact folder written by export.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    max_batch: Annotated[int, typer.Option(help="Most users per POST /recommend.")] = 1000,
    max_k: Annotated[int, typer.Option(help="Largest k accepted.")] = 1000,
    unknown: Annotated[
        str, typer.Option(help="Unknown users: popularity or error.")
    ] = "popularity",
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads per worker (default: all cores with one worker, else cores ÷ "
            "workers, so that workers do not oversubscribe the cores)."
        ),
    ] = None,
) -> None:
    """Serve an artifact over HTTP (FastAPI + uvicorn; pip install 'recpress[serve]')."""
    import os

    from recpress.serving.app import ENV_ARTIFACT, ENV_PREFIX, _require_fastapi, create_app

    _require_fastapi()
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigError("serving needs uvicorn: pip install 'recpress[serve]'") from None
    if workers < 1 or max_batch < 1 or max_k < 1 or not 0 < port < 65536:
        raise ConfigError("--workers, --max-batch, --max-k must be >= 1 and --port in 1..65535")
    threads = worker_threads(workers, threads, os.cpu_count())
    _threads(threads)
    application = create_app(artifact, max_batch=max_batch, max_k=max_k, unknown=unknown)
    if workers == 1:
        uvicorn.run(application, host=host, port=port, log_level="warning")
        return
    os.environ[ENV_ARTIFACT] = str(artifact)
    os.environ[ENV_PREFIX + "MAX_BATCH"] = str(max_batch)
    os.environ[ENV_PREFIX + "MAX_K"] = str(max_k)
    os.environ[ENV_PREFIX + "UNKNOWN"] = unknown
    if threads:
        os.environ[ENV_PREFIX + "THREADS"] = str(threads)
    uvicorn.run(
        "recpress.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )
