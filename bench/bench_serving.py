"""Benchmark: compress-and-serve targets on citeulike-t-td, teacher BPR d=200 vs a student d=20.

Side by side in one process (same torch threads, interleaved repeats, best kept):

* all-user top-50 throughput (users/s) of teacher and student, and the ratio (target >= 5x):
  every setting (selector, fan-out, chunk size) is screened over --repeats interleaved rounds and
  the best per model kept; then the two chosen settings run --head-to-head more rounds,
  alternating, and the ratio of their best times and the quartiles of the per-round (paired)
  ratios are reported;
* single-user top-50 latency p50/p95/p99 (target: student p50 < 1 ms);
* ONNX Runtime vs PyTorch CPU all-user scoring time of the student, with the parity check on
  every user (target: ONNX <= 1.5x PyTorch);
* int8 / fp16 post-training quantisation of the student: Recall@50 relative change (target int8
  drop <= 1%) and bytes;
* HTTP: `recpress serve` in a subprocess on loopback, a bounded load test (fixed concurrency,
  fixed duration) of GET /recommend (k=50), req/s, p50/p99 latency and errors; then a burst of
  bad requests (all must be 4xx) followed by good ones (all must be 200).

Without --teacher / --student it trains (or reuses) bench/work/teacher-bpr200 (100 epochs) and
bench/work/student-bpr20 (plain BPR d=20 unless --student names a KD run). Prints and writes
bench/results/serving.json.

    OMP_NUM_THREADS=2 python bench/bench_serving.py [--teacher RUN] [--student RUN] \
        [--threads 2] [--load-seconds 30] [--concurrency 8]

Smoke test (tiny): --teacher-epochs 2 --student-epochs 2 --load-seconds 3 --repeats 1 \
    --head-to-head 2
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recpress.serving.artifact import Artifact
from recpress.serving.export import (
    check_parity,
    onnx_scorer,
    quantisation_report,
    torch_scorer,
    write_onnx,
)
from recpress.serving.profile import measure_latency, measure_throughput
from recpress.serving.recommender import TopKRecommender

ROOT = Path(__file__).resolve().parents[1]
#: chunk sizes (scores per chunk) tried for the all-user throughput, best kept per model
CHUNK_ELEMENTS = (2**18, 2**19, 2**20, 2**21, 2**22, 2**23)
#: per top-k selector, the fan-outs of the levels of maxima tried (0: one pass over the row),
#: best kept per model: the torch path and the compiled kernel (recpress.serving.selection)
FANOUTS = {"torch": (0, 4, 16, 64), "numba": (8, 16)}
#: per selector, the batch products tried (see `TopKRecommender`'s ``product``)
PRODUCTS = {"torch": ("rows",), "numba": ("rows", "tiles")}


def ensure_run(out: Path, dim: int, epochs: int, dataset: str) -> Path:
    from recpress.experiments.config import RunConfig
    from recpress.experiments.run import train_run

    cfg = RunConfig.model_validate(
        {
            "data": {"dataset": dataset},
            "model": {"embedding_dim": dim},
            "train": {"epochs": epochs, "device": "cpu"},
        }
    )
    train_run(cfg, out, progress=True)
    return out


def time_scoring(score, n_users: int, batch: int, repeats: int) -> float:
    """Best wall time of scoring all users in chunks of `batch` (scores only)."""
    best = float("inf")
    score(np.arange(min(batch, n_users)))
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, n_users, batch):
            score(np.arange(s, min(s + batch, n_users)))
        best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def _products_kernels():
    """numba loops of the batch paths' block products alone (the same BLAS calls): by the whole
    item matrix ("rows") and strip by strip ("tiles")."""
    from numba import njit

    @njit(nogil=True)
    def rows(user_rows, item_t, buffer):  # pragma: no cover - compiled
        n, block = user_rows.shape[0], buffer.shape[0]
        for start in range(0, n, block):
            stop = min(start + block, n)
            np.dot(user_rows[start:stop], item_t, buffer[: stop - start])

    @njit(nogil=True)
    def tiles(user_rows, strips, buffer):  # pragma: no cover - compiled
        n, block = user_rows.shape[0], buffer.shape[1]
        for start in range(0, n, block):
            stop = min(start + block, n)
            for j in range(strips.shape[0]):
                np.dot(user_rows[start:stop], strips[j], buffer[j, : stop - start])

    return {"rows": rows, "tiles": tiles}


def single_thread_split(rec: TopKRecommender, k: int, repeats: int) -> dict:
    """The batch path on one worker at the recommender's block size and product, and its
    products alone (single-threaded BLAS, same blocks): the rest is masking + selection, whose
    cost per user does not shrink with d. Best of `repeats`."""
    from recpress.serving import selection

    user_rows, item_t = rec.user_emb.numpy(), rec.item_emb_t.numpy()
    users = np.arange(rec.n_users)
    csr = (rec._indptr_np, rec._indices_np)
    if rec.product == "tiles":
        select, matrix = selection.tiled_scored_topk, rec._item_tiles
        buffer = np.empty((matrix.shape[0], rec.chunk_users, matrix.shape[2]), np.float32)
    else:
        select, matrix = selection.scored_topk, item_t
        buffer = np.empty((rec.chunk_users, item_t.shape[1]), np.float32)
    products = _products_kernels()[rec.product]
    full = prod = float("inf")
    for _ in range(repeats + 1):  # the first round compiles and warms up
        t0 = time.perf_counter()
        select(
            user_rows, matrix, users, *csr, k, n_items=rec.n_items, threads=1,
            block_rows=rec.chunk_users,
        )  # fmt: skip
        full = min(full, time.perf_counter() - t0)
        with selection._blas_controller().limit(limits=1, user_api="blas"):
            t0 = time.perf_counter()
            products(user_rows, matrix, buffer)
            prod = min(prod, time.perf_counter() - t0)
    # the same selection on one block of rows already in cache (the product's output is not)
    rows = user_rows[: rec.chunk_users] @ item_t
    warm_rows = np.empty_like(rows)
    warm = float("inf")
    for _ in range(repeats + 1):
        np.copyto(warm_rows, rows)
        t0 = time.perf_counter()
        selection.masked_topk(
            warm_rows, users[: len(rows)], rec._indptr_np, rec._indices_np, k,
            n_items=rec.n_items, threads=1,
        )  # fmt: skip
        warm = min(warm, time.perf_counter() - t0)
    return {
        "block_users": rec.chunk_users,
        "product": rec.product,
        "selection_us_per_user_on_cached_rows": round(warm / len(rows) * 1e6, 2),
        "seconds_full": round(full, 4),
        "seconds_products": round(prod, 4),
        "seconds_selection": round(full - prod, 4),
        "selection_us_per_user": round((full - prod) / rec.n_users * 1e6, 2),
        "product_gflops": round(2 * rec.artifact.dim * rec.n_items * rec.n_users / prod / 1e9, 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load_test(base: str, users: list, seconds: float, concurrency: int, k: int) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def worker(wid: int) -> None:
            nonlocal errors
            local = np.random.default_rng(wid)
            while time.perf_counter() < stop:
                u = users[int(local.integers(len(users)))]
                t0 = time.perf_counter()
                try:
                    r = await client.get("/recommend", params={"user": str(u), "k": k})
                    ok = r.status_code == 200 and len(r.json()["items"]) == k
                except Exception:  # noqa: BLE001  any transport error counts
                    ok = False
                lat.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {
        "seconds": round(wall, 2),
        "concurrency": concurrency,
        "k": k,
        "requests": len(lat),
        "errors": int(errors),
        "requests_per_s": round(len(lat) / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
        },
    }


def bad_then_good(base: str, user) -> dict:
    import httpx

    bad = [
        ("get", {"params": {"user": str(user), "k": 0}}),
        ("get", {"params": {"user": str(user), "k": 10**9}}),
        ("get", {"params": {"user": "not-a-user", "unknown": "error"}}),
        ("get", {"params": {"k": 5}}),
        ("post", {"json": {"users": [user] * 5000}}),
        ("post", {"json": {"users": [1.5]}}),
        ("post", {"content": b"{oops", "headers": {"content-type": "application/json"}}),
    ]
    statuses = []
    with httpx.Client(base_url=base, timeout=10) as c:
        for _ in range(20):
            for method, kw in bad:
                statuses.append(getattr(c, method)("/recommend", **kw).status_code)
        good = [
            c.get("/recommend", params={"user": str(user), "k": 50}).status_code for _ in range(50)
        ]
    return {
        "bad_requests": len(statuses),
        "bad_all_4xx": all(400 <= s < 500 for s in statuses),
        "good_after": len(good),
        "good_all_200": all(s == 200 for s in good),
    }


def http_bench(artifact: Path, users: list, args) -> dict:
    port = free_port()
    cmd = [sys.executable, "-c", "from recpress.cli import main; main()", "serve", str(artifact),
           "--port", str(port), "--threads", "1", "--workers", str(args.workers)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)
        result = asyncio.run(load_test(base, users, args.load_seconds, args.concurrency, 50))
        result["robustness"] = bad_then_good(base, users[0])
    finally:
        proc.terminate()
        proc.wait(10)
    result["command"] = " ".join(["recpress"] + cmd[3:])
    result["server_workers"] = args.workers
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--dataset", default="citeulike-t-td")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work")
    ap.add_argument("--teacher-epochs", type=int, default=100)
    ap.add_argument("--student-epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the timings")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--head-to-head",
        type=int,
        default=15,
        help="rounds of the chosen teacher and student settings, alternating (paired ratios)",
    )
    ap.add_argument("--requests", type=int, default=500, help="single-user requests timed")
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers of the HTTP test")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument(
        "--selectors",
        default="numba,torch",
        help="top-k selectors tried for the throughput (best kept per model)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = ap.parse_args()

    os.environ.setdefault("RECPRESS_DATA", str(ROOT.parent / "shared" / "datasets"))
    teacher_dir = args.teacher or ensure_run(
        args.work / f"teacher-bpr200-e{args.teacher_epochs}", 200, args.teacher_epochs, args.dataset
    )
    student_dir = args.student or ensure_run(
        args.work / f"student-bpr20-e{args.student_epochs}", 20, args.student_epochs, args.dataset
    )
    torch.set_num_threads(args.threads)
    from recpress.runs import load_split_of

    split = load_split_of(student_dir)
    teacher = Artifact.from_run(teacher_dir, split=split)
    student = Artifact.from_run(student_dir, split=split)
    recs = {"teacher": TopKRecommender(teacher), "student": TopKRecommender(student)}
    out: dict = {
        "dataset": args.dataset,
        "teacher_run": str(teacher_dir),
        "student_run": str(student_dir),
        "student_distill": student.manifest.get("metrics", {}).get("distill"),
        "users": split.n_users,
        "items": split.n_items,
        "environment": {
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            # how OpenMP threads wait between regions: it moved the student's time up to 3x while
            # torch's and numba's runtimes alternated per chunk (before the one-pool batch path)
            "openmp_env": {
                v: os.environ.get(v)
                for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")
            },
        },
    }

    # 1. throughput and latency, interleaved so both see the same machine load; each model gets
    #    its best chunk size (scores per chunk) so neither is handicapped by a cache setting
    thr: dict[str, list] = {"teacher": [], "student": []}
    arts = {"teacher": teacher, "student": student}
    settings = [
        (sel, f, prod)
        for sel in args.selectors.split(",")
        for f in FANOUTS[sel]
        for prod in PRODUCTS[sel]
    ]
    for _ in range(args.repeats):
        for selector, fanout, product in settings:
            trial = {
                name: TopKRecommender(art, fanout=fanout, selector=selector, product=product)
                for name, art in arts.items()
            }
            for chunk in CHUNK_ELEMENTS:
                for name, rec in trial.items():
                    rec.chunk_users = max(1, chunk // rec.n_items)
                    r = measure_throughput(rec, k=50, repeats=1)
                    setting = {"chunk_users": rec.chunk_users, "fanout": fanout, "product": product}
                    thr[name].append({**r, **setting, "selector": selector})
    for name in recs:
        best_run = max(thr[name], key=lambda r: r["users_per_s"])
        recs[name] = TopKRecommender(
            arts[name],
            fanout=best_run["fanout"],
            selector=best_run["selector"],
            product=best_run["product"],
        )
        recs[name].chunk_users = best_run["chunk_users"]
    # head to head: the two chosen settings alone, alternating (which model goes first too), so
    # each round's teacher/student ratio is paired in time; the screening above is best-of-few
    h2h: dict[str, list[float]] = {"teacher": [], "student": []}
    for i in range(args.head_to_head):
        for name in ("teacher", "student") if i % 2 == 0 else ("student", "teacher"):
            h2h[name].append(measure_throughput(recs[name], k=50, repeats=1)["seconds"])
    lat = {name: measure_latency(rec, k=50, n_requests=args.requests) for name, rec in recs.items()}
    # where the time goes on one worker: products vs masking + selection (compiled path only)
    if all(rec.selector == "numba" for rec in recs.values()):
        split_1t = {name: single_thread_split(rec, 50, args.repeats) for name, rec in recs.items()}
        p_t, p_s = (split_1t[n]["seconds_products"] for n in ("teacher", "student"))
        out["single_thread_split"] = {
            **split_1t,
            # with the same selection cost s per call on both sides, (p_t + s) / (p_s + s) >= 5
            # needs s <= (p_t - 5 p_s) / 4; and the ratio if selection were free
            "ratio_if_selection_free": round(p_t / p_s, 2),
            "selection_us_per_user_allowed_for_5x": round(
                (p_t - 5 * p_s) / 4 / student.n_users * 1e6, 2
            ),
        }
    out["models"] = {}
    for name, art in (("teacher", teacher), ("student", student)):
        best = max(thr[name], key=lambda r: r["users_per_s"])
        out["models"][name] = {
            "dim": art.dim,
            "parameters": art.num_parameters(),
            "flops_per_user": 2 * art.dim * art.n_items,
            "recall@50": art.manifest.get("metrics", {}).get("test", {}).get("recall@50"),
            "all_user_top50": best,
            "all_user_top50_runs": thr[name],
            "single_user_top50_latency_ms": lat[name],
        }
    speedup = (
        out["models"]["student"]["all_user_top50"]["users_per_s"]
        / out["models"]["teacher"]["all_user_top50"]["users_per_s"]
    )
    out["throughput_speedup"] = round(speedup, 2)
    try:  # the layer numba picked for the parallel kernel (known once it has run)
        import numba

        out["environment"]["numba_threading_layer"] = numba.threading_layer()
    except (ImportError, ValueError):
        out["environment"]["numba_threading_layer"] = None
    if args.head_to_head:
        paired = sorted(t / s for t, s in zip(h2h["teacher"], h2h["student"], strict=True))
        q = np.quantile(paired, [0.25, 0.5, 0.75])
        out["head_to_head"] = {
            "rounds": args.head_to_head,
            "seconds": h2h,
            "best_seconds": {name: min(v) for name, v in h2h.items()},
            "median_seconds": {name: float(np.median(v)) for name, v in h2h.items()},
            "ratio_of_best": round(min(h2h["teacher"]) / min(h2h["student"]), 2),
            "paired_ratio_quartiles": [round(float(x), 2) for x in q],
            "rounds_ratio_at_least_5": sum(r >= 5.0 for r in paired),
        }
    # the same ratio within each selector, and how much the compiled kernel gains over torch
    by_sel: dict = {}
    for sel in {r["selector"] for r in thr["student"]}:
        best_ups = {
            name: max(r["users_per_s"] for r in thr[name] if r["selector"] == sel) for name in thr
        }
        by_sel[sel] = {**best_ups, "speedup": round(best_ups["student"] / best_ups["teacher"], 2)}
    out["throughput_by_selector"] = by_sel
    # and within each product of the compiled selector (rows: the path before item strips)
    by_product: dict = {}
    for prod in {r["product"] for r in thr["student"] if r["selector"] == "numba"}:
        best_ups = {
            name: max(
                r["users_per_s"]
                for r in thr[name]
                if r["selector"] == "numba" and r["product"] == prod
            )
            for name in thr
        }
        ratio = round(best_ups["student"] / best_ups["teacher"], 2)
        by_product[prod] = {**best_ups, "speedup": ratio}
    out["throughput_by_product"] = by_product

    # 2. ONNX Runtime vs PyTorch, student, all users (scores), with parity
    with tempfile.TemporaryDirectory() as tmp:
        path = write_onnx(student.user_emb, student.item_emb, Path(tmp) / "s.onnx")
        ort_fn = onnx_scorer(path, threads=args.threads)
        pt_fn = torch_scorer(student.user_emb, student.item_emb)
        batch = max(1, 2**22 // student.n_items)
        t_pt = time_scoring(pt_fn, student.n_users, batch, args.repeats)
        t_ort = time_scoring(ort_fn, student.n_users, batch, args.repeats)
        parity = check_parity(pt_fn, ort_fn, student, k=50)
    out["onnx"] = {
        "seconds_pytorch": round(t_pt, 4),
        "seconds_onnxruntime": round(t_ort, 4),
        "ratio_onnx_over_pytorch": round(t_ort / t_pt, 3),
        "parity": parity,
    }

    # 3. quantisation of the student (same evaluate() code as training)
    out["quantisation"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q in ("none", "fp16", "int8"):
            saved = student.save(Path(tmp) / q, quantisation=q)
            files = json.loads((saved / "manifest.json").read_text())["files"]
            entry = {
                "weights_bytes": files["weights.safetensors"]["bytes"],
                "artifact_bytes": sum(f["bytes"] for f in files.values()),
            }
            if q != "none":
                rep = quantisation_report(student, split, q, ks=(10, 20, 50))
                entry.update(
                    recall50_fp32=rep["fp32"]["recall@50"],
                    recall50=rep["quantised"]["recall@50"],
                    recall50_relative_change=rep["relative_change"]["recall@50"],
                    ndcg50_relative_change=rep["relative_change"]["ndcg@50"],
                )
            out["quantisation"][q] = entry
        if not args.no_http:
            art_path = student.save(Path(tmp) / "serve", quantisation="none")
            users = student.user_ids.tolist()
            out["http"] = http_bench(art_path, users, args)

    s_lat = out["models"]["student"]["single_user_top50_latency_ms"]["p50"]
    int8 = out["quantisation"]["int8"]["recall50_relative_change"]
    out["targets"] = {
        "throughput_speedup>=5": speedup >= 5,
        "head_to_head_ratio_of_best>=5": bool(
            out.get("head_to_head", {}).get("ratio_of_best", 0) >= 5
        ),
        "head_to_head_median_paired_ratio>=5": bool(
            out.get("head_to_head", {}).get("paired_ratio_quartiles", [0, 0, 0])[1] >= 5
        ),
        "student_p50_latency<1ms": s_lat < 1.0,
        "onnx<=1.5x_pytorch_and_parity": out["onnx"]["ratio_onnx_over_pytorch"] <= 1.5
        and parity["ok"],
        "int8_recall50_drop<=1%": int8 >= -0.01,
    }
    if "http" in out:
        h = out["http"]
        out["targets"]["http_zero_errors"] = h["errors"] == 0 and h["robustness"]["bad_all_4xx"]
        out["targets"]["http_keeps_serving"] = h["robustness"]["good_all_200"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
