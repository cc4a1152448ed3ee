"""Benchmark: full-ranking evaluation of a random 200-dim BPR-MF on citeulike-t (TD split).

Loads ``$RECPRESS_DATA/citeulike-t/kd_split_td_kdd21/{train,valid,test}.tsv`` (default
RECPRESS_DATA = ../shared/datasets relative to the repo root), times ``evaluate()`` over all
users at the test phase (median of 3 after one warm-up), prints and writes
bench/results/eval.json.

    python bench/bench_eval.py [--dim 200] [--batch-size N] [--repeats 3] [--device cpu]
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

from recpress.data.types import Split, to_csr
from recpress.evaluation import evaluate
from recpress.evaluation.ranking import DEFAULT_CHUNK_ELEMENTS
from recpress.models import BPRMF

ROOT = Path(__file__).resolve().parents[1]


def load_td_split(data_root: Path) -> Split:
    """Minimal local loader of the Topology Distillation split (user<TAB>item, 0-based)."""
    folder = data_root / "citeulike-t" / "kd_split_td_kdd21"
    parts = {
        name: np.loadtxt(folder / f"{name}.tsv", dtype=np.int64, delimiter="\t", ndmin=2)
        for name in ("train", "valid", "test")
    }
    n_users = int(max(p[:, 0].max() for p in parts.values())) + 1
    n_items = int(max(p[:, 1].max() for p in parts.values())) + 1
    mats = {k: to_csr(v[:, 0], v[:, 1], n_users, n_items) for k, v in parts.items()}
    return Split(
        train=mats["train"],
        valid=mats["valid"],
        test=mats["test"],
        user_ids=np.arange(n_users),
        item_ids=np.arange(n_items),
        dataset="citeulike-t",
        protocol="loo-full",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval.json"))
    args = ap.parse_args()

    data_root = Path(os.environ.get("RECPRESS_DATA", ROOT / ".." / "shared" / "datasets"))
    t0 = time.perf_counter()
    split = load_td_split(data_root)
    load_s = time.perf_counter() - t0
    model = BPRMF(embedding_dim=args.dim).build(split, generator=torch.Generator().manual_seed(0))
    model.to(args.device)

    def run():
        res = evaluate(model, split, ks=(10, 20, 50), phase="test", batch_size=args.batch_size)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return res

    res = run()  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t)
    out = {
        "benchmark": "evaluate_full_ranking",
        "dataset": "citeulike-t/kd_split_td_kdd21",
        "n_users": split.n_users,
        "n_items": split.n_items,
        "evaluated_users": res.n_users,
        "phase": res.phase,
        "exclude": list(res.exclude),
        "ks": list(res.ks),
        "model": f"BPRMF(embedding_dim={args.dim}), random init",
        "batch_size": args.batch_size or max(1, DEFAULT_CHUNK_ELEMENTS // split.n_items),
        "batch_size_auto": args.batch_size is None,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_s": round(load_s, 3),
        "times_s": [round(t, 4) for t in times],
        "median_s": round(statistics.median(times), 4),
        "metrics": res.metrics,
    }
    print(json.dumps(out, indent=2))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
