"""Seconds per training epoch of every registered base model, side by side in one process.

On citeulike-t-td (the Topology Distillation split), each model of ``recpress.models.MODELS``
at the same width trains ``--epochs`` passes with the reference training settings (Adam lr
1e-3, wd 1e-3, batch 1024, BPR-style triples, summed loss); the median seconds per pass
(sampling + updates, no evaluation) is reported next to BPR-MF's, with the ratio, and the test
Recall@50 after those few passes (a smoke value, not the model's accuracy: that needs the full
schedule).

Models without an ``embedding_dim`` (Mult-VAE, CDAE) keep their own defaults and train on
batches of users at their own settings (`USER_ROW_SETTINGS`: batch size, lr, weight decay,
reduction); every row records its batch size and batch kind. ``--merge`` keeps the rows of
models not rerun from an existing ``--out`` file; every row records the BPR-MF seconds of its
own run (``bpr_seconds_per_epoch``), the baseline of its ratio.

    RECPRESS_DATA=../shared/datasets python bench/bench_models.py [--dim 64] [--epochs 3]
        [--models bpr,lightgcn,neumf,cml,multvae,cdae] [--merge]
        [--out bench/results/models.json]
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
from recpress.models.config import param_defaults
from recpress.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]

#: the reference settings of the triplet models
TRIPLET_SETTINGS = {"lr": 1e-3, "weight_decay": 1e-3, "batch_size": 1024}
#: user-row models train at their papers' settings (docs/methods.md §3.5, §3.6)
USER_ROW_SETTINGS = {
    "multvae": {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 500, "reduction_base": "mean"},
    "cdae": {"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 512},
}


def time_model(name: str, split, dim: int, epochs: int, seed: int = 0) -> dict:
    """Train `name` for `epochs` passes; seconds per pass and the final test Recall@50."""
    params = {"embedding_dim": dim} if "embedding_dim" in param_defaults(MODELS[name]) else {}
    config = ModelConfig(name=name, **params)
    model = build_model(config, split, torch.Generator().manual_seed(seed))
    settings = USER_ROW_SETTINGS.get(name, TRIPLET_SETTINGS)
    train = TrainConfig(
        epochs=epochs,
        optimizer="reference",
        selection="fixed_epochs",
        eval_every=epochs,
        patience=None,
        seed=seed,
        device="cpu",
        **settings,
    )
    result = Trainer(train).fit(model, split, progress=False)
    seconds = [row["seconds"] for row in result.history]
    return {
        "model": name,
        "params": config.params,
        "batch_kind": model.batch_kind,
        "torch_threads": torch.get_num_threads(),
        "train": settings,
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
    parser.add_argument(
        "--merge", action="store_true", help="keep the other models' rows of an existing --out"
    )
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
        r["bpr_seconds_per_epoch"] = base
        r["ratio_to_bpr"] = round(r["seconds_per_epoch"] / base, 2)
        print(
            f"{r['model']:10s} {r['seconds_per_epoch']:8.3f} s/epoch  x{r['ratio_to_bpr']:<7}"
            f" params {r['parameters']:>10,}  test R@50 after {args.epochs}: "
            f"{r['test_recall@50_after']:.4f}"
        )
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        old_base = next((r["seconds_per_epoch"] for r in old["rows"] if r["model"] == "bpr"), None)
        kept = [r for r in old["rows"] if r["model"] not in names]
        for r in kept:
            r.setdefault("bpr_seconds_per_epoch", old_base)
        rows = (
            [r for r in rows if r["model"] == "bpr"]
            + kept
            + [r for r in rows if r["model"] != "bpr"]
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
