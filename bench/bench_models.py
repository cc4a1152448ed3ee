"""Seconds per training epoch of every registered base model, side by side in one process.

On citeulike-t-td (the Topology Distillation split), each model of ``recpress.models.MODELS``
at the same width trains ``--epochs`` passes with the reference training settings (Adam lr
1e-3, wd 1e-3, batch 1024, BPR-style triples, summed loss); the median seconds per pass
(sampling + updates, no evaluation) is reported next to BPR-MF's, with the ratio, and the test
Recall@50 after those few passes (a smoke value, not the model's accuracy: that needs the full
schedule).

    RECPRESS_DATA=../shared/datasets python bench/bench_models.py [--dim 64] [--epochs 3]
        [--models bpr,lightgcn,neumf,cml] [--out bench/results/models.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from bench_core import machine  # the same machine record as the core benchmark

from recpress.data import load_split
from recpress.models import MODELS, ModelConfig, build_model
from recpress.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


def time_model(name: str, split, dim: int, epochs: int, seed: int = 0) -> dict:
    """Train `name` for `epochs` passes; seconds per pass and the final test Recall@50."""
    config = ModelConfig(name=name, embedding_dim=dim)
    model = build_model(config, split, torch.Generator().manual_seed(seed))
    train = TrainConfig(
        epochs=epochs,
        lr=1e-3,
        weight_decay=1e-3,
        batch_size=1024,
        optimizer="reference",
        selection="fixed_epochs",
        eval_every=epochs,
        patience=None,
        seed=seed,
        device="cpu",
    )
    result = Trainer(train).fit(model, split, progress=False)
    seconds = [row["seconds"] for row in result.history]
    return {
        "model": name,
        "params": config.params,
        "parameters": model.num_parameters(),
        "seconds_per_epoch": statistics.median(seconds),
        "seconds": seconds,
        "test_recall@50_after": result.test.get("recall@50"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/models.json")
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if "bpr" not in names:
        names.insert(0, "bpr")  # the baseline every ratio is taken against
    split = load_split("citeulike-t-td")
    rows = [time_model(n, split, args.dim, args.epochs) for n in names]
    base = next(r for r in rows if r["model"] == "bpr")["seconds_per_epoch"]
    for r in rows:
        r["ratio_to_bpr"] = round(r["seconds_per_epoch"] / base, 2)
        print(
            f"{r['model']:10s} {r['seconds_per_epoch']:8.3f} s/epoch  x{r['ratio_to_bpr']:<7}"
            f" params {r['parameters']:>10,}  test R@50 after {args.epochs}: "
            f"{r['test_recall@50_after']:.4f}"
        )
    out = {
        "dataset": "citeulike-t-td",
        "dim": args.dim,
        "epochs": args.epochs,
        "machine": machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
