"""Benchmark: seconds per training epoch of every KD method, side by side with the no-KD student.

citeulike-t-td, BPR teacher d=200 (a finished teacher run directory), students d=20 (φ = 0.1),
batch 1024 (113 batches per epoch). Each method trains ``--steps`` batches at an early epoch
(temperature τ = 1: DE / HTD run every expert densely) and at a late one (τ annealed: one
expert per entity), in one process, methods interleaved round by round so that all of them see
the same machine load; the median over ``--rounds`` rounds is reported, scaled to a full epoch,
plus the median time of the distillers' epoch start (their per-epoch lists and caches).
The loop is the trainer's (base loss + λ·KD loss, backward, optimiser step); evaluation and
checkpointing are not included. Writes bench/results/method_speed.json and method_speed.md.

    RECPRESS_DATA=../shared/datasets python bench/bench_method_speed.py \\
        --teacher runs/td-citeulike/teacher [--steps 12] [--rounds 3] [--optimizer reference]

``--device cuda`` times the same loop on a GPU (synchronised before and after each timed span;
the teacher, student and distillers live on the GPU as in a sweep run there). ``--profile
METHOD`` then records ``--steps`` batches of that method at each timed epoch with
torch.profiler and writes the operator tables (self CPU time, self device time) to
``<out>.<METHOD>.profile.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = [
    "none", "kd", "rd", "cd", "rrd", "ir-rrd", "dcd", "unkd",
    "de", "de@bf16", "de+rrd", "de+rrd@bf16", "ftd", "htd", "htd@bf16",
]  # fmt: skip
#: "METHOD@bf16": the method's expert banks (DE, HTD) with expert_precision=bf16
EXPERT_METHODS = ("de", "htd")
#: the reference experiment's HTD (configs/td-citeulike.yaml)
PARAMS = {"htd": {"preset": "reference", "n_groups": 30, "gamma": 0.5, "choice": "second"}}
#: the epochs timed: τ = 1 at epoch 0; HTD's τ (E_max = 100) is ~1e-5 at 50, DE's (E_max = 1000)
#: is 0.1 at 100 (DE's experts stay dense for its first few hundred epochs)
EPOCHS = {"early": 0, "late": 50}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=ROOT / "runs" / "td-citeulike" / "teacher")
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--steps", type=int, default=12, help="batches timed per method and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--optimizer", default="reference", choices=["reference", "lazy"])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--profile", default=None, help="a method to profile after the timing")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "method_speed.json")
    return p.parse_args(argv)


class Arm:
    """One student (+ its distillers and optimiser) that can train a few batches at any epoch."""

    def __init__(
        self, method: str, split, knowledge, dim: int, optimizer: str, device: torch.device
    ) -> None:
        from recpress.distill import make_distillers, prepare_distillers
        from recpress.models import BPRMF
        from recpress.training.optim import make_optimizer

        self.method = method
        self.generator = torch.Generator().manual_seed(0)
        self.model = BPRMF(dim)
        self.model.build(split, self.generator)
        self.model.to(device)
        self.device = device
        self.distillers = []
        spec, _, precision = method.partition("@")
        if spec != "none":
            names = spec.split("+")
            params = {n: dict(PARAMS.get(n, {})) for n in names}
            if precision:
                for n in names:
                    if n in EXPERT_METHODS:
                        params[n]["expert_precision"] = precision
            self.distillers = make_distillers(spec, None, params)
            prepare_distillers(self.distillers, knowledge, split, student=self.model, seed=0)
            for d, _ in self.distillers:
                d.to(device)
        params = list(self.model.parameters())
        for d, _ in self.distillers:
            params += list(d.parameters())
        self.optimizer = make_optimizer(optimizer, params, 1e-3, 1e-3)
        self.split = split

    def seconds_per_batch(self, epoch: int, steps: int) -> tuple[float, float]:
        """(seconds per batch over `steps` batches, seconds of the distillers' epoch start)."""
        from recpress.data.sampling import epoch_triples
        from recpress.models.base import TripletBatch

        sync(self.device)
        t0 = time.perf_counter()
        for d, _ in self.distillers:
            d.on_epoch_start(self.model, epoch, self.generator)
        sync(self.device)
        start = time.perf_counter() - t0
        users, pos, neg = epoch_triples(self.split, self.generator, self.device)
        sync(self.device)
        t0 = time.perf_counter()
        for s in range(0, steps * 1024, 1024):
            batch = TripletBatch(users[s : s + 1024], pos[s : s + 1024], neg[s : s + 1024])
            loss = self.model.loss(batch).sum()
            for d, weight in self.distillers:
                loss = loss + weight * d.loss(self.model, batch, epoch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync(self.device)
        return (time.perf_counter() - t0) / steps, start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_method(arm: Arm, steps: int, path: Path) -> None:
    """torch.profiler tables of `steps` batches at each timed epoch, written to `path`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if arm.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    parts = []
    for phase, epoch in EPOCHS.items():
        with profile(activities=activities) as prof:
            seconds, _ = arm.seconds_per_batch(epoch, steps)
        averages = prof.key_averages()
        parts.append(
            f"## {arm.method}, {phase} (epoch {epoch}): {seconds * 1e3:.2f} ms per batch "
            "(under the profiler, which slows it)"
        )
        parts.append(averages.table(sort_by="self_cpu_time_total", row_limit=30))
        if arm.device.type == "cuda":
            parts.append(averages.table(sort_by="self_device_time_total", row_limit=20))
    path.write_text("\n\n".join(parts) + "\n")
    print(f"wrote {path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    from recpress.distill.teachers import load_teacher
    from recpress.runs import load_split_of
    from recpress.training.trainer import resolve_device

    device = resolve_device(args.device)
    split = load_split_of(args.teacher)
    knowledge = load_teacher(args.teacher, split).to(device)
    batches = -(-int(split.train.nnz) // 1024)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.profile and args.profile not in methods:
        raise SystemExit(f"error: --profile {args.profile} is not among --methods")
    arms = {m: Arm(m, split, knowledge, args.dim, args.optimizer, device) for m in methods}
    times: dict = {m: {phase: [] for phase in EPOCHS} for m in methods}
    starts: dict = {m: {phase: [] for phase in EPOCHS} for m in methods}
    for arm in arms.values():  # warm-up: first-call costs (allocations, teacher lists)
        arm.seconds_per_batch(0, 2)
    for r in range(args.rounds):
        for phase, epoch in EPOCHS.items():
            for m, arm in arms.items():
                per_batch, start = arm.seconds_per_batch(epoch, args.steps)
                times[m][phase].append(per_batch)
                starts[m][phase].append(start)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    rows = {}
    for m in methods:
        rows[m] = {  # the batches plus the epoch start (lists, caches) once
            phase: round(
                statistics.median(times[m][phase]) * batches + statistics.median(starts[m][phase]),
                3,
            )
            for phase in EPOCHS
        }
    base = rows.get("none")
    for row in rows.values():
        if base:
            row["x_none_early"] = round(row["early"] / base["early"], 2)
            row["x_none_late"] = round(row["late"] / base["late"], 2)
    out = {
        "benchmark": "method_speed",
        "dataset": "citeulike-t-td",
        "teacher": str(args.teacher),
        "student_dim": args.dim,
        "optimizer": args.optimizer,
        "batches_per_epoch": batches,
        "epochs_timed": EPOCHS,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "seconds_per_epoch": rows,
        "raw_seconds_per_batch": times,
        "raw_seconds_epoch_start": starts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    where = out["machine"]["gpu"] if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    md = [
        f"# Seconds per epoch, student d={args.dim}, {args.optimizer} Adam, {where}",
        "",
        f"epoch {EPOCHS['early']} (τ = 1) and epoch {EPOCHS['late']} (τ annealed); "
        f"{batches} batches of 1024; median of {args.rounds} rounds of {args.steps} batches, "
        "plus the epoch start (per-epoch lists and caches).",
        "",
        "| method | s/epoch early | × no-KD | s/epoch late | × no-KD |",
        "|---|---|---|---|---|",
    ]
    for m, row in rows.items():
        md.append(
            f"| {m} | {row['early']:.2f} | {row.get('x_none_early', '')} | {row['late']:.2f} | "
            f"{row.get('x_none_late', '')} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if base:
        slow = [m for m, r in rows.items() if m != "none" and r["late"] > 10 * base["late"]]
        print(
            f"\nno-KD student: {base['late']:.2f} s/epoch. "
            + (
                f"More than 10x that: {', '.join(slow)}."
                if slow
                else "Every method stays within 10x of it."
            )
        )
    print(f"wrote {args.out}")
    if args.profile:
        profile_method(
            arms[args.profile], args.steps, args.out.with_suffix(f".{args.profile}.profile.txt")
        )


if __name__ == "__main__":
    main()
