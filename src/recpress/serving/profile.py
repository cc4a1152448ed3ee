"""Efficiency profile of a served model: size, FLOPs, latency, throughput, memory.

Measured on the serving path (`TopKRecommender`: product, seen items masked, exact top-K) in the
current process with the current torch thread setting (recorded in the profile):

* ``parameters``: inference-time parameters (user + item embeddings; model form: the model's
  parameters); ``training_parameters`` adds the KD auxiliaries a student trained with (from the
  run's metrics.json, if recorded).
* ``bytes``: the run's ``model.safetensors`` on disk, and the fp32 embedding (model form: fp32
  parameter) bytes in memory.
* ``flops_per_user``: 2·d·n_items (multiply-adds of one user's scores, MF dot product); model
  form (NeuMF): the matrix-product FLOPs of one user's ``score`` call, counted by torch's
  ``FlopCounterMode`` (elementwise operations are not counted).
* ``latency_ms``: p50 / p95 / p99 of single-user top-K requests (internal ids, seen masked) over
  `n_requests` random users after `warmup` requests.
* ``throughput_users_per_s``: all users, top-K, chunked; best of `repeats` passes.
* ``memory``: process peak RSS (``resource.getrusage``; includes everything loaded so far;
  on CUDA also ``torch.cuda.max_memory_allocated``) and the working set the scorer needs
  (embeddings + seen CSR + one chunk of scores).
* ``ratios``: teacher ÷ student for a student whose metrics.json names its teacher.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recpress.runs import (
    CONFIG,
    METRICS,
    PROFILE,
    WEIGHTS,
    check_run_dir,
    load_split_of,
    read_json,
    write_json,
)
from recpress.serving.artifact import Artifact
from recpress.serving.recommender import TopKRecommender
from recpress.training.memory import peak_memory


def measure_latency(
    rec: TopKRecommender, k: int = 50, n_requests: int = 200, warmup: int = 20, seed: int = 0
) -> dict[str, float]:
    """Single-user top-k latency percentiles in milliseconds (internal ids, seen masked)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, rec.n_users, size=warmup + n_requests)
    times = np.empty(n_requests)
    for i, u in enumerate(users):
        idx = torch.tensor([int(u)])
        t0 = time.perf_counter()
        rec.topk_internal(idx, k)
        if i >= warmup:
            times[i - warmup] = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "p50": round(float(np.percentile(ms, 50)), 4),
        "p95": round(float(np.percentile(ms, 95)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4),
        "mean": round(float(ms.mean()), 4),
        "requests": n_requests,
    }


def measure_throughput(rec: TopKRecommender, k: int = 50, repeats: int = 1) -> dict[str, float]:
    """All-user top-k: users per second (best of `repeats` full passes after a short warm-up)."""
    rec.topk_internal(torch.arange(min(rec.n_users, rec.chunk_users)), k)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        rec.recommend_all(k)
        best = min(best, time.perf_counter() - t0)
    return {
        "users": rec.n_users,
        "seconds": round(best, 4),
        "users_per_s": round(rec.n_users / best, 1),
    }


def model_flops_per_user(rec: TopKRecommender) -> int:
    """FLOPs of the matrix products in one single-user ``score`` call of a model-form
    recommender (torch's ``FlopCounterMode``; what a one-user request runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        rec.model.score(torch.zeros(1, dtype=torch.int64, device=rec.device))
    return int(counter.get_total_flops())


def profile_artifact(
    artifact: Artifact,
    k: int = 50,
    n_requests: int = 200,
    warmup: int = 20,
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Efficiency profile of one artifact (in memory or loaded) on the serving path."""
    rec = TopKRecommender(artifact)
    n_items, d = artifact.n_items, artifact.dim
    params = artifact.num_parameters()
    if artifact.form == "model":
        emb_bytes = int(params * 4)
        flops = model_flops_per_user(rec)
    else:
        emb_bytes = int(artifact.user_emb.numel() * 4 + artifact.item_emb.numel() * 4)
        flops = 2 * d * n_items
    seen_bytes = int(artifact.seen_indptr.nbytes + artifact.seen_indices.nbytes)
    prof: dict[str, Any] = {
        "form": artifact.form,
        "parameters": params,
        "embedding_dim": d,
        "n_users": artifact.n_users,
        "n_items": n_items,
        "flops_per_user": flops,
        "memory_bytes_fp32": emb_bytes,
        "k": k,
        "latency_ms": measure_latency(rec, k, n_requests, warmup, seed),
        "throughput": measure_throughput(rec, k, repeats),
    }
    workers = torch.get_num_threads() if rec.selector == "numba" else 1  # a buffer each
    strips = 0 if rec._item_tiles is None else int(rec._item_tiles.nbytes)  # the items again
    prof["memory"] = {
        **peak_memory(),  # peak_rss_mb, and cuda_max_allocated_mb where CUDA is in use
        "working_set_mb": round(
            (emb_bytes + seen_bytes + strips + workers * rec.chunk_users * n_items * 4) / 2**20,
            2,
        ),
    }
    prof["serving_path"] = {
        "selector": rec.selector,
        "product": rec.product,
        "users_per_block": rec.chunk_users,
    }
    prof["environment"] = {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    return prof


def _teacher_dir(run_dir: Path, metrics: dict[str, Any]) -> Path | None:
    distill = metrics.get("distill")
    cand = None
    if isinstance(distill, dict):
        cand = distill.get("teacher") or distill.get("teacher_run") or distill.get("teacher_dir")
    cand = cand or metrics.get("teacher")
    if isinstance(cand, dict):
        cand = cand.get("run_dir") or cand.get("path")
    if not isinstance(cand, str) or not cand:
        return None
    p = Path(cand)
    if not p.is_absolute() and not p.exists() and (run_dir / p).exists():
        p = run_dir / p
    return p


def _run_profile(run_dir: Path, split=None, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    art = Artifact.from_run(run_dir, split=split)
    metrics = read_json(run_dir / METRICS) if (run_dir / METRICS).is_file() else {}
    prof = profile_artifact(art, **kwargs)
    aux = int(metrics.get("aux_parameters") or 0)
    prof["aux_parameters"] = aux
    prof["training_parameters"] = int(
        metrics.get("training_parameters") or prof["parameters"] + aux
    )
    prof["bytes_on_disk"] = int((run_dir / WEIGHTS).stat().st_size)
    prof["run_dir"] = str(run_dir)
    return prof, metrics


RATIO_KEYS = {
    "parameters": lambda p: p["parameters"],
    "training_parameters": lambda p: p["training_parameters"],
    "bytes_on_disk": lambda p: p["bytes_on_disk"],
    "flops_per_user": lambda p: p["flops_per_user"],
    "latency_p50": lambda p: p["latency_ms"]["p50"],
    "latency_p99": lambda p: p["latency_ms"]["p99"],
    # throughput is inverted so every ratio reads "teacher costs X times the student"
    "seconds_all_users": lambda p: p["throughput"]["seconds"],
}


def ratios(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float]:
    """teacher ÷ student for sizes, FLOPs and times (so > 1 means the student is cheaper)."""
    out = {}
    for name, get in RATIO_KEYS.items():
        s = get(student)
        out[name] = round(get(teacher) / s, 3) if s else float("nan")
    out["throughput_speedup"] = round(
        student["throughput"]["users_per_s"] / teacher["throughput"]["users_per_s"], 3
    )
    return out


def profile_run(
    run_dir: str | Path,
    teacher: str | Path | None = None,
    write: bool = True,
    k: int = 50,
    n_requests: int = 200,
    warmup: int = 20,
    repeats: int = 1,
) -> dict[str, Any]:
    """Profile a finished run; with a teacher (given, or named in metrics.json) also ratios.

    With `write`, saves ``profile.json`` in the run directory and adds the profile under
    ``"profile"`` to its metrics.json (rewritten atomically).
    """
    from recpress.errors import ConfigError

    run_dir = check_run_dir(run_dir)
    kwargs = dict(k=k, n_requests=n_requests, warmup=warmup, repeats=repeats)
    split = load_split_of(run_dir)
    prof, metrics = _run_profile(run_dir, split=split, **kwargs)
    tdir = Path(teacher) if teacher is not None else _teacher_dir(run_dir, metrics)
    if tdir is not None:
        if not (tdir / CONFIG).is_file():
            raise ConfigError(f"teacher run {tdir} not found (named by {run_dir}/{METRICS})")
        cached = tdir / PROFILE
        tprof = read_json(cached) if cached.is_file() else None
        if tprof is None or tprof.get("k") != k or "throughput" not in tprof:
            tprof, _ = _run_profile(tdir, split=split, **kwargs)
        prof["teacher"] = {key: v for key, v in tprof.items() if key not in ("teacher", "ratios")}
        prof["ratios"] = ratios(tprof, prof)
    if write:
        write_json(run_dir / PROFILE, prof)
        if metrics:
            metrics["profile"] = {k2: v for k2, v in prof.items() if k2 != "teacher"}
            write_json(run_dir / METRICS, metrics)
    return prof
