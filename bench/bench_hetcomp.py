"""Benchmark: seconds per training epoch of HetComp next to the no-KD student.

citeulike-t-td, students BPR-MF d=20, batch ``--batch`` (1024: the TD setting, 113 batches per
epoch). Three arms train ``--steps`` batches per round in one process, interleaved round by
round (median over ``--rounds``): the no-KD student, HetComp in phase 1 (overall loss) and
HetComp in phase 2 (rank loss). The DKC call (the student's top-50 for every user, the
agreement with every teacher checkpoint, new targets) is timed separately and amortised over
its period p. The loop is the trainer's (base loss + λ·KD loss, backward, optimiser step).

The teacher's trajectories are read from the run directory when it has them; otherwise C = 3
stand-in lists are made from the final teacher (its top-K, rotated per checkpoint): the cost
does not depend on what the lists hold. ``--teachers N`` gives HetComp N such teachers (the
batch loss does not depend on N; the DKC call is linear in N·C). Writes
bench/results/hetcomp_speed.json.

    RECPRESS_DATA=../shared/datasets python bench/bench_hetcomp.py \\
        --teacher runs/td-citeulike/teacher [--teachers 5] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=ROOT / "runs" / "td-citeulike" / "teacher")
    p.add_argument("--teachers", type=int, default=1, help="HetComp teachers (copies)")
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--K", type=int, default=100)
    p.add_argument("--steps", type=int, default=8, help="batches timed per arm and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--optimizer", default="lazy", choices=["reference", "lazy"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of phase 1")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hetcomp_speed.json")
    return p.parse_args(argv)


def teacher_knowledge(path: Path, split, n: int, k: int, device) -> list:
    """`n` Knowledge objects of the teacher run, each with trajectories (stand-ins if none)."""
    from recpress.distill.teachers import load_teacher
    from recpress.errors import ConfigError

    base = load_teacher(path, split)
    try:
        traj = base.trajectories()
    except (ConfigError, ImportError):  # no trajectories (or no reader yet)
        final = base.user_topk(k).clone()
        lists = torch.stack([torch.roll(final, 7 * c, dims=1) for c in (2, 1, 0)])
        traj = SimpleNamespace(epochs=[50, 100, 150], lists=lists, fingerprint=None)
    out = []
    for x in range(n):
        kn = load_teacher(path, split) if x else base
        lists = traj.lists if x == 0 else torch.roll(traj.lists, x, dims=2)
        kn.attach_trajectories(SimpleNamespace(epochs=traj.epochs, lists=lists, fingerprint=None))
        out.append(kn.to(device))
    return out


class Arm:
    """A student (+ HetComp in a fixed phase, or nothing) that trains a few batches."""

    def __init__(self, split, teachers, phase: int | None, args, device) -> None:
        from recpress.distill.hetcomp import HetComp
        from recpress.distill.registry import prepare_distillers
        from recpress.models import BPRMF
        from recpress.training.optim import make_optimizer

        self.generator = torch.Generator().manual_seed(0)
        self.model = BPRMF(args.dim).build(split, self.generator).to(device)
        self.distillers = []
        if phase is not None:
            d = HetComp(K=args.K)
            prepare_distillers([(d, 0.005)], [teachers], split, student=self.model)
            d.to(device)
            d.phase.fill_(phase)
            self.distillers = [(d, 0.005)]
        params = list(self.model.parameters())
        self.optimizer = make_optimizer(args.optimizer, params, 1e-3, 1e-3)
        self.split, self.device, self.batch = split, device, args.batch

    def seconds_per_batch(self, steps: int) -> float:
        from recpress.data.sampling import epoch_triples
        from recpress.models.base import TripletBatch

        users, pos, neg = epoch_triples(self.split, self.generator, self.device)
        b = self.batch
        sync(self.device)
        t0 = time.perf_counter()
        for s in range(0, steps * b, b):
            batch = TripletBatch(users[s : s + b], pos[s : s + b], neg[s : s + b])
            loss = self.model.loss(batch).sum()
            for d, weight in self.distillers:
                loss = loss + weight * d.loss(self.model, batch, 1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync(self.device)
        return (time.perf_counter() - t0) / steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dkc_seconds(arm: Arm, rounds: int) -> float:
    """Median seconds of one DKC call (a later call: the update rule and new targets)."""
    d = arm.distillers[0][0]
    d.started.fill_(True)
    times = []
    for _ in range(rounds):
        d.v.zero_()
        sync(arm.device)
        t0 = time.perf_counter()
        d.on_epoch_start(arm.model, 2 * d.p, arm.generator)
        sync(arm.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    args = parse_args(argv)
    from recpress.runs import load_split_of
    from recpress.training.trainer import resolve_device

    device = resolve_device(args.device)
    split = load_split_of(args.teacher)
    teachers = teacher_knowledge(args.teacher, split, args.teachers, args.K, device)
    batches = -(-int(split.train.nnz) // args.batch)
    arms = {
        "none": Arm(split, teachers, None, args, device),
        "hetcomp_phase1": Arm(split, teachers, 1, args, device),
        "hetcomp_phase2": Arm(split, teachers, 2, args, device),
    }
    for arm in arms.values():
        arm.seconds_per_batch(2)  # warm-up
    times: dict[str, list[float]] = {m: [] for m in arms}
    for r in range(args.rounds):
        for m, arm in arms.items():
            times[m].append(arm.seconds_per_batch(args.steps))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    het = arms["hetcomp_phase1"].distillers[0][0]
    dkc = dkc_seconds(arms["hetcomp_phase1"], args.rounds)
    rows = {m: round(statistics.median(t) * batches, 3) for m, t in times.items()}
    base = rows["none"]
    out = {
        "benchmark": "hetcomp_speed",
        "dataset": "citeulike-t-td",
        "teacher": str(args.teacher),
        "teachers": args.teachers,
        "checkpoints": int(het.n_ckpt.max()),
        "K": args.K,
        "student_dim": args.dim,
        "batch_size": args.batch,
        "batches_per_epoch": batches,
        "optimizer": args.optimizer,
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
        "x_none": {m: round(v / base, 2) for m, v in rows.items()},
        "dkc_call_seconds": round(dkc, 3),
        "dkc_seconds_per_epoch_amortised": round(dkc / het.p, 3),
        "raw_seconds_per_batch": times,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("seconds_per_epoch", "x_none", "dkc_call_seconds")}))
    print(f"wrote {args.out}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            arms["hetcomp_phase1"].seconds_per_batch(args.steps)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        args.out.with_suffix(".profile.txt").write_text(table + "\n")
        print(table)


if __name__ == "__main__":
    main()
