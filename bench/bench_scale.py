"""Time and peak memory against data size on the synthetic generator (10^5 ... 10^7).

For each size N (interactions), users and items scale with Gowalla's ratio (29,858 users and
40,981 items per 1,027,370 interactions), and one child process per size measures:

* ``generate``: `synthetic:UxIxN:0` generation and its 60/20/20 split;
* ``bpr``: a BPR-MF d=64 training epoch (lazy Adam, batch 1024): epoch 0 (with any one-off
  compilation) and epoch 1 (reported);
* ``eval``: full-ranking test evaluation (Recall/NDCG@20) of a fixed sample of
  ``--eval-users`` users over the whole catalogue; the time per evaluated user grows with the
  catalogue, so the full evaluation (all users) is that time x users, quadratic in N when
  users and items both grow (``eval_all_users_seconds_estimate``);
* ``htd``: a d=8 HTD student epoch at τ = 1 (the expensive early epoch) with the d=64 model as
  teacher, timed over ``--htd-batches`` batches after 10 untimed ones (where a compiled
  optimiser step compiles) and scaled to the epoch's batches; with the mean number of batch
  entities (unique users + items, at most 3 x 1024), which HTD's cost per batch follows;
* the process's peak RSS after each phase (monotone: the high-water mark so far).

Linearity: seconds per training interaction at the largest size ÷ at the smallest (target
≤ 1.3), and peak RSS per interaction likewise (the interpreter and torch, ~0.3 GB, are a
constant that dominates at the small sizes: the ratio uses RSS minus the size-independent
baseline measured before any data exists).

    python bench/bench_scale.py [--sizes 1e5,3e5,1e6,3e6,1e7] [--out bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
GOWALLA = (29_858, 40_981, 1_027_370)
SIZES = "1e5,3e5,1e6,3e6,1e7"


def shape_for(n: int) -> tuple[int, int, int]:
    users = max(10, round(n * GOWALLA[0] / GOWALLA[2]))
    items = max(20, round(n * GOWALLA[1] / GOWALLA[2]))
    return users, items, int(n)


def _rss() -> float:
    from recpress.training.memory import peak_rss_mb

    return peak_rss_mb()


def _epoch(objective, optimizer, model, split, generator, batch_size, limit=None, warmup=0) -> dict:
    """One pass of the trainer's loop (the same calls). With `limit`, the `warmup` first
    batches (a compiled optimiser step compiles there) are run untimed and the next `limit`
    timed, and the epoch time is scaled from them; the mean unique users + items per timed
    batch is recorded (what HTD's per-batch cost follows)."""
    from recpress.distill.topology import batch_entities

    n_batches = 0
    entities = 0
    total = -(-int(split.train.nnz) // batch_size)
    t0 = time.perf_counter()
    for i, batch in enumerate(model.epoch_batches(split, generator, batch_size, "cpu")):
        if limit is not None and i == warmup:
            t0 = time.perf_counter()
        timed = limit is None or i >= warmup
        if timed and limit is not None:
            users, items = batch_entities(batch)
            entities += users.numel() + items.numel()
        loss = objective(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.post_step(batch)
        n_batches += timed
        if limit is not None and n_batches >= limit:
            break
    flush = getattr(optimizer, "flush", None)
    if flush is not None:
        flush()
    seconds = time.perf_counter() - t0
    out = {
        "seconds": round(seconds, 3),
        "batches_timed": n_batches,
        "batches_per_epoch": total,
        "epoch_seconds": round(seconds * total / n_batches, 3),
    }
    if limit is not None:
        out["entities_per_batch"] = round(entities / n_batches, 1)
        out["ms_per_batch"] = round(seconds / n_batches * 1e3, 2)
    return out


def child(n: int, eval_users: int, htd_batches: int, seed: int) -> dict:
    from recpress.data import load_split
    from recpress.distill.topology import HTD
    from recpress.evaluation import evaluate
    from recpress.models import BPRMF
    from recpress.training.objective import TrainingObjective
    from recpress.training.optim import make_optimizer

    out: dict = {"interactions": n, "rss_baseline_mb": _rss()}
    users, items, _ = shape_for(n)
    t0 = time.perf_counter()
    split = load_split(f"synthetic:{users}x{items}x{n}:{seed}")
    out["generate"] = {"seconds": round(time.perf_counter() - t0, 3), "rss_mb": _rss()}
    out.update(users=split.n_users, items=split.n_items, train=int(split.train.nnz))

    gen = torch.Generator().manual_seed(seed)
    model = BPRMF(embedding_dim=64)
    model.build(split, generator=gen)
    objective = TrainingObjective(model)
    opt = make_optimizer("lazy", objective.parameters(), 1e-3, 1e-3)
    first = _epoch(objective, opt, model, split, gen, 1024)
    second = _epoch(objective, opt, model, split, gen, 1024)
    out["bpr"] = {"epoch0": first, **second, "rss_mb": _rss()}

    rng = np.random.default_rng(seed)
    has = np.flatnonzero(np.diff(split.test.indptr) > 0)
    pick = np.sort(rng.choice(has, size=min(eval_users, len(has)), replace=False))
    keep = np.zeros(split.n_users, dtype=np.float32)
    keep[pick] = 1.0
    sample = type(split)(
        train=split.train,
        valid=split.valid,
        test=sp.csr_matrix(sp.diags(keep) @ split.test),
        user_ids=split.user_ids,
        item_ids=split.item_ids,
        dataset=split.dataset,
        protocol=split.protocol,
    )
    t0 = time.perf_counter()
    res = evaluate(model, sample, ks=(20,), phase="test")
    sec = time.perf_counter() - t0
    out["eval"] = {
        "users": res.n_users,
        "chunks": res.n_chunks,
        "seconds": round(sec, 3),
        "seconds_per_user": sec / max(res.n_users, 1),
        "eval_all_users_seconds_estimate": round(sec / max(res.n_users, 1) * split.n_users, 1),
        "recall@20": round(res.metrics["recall@20"], 4),
        "rss_mb": _rss(),
    }

    model.eval()
    student = BPRMF(embedding_dim=8)
    student.build(split, generator=gen)
    htd = HTD()
    htd.bind_student(student, seed=seed)
    htd.prepare(model, split, student=student)
    htd.on_epoch_start(student, 0, gen)
    objective = TrainingObjective(student, [(htd, 1e-3)])
    opt = make_optimizer("lazy", objective.parameters(), 1e-3, 1e-3)
    htd_epoch = _epoch(objective, opt, student, split, gen, 1024, htd_batches, warmup=10)
    out["htd"] = {**htd_epoch, "rss_mb": _rss()}
    out["peak_rss_mb"] = _rss()
    out["torch_threads"] = torch.get_num_threads()
    return out


def summarise(rows: list[dict]) -> dict:
    small, large = rows[0], rows[-1]

    def ratio(key: str) -> float:
        a = small[key]["epoch_seconds"] / small["train"]
        b = large[key]["epoch_seconds"] / large["train"]
        return round(b / a, 3)

    def mem_ratio() -> float:
        a = (small["peak_rss_mb"] - small["rss_baseline_mb"]) / small["interactions"]
        b = (large["peak_rss_mb"] - large["rss_baseline_mb"]) / large["interactions"]
        return round(b / a, 3)

    eval_per_item = [r["eval"]["seconds_per_user"] / r["items"] for r in (small, large)]
    per_entity = [r["htd"]["ms_per_batch"] / r["htd"]["entities_per_batch"] for r in (small, large)]
    return {
        "htd_ms_per_batch_entity_ratio": round(per_entity[1] / per_entity[0], 3),
        "bpr_seconds_per_interaction_ratio": ratio("bpr"),
        "htd_seconds_per_interaction_ratio": ratio("htd"),
        "eval_seconds_per_user_item_ratio": round(eval_per_item[1] / eval_per_item[0], 3),
        "peak_rss_per_interaction_ratio_above_baseline": mem_ratio(),
        "sizes": [r["interactions"] for r in rows],
    }


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["interactions"] for r in rows], dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("bpr", "BPR-MF d64 epoch"), ("htd", "HTD d8 epoch (τ=1)")):
        ax1.loglog(n, [r[key]["epoch_seconds"] for r in rows], "o-", label=label)
    ax1.loglog(n, [r["eval"]["seconds"] for r in rows], "s--", label="eval, fixed user sample")
    ref = rows[0]["bpr"]["epoch_seconds"] * n / n[0]
    ax1.loglog(n, ref, ":", color="grey", label="linear")
    ax1.set_xlabel("interactions")
    ax1.set_ylabel("seconds")
    ax1.legend(fontsize=8)
    ax2.loglog(n, [r["peak_rss_mb"] for r in rows], "o-", label="peak RSS")
    ax2.loglog(
        n,
        [r["peak_rss_mb"] - r["rss_baseline_mb"] for r in rows],
        "s--",
        label="peak RSS above baseline",
    )
    ax2.set_xlabel("interactions")
    ax2.set_ylabel("MiB")
    ax2.legend(fontsize=8)
    fig.suptitle("RecPress on synthetic data with Gowalla's shape ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default=SIZES)
    ap.add_argument("--eval-users", type=int, default=2000)
    ap.add_argument("--htd-batches", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only the rows of --sizes in an existing --out (a remeasured size); "
        "the summary and chart are recomputed over all rows",
    )
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.eval_users, args.htd_batches, args.seed)))
        return
    rows = []
    for size in (int(float(s)) for s in args.sizes.split(",")):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(size),
            "--eval-users",
            str(args.eval_users),
            "--htd-batches",
            str(args.htd_batches),
            "--seed",
            str(args.seed),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"N={size:>9,}  users {row['users']:>7,} items {row['items']:>7,}  "
            f"gen {row['generate']['seconds']:.1f}s  bpr {row['bpr']['epoch_seconds']:.2f}s  "
            f"eval({row['eval']['users']}u) {row['eval']['seconds']:.2f}s  "
            f"htd {row['htd']['epoch_seconds']:.1f}s  peak {row['peak_rss_mb']:.0f} MiB",
            flush=True,
        )
    from bench_core import machine

    commands = [" ".join(sys.argv)]
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        new = {r["interactions"]: r for r in rows}
        rows = [new.pop(r["interactions"], r) for r in old["rows"]] + list(new.values())
        rows.sort(key=lambda r: r["interactions"])
        commands = [*old.get("commands", [old.get("command", "")]), *commands]
    result = {
        "rows": rows,
        "summary": summarise(rows),
        "machine": machine(),
        "commands": commands,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    chart(rows, args.out.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
