"""One process against two data-parallel processes (torchrun, gloo) on the same data.

BPR-MF (``--dim``, default 64) trains ``--epochs`` passes on citeulike-t-td at the reference
settings (lr 1e-3, wd 1e-3, global batch 1024, summed loss, fixed epochs, seed 0) in three
set-ups, each a fresh interpreter:

* ``1x1``: one process, one thread;
* ``1x2``: one process, two threads (all cores to one process);
* ``2x1``: ``torchrun --nproc-per-node 2``, one thread each (gloo on loopback; each rank takes
  512 triples of every global batch of 1024).

On a 2-core machine ``2x1`` against ``1x2`` is the fair comparison (the same cores); ``1x1`` is
the per-core baseline. Reported per set-up: median seconds per pass (sampling + updates, no
evaluation), the speed-up against each one-process set-up, and the test Recall@50 after the
last pass (the same passes and global batches: the accuracy parity check).

    RECPRESS_DATA=../shared/datasets python bench/bench_ddp.py [--dim 64] [--epochs 10]
        [--optimizers lazy,reference] [--out bench/results/ddp.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # name -> (processes, threads each)


def worker(args: argparse.Namespace) -> None:
    """One training run (a rank of torchrun, or the single process); rank 0 writes the JSON."""
    from bench_core import machine

    from recpress.data import load_split
    from recpress.models import BPRMF
    from recpress.training import TrainConfig, Trainer, distributed

    torch.set_num_threads(args.threads)
    split = load_split("citeulike-t-td")
    config = TrainConfig(
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=1e-3,
        weight_decay=1e-3,
        batch_size=1024,
        selection="fixed_epochs",
        eval_every=args.epochs,
        patience=None,
        seed=0,
        device="cpu",
    )
    result = Trainer(config).fit(BPRMF(args.dim), split, progress=False)
    rank = distributed.info()
    if rank.is_main:
        seconds = [row["seconds"] for row in result.history]
        record = {
            "processes": rank.world,
            "threads_per_process": torch.get_num_threads(),
            "optimizer": args.optimizer,
            "seconds_per_epoch": round(statistics.median(seconds[1:] or seconds), 4),
            "seconds_all_epochs": seconds,
            "test_recall@50": result.test["recall@50"],
            "test_ndcg@50": result.test["ndcg@50"],
            "machine": machine(),
        }
        Path(args.result).write_text(json.dumps(record))
    distributed.barrier()
    distributed.teardown()


def run_setup(name: str, optimizer: str, args: argparse.Namespace) -> dict:
    processes, threads = SETUPS[name]
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        worker_args = [
            str(Path(__file__).resolve()), "worker", "--threads", str(threads),
            "--epochs", str(args.epochs), "--dim", str(args.dim), "--optimizer", optimizer,
            "--result", str(result),
        ]  # fmt: skip
        if processes == 1:
            cmd = [sys.executable, *worker_args]
        else:
            cmd = [
                sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                str(processes), "--master-port", str(args.port), *worker_args,
            ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "bench"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        record = json.loads(result.read_text())
    record["setup"] = name
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--epochs", type=int, default=10)
    w.add_argument("--dim", type=int, default=64)
    w.add_argument("--optimizer", default="lazy")
    w.add_argument("--result", required=True)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--optimizers", default="lazy,reference")
    parser.add_argument("--port", type=int, default=29671)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ddp.json")
    args = parser.parse_args()
    if args.mode == "worker":
        worker(args)
        return
    rows = []
    for optimizer in args.optimizers.split(","):
        by_setup = {name: run_setup(name, optimizer, args) for name in SETUPS}
        for name, record in by_setup.items():
            record["speedup_vs_1x1"] = round(
                by_setup["1x1"]["seconds_per_epoch"] / record["seconds_per_epoch"], 3
            )
            record["speedup_vs_1x2"] = round(
                by_setup["1x2"]["seconds_per_epoch"] / record["seconds_per_epoch"], 3
            )
            rows.append(record)
            print(
                f"{optimizer:9s} {name}: {record['seconds_per_epoch']:.3f} s/epoch, "
                f"x{record['speedup_vs_1x1']:.2f} vs 1x1, x{record['speedup_vs_1x2']:.2f} vs "
                f"1x2, test Recall@50 {record['test_recall@50']:.4f}",
                flush=True,
            )
    out = {
        "dataset": "citeulike-t-td",
        "model": f"bpr d={args.dim}",
        "epochs": args.epochs,
        "global_batch": 1024,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
