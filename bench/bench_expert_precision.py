"""Benchmark: what bfloat16 expert GEMMs (``expert_precision: bf16``) change for DE and HTD.

On citeulike-t-td with a finished BPR d=200 teacher run and a d=20 student, one real batch of
1024 triples at epoch 0 (τ = 1: every expert runs densely): the KD loss and the gradients of
the student's user embeddings and of the user-side experts' second layer, fp32 vs bf16, from
identical initial states and Gumbel noise; plus the time of that loss + backward (median of
``--repeats``). Writes bench/results/expert_precision.json.

    RECPRESS_DATA=../shared/datasets python bench/bench_expert_precision.py \\
        --teacher runs/td-citeulike/teacher
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
PARAMS = {"de": {}, "htd": {"preset": "reference", "n_groups": 30, "gamma": 0.5}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=ROOT / "runs" / "td-citeulike" / "teacher")
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "expert_precision.json")
    return p.parse_args(argv)


def loss_and_grads(method, precision, split, knowledge, batch, dim, repeats):
    """KD loss, student user-embedding gradient, expert w2 gradient, median seconds."""
    from recpress.distill import make_distillers, prepare_distillers
    from recpress.models import BPRMF

    model = BPRMF(dim)
    model.build(split, torch.Generator().manual_seed(0))
    params = {method: {**PARAMS[method], "expert_precision": precision}}
    (distiller, _), = make_distillers(method, None, params)  # fmt: skip
    prepare_distillers([(distiller, 1.0)], knowledge, split, student=model, seed=0)
    bank = getattr(distiller, "user_experts", None) or distiller.user_bank
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        distiller.zero_grad(set_to_none=True)
        distiller.on_epoch_start(model, 0, torch.Generator().manual_seed(5))
        t0 = time.perf_counter()
        loss = distiller.loss(model, batch, 0)
        loss.backward()
        times.append(time.perf_counter() - t0)
    grad = model.user_emb.weight.grad
    grad = grad.to_dense() if grad.is_sparse else grad
    return float(loss.detach()), grad, bank.w2.grad.clone(), statistics.median(times)


def main(argv=None) -> None:
    args = parse_args(argv)
    from recpress.data.sampling import epoch_triples
    from recpress.distill.teachers import load_teacher
    from recpress.models.base import TripletBatch
    from recpress.runs import load_split_of

    split = load_split_of(args.teacher)
    knowledge = load_teacher(args.teacher, split)
    users, pos, neg = epoch_triples(split, torch.Generator().manual_seed(1), torch.device("cpu"))
    batch = TripletBatch(users[:1024], pos[:1024], neg[:1024])
    out: dict = {
        "benchmark": "expert_precision",
        "teacher": str(args.teacher),
        "student_dim": args.dim,
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "methods": {},
    }
    for method in PARAMS:
        ref = loss_and_grads(method, "fp32", split, knowledge, batch, args.dim, args.repeats)
        low = loss_and_grads(method, "bf16", split, knowledge, batch, args.dim, args.repeats)
        row = {
            "loss_fp32": ref[0],
            "loss_bf16": low[0],
            "loss_rel_diff": abs(low[0] - ref[0]) / abs(ref[0]),
            "student_grad_rel_err": float((low[1] - ref[1]).norm() / ref[1].norm()),
            "student_grad_cosine": float(
                torch.nn.functional.cosine_similarity(ref[1].flatten(), low[1].flatten(), dim=0)
            ),
            "expert_w2_grad_rel_err": float((low[2] - ref[2]).norm() / ref[2].norm()),
            "seconds_fp32": round(ref[3], 4),
            "seconds_bf16": round(low[3], 4),
            "speedup": round(ref[3] / low[3], 2),
        }
        out["methods"][method] = row
        print(
            f"{method}: loss rel diff {row['loss_rel_diff']:.1e}, student grad rel err "
            f"{row['student_grad_rel_err']:.1e} (cosine {row['student_grad_cosine']:.6f}), "
            f"expert grad rel err {row['expert_w2_grad_rel_err']:.1e}; loss+backward "
            f"{row['seconds_fp32']:.3f} s fp32 vs {row['seconds_bf16']:.3f} s bf16 "
            f"({row['speedup']}x)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
