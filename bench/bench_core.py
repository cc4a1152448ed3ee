"""Benchmark of the core (issue: data, BPR teacher, evaluation): accuracy and speed.

On citeulike-t-td (the Topology Distillation split), side by side in one process:

* RecPress BPR-MF teacher, d = 200, lr 1e-3, batch 1024, wd 1e-3, 100 epochs, lazy optimiser
  with its compiled (fused) row update: test Recall/NDCG@10/20/50 (masking: train + valid),
  time per epoch (median; epoch 0 also pays the one-off compilation);
* the same lazy optimiser run eagerly (``fused_optimizer: off``, ``--eager-epochs`` epochs) and
  the ``reference`` (dense Adam) optimiser (``--reference-epochs``): time per epoch;
* full-ranking evaluation time for all 5,219 users x 25,181 items;
* implicit's BPR (PyPI ``implicit``), 200 factors, 100 iterations, scored by the same
  evaluation code: accuracy and wall time.

    RECPRESS_DATA=../shared/datasets python bench/bench_core.py [--epochs 100]
        [--reference-epochs 3] [--eager-epochs 5] [--skip-implicit]
        [--out bench/results/core.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from recpress.data import load_split
from recpress.evaluation import evaluate
from recpress.models import BPRMF
from recpress.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
KS = (10, 20, 50)
REPORTED = [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS]


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def train_bpr(split, optimizer: str, epochs: int, seed: int, fused: str = "auto") -> dict:
    config = TrainConfig(
        epochs=epochs,
        fused_optimizer=fused,
        lr=1e-3,
        weight_decay=1e-3,
        batch_size=1024,
        optimizer=optimizer,
        selection="fixed_epochs",
        eval_every=10,
        ks=list(KS),
        seed=seed,
        device="cpu",
    )
    model = BPRMF(embedding_dim=200)
    started = time.perf_counter()
    result = Trainer(config).fit(model, split, progress=False)
    wall = time.perf_counter() - started
    epoch_times = [row["seconds"] for row in result.history]
    evals = [r for r in result.history if "valid_recall@50" in r]
    best = max(evals, key=lambda r: r["valid_recall@50"])
    return {
        "optimizer": optimizer,
        "fused_optimizer": fused,
        "epochs": epochs,
        "final_epoch": result.best_epoch,
        "test": {k: round(result.test[k], 4) for k in REPORTED},
        "validation_selected": {
            "epoch": best["epoch"],
            "test": {k: round(best[f"test_{k}"], 4) for k in REPORTED},
        },
        "test_recall@50_curve": {r["epoch"]: round(r["test_recall@50"], 4) for r in evals},
        "seconds_per_epoch_median": round(statistics.median(epoch_times), 4),
        "seconds_per_epoch_mean": round(statistics.fmean(epoch_times), 4),
        "seconds_epoch0": round(epoch_times[0], 4),
        "wall_seconds_incl_eval": round(wall, 1),
        "model": model,
    }


def time_evaluation(model, split, repeats: int = 3) -> dict:
    evaluate(model, split, ks=KS, phase="test")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(model, split, ks=KS, phase="test")
        times.append(time.perf_counter() - t0)
    return {
        "median_seconds": round(statistics.median(times), 3),
        "times": times,
        "users": split.n_users,
        "items": split.n_items,
    }


def run_implicit(split, iterations: int, seed: int) -> dict:
    """implicit's BPR at its defaults and on a small grid; the grid point is chosen on the
    validation Recall@50 (the same selection rule as ours), test metrics reported."""
    try:
        import implicit
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        return {"skipped": "implicit is not installed (pip install implicit)"}
    train = split.train.tocsr().astype(np.float32)
    runs = []
    for lr, reg in [(0.01, 0.01), (0.05, 0.01), (0.05, 0.001), (0.1, 0.001)]:
        model = BayesianPersonalizedRanking(
            factors=200,
            iterations=iterations,
            learning_rate=lr,
            regularization=reg,
            random_state=seed,
        )
        t0 = time.perf_counter()
        model.fit(train, show_progress=False)
        wall = time.perf_counter() - t0
        users = torch.as_tensor(np.asarray(model.user_factors))
        items = torch.as_tensor(np.asarray(model.item_factors))

        def score(u, users=users, items=items):
            return users[u] @ items.T

        valid = evaluate(score, split, ks=KS, phase="valid").metrics
        test = evaluate(score, split, ks=KS, phase="test").metrics
        runs.append(
            {
                "learning_rate": lr,
                "regularization": reg,
                "wall_seconds": round(wall, 2),
                "seconds_per_iteration": round(wall / iterations, 4),
                "valid_recall@50": round(valid["recall@50"], 4),
                "test": {k: round(test[k], 4) for k in REPORTED},
            }
        )
    best = max(runs, key=lambda r: r["valid_recall@50"])
    return {
        "library": "implicit",
        "version": implicit.__version__,
        "settings": {"factors": 200, "iterations": iterations, "threads": "all"},
        "grid": runs,
        "selected_on_validation": best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--reference-epochs", type=int, default=3)
    parser.add_argument("--eager-epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-implicit", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core.json")
    args = parser.parse_args()

    split = load_split("citeulike-t-td")
    report: dict = {
        "benchmark": "core",
        "dataset": "citeulike-t-td",
        "machine": machine(),
        "split": split.stats(),
    }

    lazy = train_bpr(split, "lazy", args.epochs, args.seed)
    model = lazy.pop("model")
    report["recpress_bpr_lazy"] = lazy
    print(
        f"RecPress BPR d=200 (lazy), {args.epochs} epochs: "
        f"{lazy['seconds_per_epoch_median']:.3f} s/epoch; test {lazy['test']}",
        flush=True,
    )

    report["evaluation"] = time_evaluation(model, split)
    print(
        f"full-ranking evaluation, all users: {report['evaluation']['median_seconds']:.3f} s",
        flush=True,
    )

    peers = (
        ("recpress_bpr_lazy_eager", "lazy", "off", args.eager_epochs, "fused_vs_eager",
         "lazy, eager row update", "fused"),
        ("recpress_bpr_reference", "reference", "auto", args.reference_epochs,
         "lazy_vs_reference", "reference (dense Adam)", "lazy"),
    )  # fmt: skip
    for key, optimizer, fused, epochs, ratio, label, ours in peers:
        if epochs <= 0:
            continue
        peer = train_bpr(split, optimizer, epochs, args.seed, fused=fused)
        peer.pop("model")
        report[key] = peer
        report[f"speedup_{ratio}"] = round(
            peer["seconds_per_epoch_median"] / lazy["seconds_per_epoch_median"], 2
        )
        print(
            f"{label}: {peer['seconds_per_epoch_median']:.3f} s/epoch "
            f"({ours} is {report[f'speedup_{ratio}']}x faster)",
            flush=True,
        )

    if not args.skip_implicit:
        report["implicit_bpr"] = run_implicit(split, args.epochs, args.seed)
        print(f"implicit BPR: {report['implicit_bpr']}", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
