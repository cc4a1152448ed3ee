"""Running a sweep: the teacher first, then the students (in order or in worker processes),
with progress and ETA; finished runs are skipped and interrupted ones resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recpress.errors import ConfigError, RecPressError
from recpress.experiments.config import RunConfig
from recpress.experiments.sweep.plan import (
    RunSpec,
    _prepare_sweep_dir,
    expected_cost,
    parallel_order,
    plan,
)
from recpress.experiments.sweep.schema import SweepConfig
from recpress.runs import is_finished, read_json


def run_sweep(
    cfg: SweepConfig,
    sweep_dir: str | Path,
    restart: bool = False,
    progress: bool = True,
    only: list[str] | None = None,
    jobs: int = 1,
    distributed: int = 1,
) -> dict[str, Any]:
    """Train every run of the sweep that is not finished (teacher first).

    Args:
        only: restrict to runs whose label contains one of these strings (teacher always runs).
        jobs: student runs trained at once, each in its own process with
            ``torch.get_num_threads() // jobs`` threads (at least 1). Small students use few
            threads well, so on a 2-core CPU ``jobs=2`` finishes a grid sooner; each run is
            seeded by its own config, so results do not depend on the order (only on float
            summation order, through the thread count).
        distributed: processes per run: above 1, every run (the teacher too) is trained by
            ``torchrun --nproc-per-node N -m recpress train`` (data parallel, docs/distributed.md),
            one run at a time, each process with ``torch.get_num_threads() // N`` threads.
    Returns a summary: runs trained, skipped, seconds per run, total wall time, and the grid
    change when the directory held the same experiment with another grid (`grid_change`).
    """
    from recpress.experiments.run import load_split_for, train_run

    if int(jobs) < 1:
        raise ConfigError(f"jobs must be a positive integer, got {jobs}", field="jobs")
    if int(distributed) < 1 or (int(distributed) > 1 and int(jobs) > 1):
        raise ConfigError(
            f"distributed must be a positive number of processes per run (got {distributed}), "
            "and a distributed sweep trains one run at a time: drop --jobs",
            field="distributed",
        )
    sweep_dir, changed = _prepare_sweep_dir(cfg, sweep_dir, restart=restart)
    runs = plan(cfg, sweep_dir)
    if only:
        runs = [r for r in runs if r.is_teacher or any(o in r.label for o in only)]
    split = load_split_for(runs[0].config)
    summary: dict[str, Any] = {"trained": [], "skipped": [], "seconds": {}, "grid_change": changed}
    started = time.perf_counter()
    bar = _SweepProgress(runs, enabled=progress, jobs=jobs)

    def finished(spec: RunSpec, seconds: float) -> None:
        summary["trained"].append(spec.label)
        summary["seconds"][spec.label] = round(seconds, 2)
        bar.advance(spec, seconds)

    try:
        todo = []
        for spec in runs:
            if is_finished(spec.path):
                summary["skipped"].append(spec.label)
                bar.advance(spec, None)
            elif spec.is_teacher or jobs == 1:  # the teacher first: students read it
                bar.start_run(spec.label)
                t0 = time.perf_counter()
                if distributed > 1:
                    _train_under_torchrun(spec, int(distributed))
                else:
                    train_run(spec.config, spec.path, progress=False, split=split)
                profile_once(spec.config, spec.path)
                finished(spec, time.perf_counter() - t0)
            else:
                todo.append(spec)
        if todo:
            _run_parallel(parallel_order(todo), int(jobs), bar, finished)
    finally:
        bar.close()
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _train_under_torchrun(spec: RunSpec, processes: int) -> None:
    """Train one run with ``torchrun --nproc-per-node processes -m recpress train`` (its
    config written to a temporary YAML); a failure is a RecPressError with the output's end."""
    import os
    import socket
    import subprocess
    import sys
    import tempfile

    import torch

    threads = max(1, torch.get_num_threads() // processes)
    with socket.socket() as sock:  # a free port for this run's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(spec.config.to_yaml())
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "recpress", "train",
            "--config", str(config), "--out", str(spec.path), "--no-progress",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RecPressError(
            f"sweep run {spec.label} failed under torchrun (exit {done.returncode}): {tail}"
        )


def _run_parallel(todo: list[RunSpec], jobs: int, bar: _SweepProgress, finished) -> None:
    """Train `todo` in `jobs` worker processes; the first failure stops the sweep.

    If the sweep stops early (a failed run, Ctrl-C, or SIGTERM turned into an exception by the
    CLI), the runs still training are stopped too: their workers are terminated, so nothing
    keeps writing into the sweep directory, and a rerun resumes them from their checkpoints
    (written atomically). Workers also exit by themselves if this process dies without
    cleaning up (SIGKILL): see `_worker_init`.
    """
    import multiprocessing
    import os
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    others = set(multiprocessing.active_children())
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(threads, os.getpid())) as pool:  # fmt: skip
        pending = {pool.submit(_worker_train, spec.config, str(spec.path)): spec for spec in todo}
        bar.start_run(f"{len(todo)} runs, {jobs} at a time")
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    spec = pending.pop(future)
                    error, seconds = future.result()
                    if error:
                        raise RecPressError(f"sweep run {spec.label} failed: {error}")
                    finished(spec, seconds)
        except BaseException:
            for future in pending:
                future.cancel()
            workers = [p for p in multiprocessing.active_children() if p not in others]
            for process in workers:
                process.terminate()
            for process in workers:
                process.join(timeout=30)
            raise


#: seconds between a worker's checks that the sweep process is still alive
PARENT_POLL_SECONDS = 1.0


def _worker_init(threads: int, parent_pid: int) -> None:
    """Set the worker's torch threads; exit when the sweep process `parent_pid` is gone.

    A killed parent (SIGKILL) cannot stop its workers; each then notices it has been re-parented
    within `PARENT_POLL_SECONDS` and exits, so no orphan keeps training into the sweep directory.
    """
    import os
    import threading

    import torch

    torch.set_num_threads(threads)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="recpress-parent-watch", daemon=True).start()


_WORKER_SPLITS: dict[str, Any] = {}


def _worker_train(config: RunConfig, path: str) -> tuple[str | None, float]:
    """Train one run in a worker process: (error message or None, seconds)."""
    from recpress.experiments.run import load_split_for, train_run

    t0 = time.perf_counter()
    try:
        key = config.data.model_dump_json()
        if key not in _WORKER_SPLITS:
            _WORKER_SPLITS[key] = load_split_for(config)
        train_run(config, Path(path), progress=False, split=_WORKER_SPLITS[key])
        profile_once(config, Path(path))
    except RecPressError as err:  # user-facing errors travel as text (not every one pickles)
        return str(err), time.perf_counter() - t0
    return None, time.perf_counter() - t0


class _SweepProgress:
    """Overall progress over runs with an ETA: the runs left, weighted by `expected_cost`, at
    the seconds per unit of cost of the runs trained so far, over the `jobs` running at once."""

    def __init__(self, runs: list[RunSpec], enabled: bool, jobs: int = 1) -> None:
        self.done, self.jobs = 0, max(1, int(jobs))
        self.cost_left = sum(expected_cost(r) for r in runs)
        self.trained_cost = self.trained_seconds = 0.0
        self._p = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._p = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[info]}"),
        )
        self._task = self._p.add_task("sweep", total=len(runs), eta="?", info="")
        self._p.start()

    def _eta(self) -> str:
        if not self.trained_cost:
            return "?"
        left = self.cost_left * self.trained_seconds / self.trained_cost / self.jobs
        m, s = divmod(int(left), 60)
        h, m = divmod(m, 60)
        return f"{h}:{m:02d}:{s:02d}"

    def start_run(self, label: str) -> None:
        if self._p is not None:
            self._p.update(self._task, info=f"training {label}")

    def advance(self, spec: RunSpec, seconds: float | None) -> None:
        label, cost = spec.label, expected_cost(spec)
        self.done += 1
        self.cost_left -= cost
        if seconds is not None:
            self.trained_cost += cost
            self.trained_seconds += seconds
        if self._p is not None:
            state = "skipped (finished)" if seconds is None else f"{seconds:.0f}s"
            self._p.update(
                self._task, completed=self.done, eta=self._eta(), info=f"{label}: {state}"
            )

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()


def profile_once(config: RunConfig, run_dir: Path) -> None:
    """Profile a run that just finished if its config asks for it and its metrics.json holds
    no profile yet (`recpress.serving.profile.profile_run`, 100 requests), so that each
    finished run has its profile exactly once."""
    if not config.profile or "profile" in read_json(run_dir / "metrics.json"):
        return
    from recpress.serving.profile import profile_run

    profile_run(run_dir, write=True, n_requests=100)
