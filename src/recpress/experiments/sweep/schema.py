"""Sweeps: one teacher, then students over dims × methods × seeds, one run directory each.

Layout of a sweep directory::

    sweep.yaml                      the sweep config (normalised); a different config refuses
    teacher/                        the teacher run (trained once)
    runs/<dim>/<method>/seed<k>/    one student run each (method "none" = plain student)
    report.md, report.html          written by `recpress report`

Every run is a normal run directory (`recpress.experiments.run.train_run`): a finished run is
skipped, an interrupted one resumes from its last checkpoint. Rerunning the same command after an
interruption therefore continues where it stopped.

Both model-selection variants come from one training run: students train a fixed schedule
(`students.train.selection`, default ``fixed_epochs``) evaluating validation *and* test every
``eval_every`` epochs (history.csv), so the report reads the fixed-epoch result (last evaluation)
and the validation-selected result (the evaluation with the best validation metric) from the same
history, at no extra training cost.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recpress.errors import ConfigError, RecPressError
from recpress.experiments.config import (
    DataConfig,
    DistillConfig,
    ModelConfig,
    RunConfig,
    apply_overrides,
    load_yaml,
    parse_config,
)
from recpress.experiments.rundir import is_finished, same_config, write_text
from recpress.training.config import TrainConfig

SWEEP_FILE = "sweep.yaml"
TEACHER_DIR = "teacher"
RUNS_DIR = "runs"
SELECTIONS = ("fixed_epochs", "best_valid")


def _student_train_default() -> TrainConfig:
    return TrainConfig(epochs=101, selection="fixed_epochs", eval_every=10, patience=None)


class TeacherSpec(BaseModel):
    """The teacher: trained once (seed ``train.seed``) into ``teacher/``."""

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=_student_train_default)


class ArmSpec(BaseModel):
    """A named variant of a method, e.g. ``htd-paper: {method: htd, params: {htd: {...}}}``."""

    model_config = ConfigDict(extra="forbid")

    method: str
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class StudentsSpec(BaseModel):
    """The student grid.

    ``methods`` are registered methods or compositions (``none``, ``ftd``, ``htd``, ``de``,
    ``rrd``, ``de+rrd``, ``htd+rrd``, ...) or names of ``arms``. ``weights`` / ``params`` apply
    per component method to every composition that uses it (an arm's own weights/params override
    them).
    """

    model_config = ConfigDict(extra="forbid")

    dims: list[int] = Field(default_factory=lambda: [10, 20, 100, 200])
    methods: list[str] = Field(default_factory=lambda: ["none", "ftd", "htd"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    model: str | None = Field(None, description="model name; default: the teacher's")
    init_std: float | None = Field(None, gt=0)
    train: TrainConfig = Field(default_factory=_student_train_default)
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    topn: int = Field(500, ge=1)
    arms: dict[str, ArmSpec] = Field(default_factory=dict)

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if not dims or any(d <= 0 for d in dims):
            raise ValueError("dims must be a non-empty list of positive integers")
        if len(set(dims)) != len(dims):
            raise ValueError("dims must not repeat")
        return dims

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be a non-empty list without repeats")
        return seeds

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("methods must be a non-empty list")
        out = [str(m).strip().lower() for m in methods]
        if len(set(out)) != len(out):
            raise ValueError("methods must not repeat")
        return out


class ReportSpec(BaseModel):
    """What `recpress report` shows."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "recall@50"
    selections: list[Literal["fixed_epochs", "best_valid"]] = Field(
        default_factory=lambda: ["fixed_epochs", "best_valid"]
    )
    reference: Literal["none", "td-citeulike"] = Field(
        "none", description="authors' logged numbers shown as reference columns"
    )
    curve_methods: list[str] = Field(default_factory=lambda: ["none", "ftd", "htd"])
    claims: bool = True
    latency: bool = True


class SweepConfig(BaseModel):
    """A sweep: data, a teacher, a student grid, and what the report shows."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    students: StudentsSpec = Field(default_factory=StudentsSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _known_methods(self) -> SweepConfig:
        for i, m in enumerate(self.students.methods):
            if m in self.students.arms:
                continue
            _check_method(m, f"students.methods.{i}", self.students.arms)
        for label, arm in self.students.arms.items():
            _check_method(arm.method, f"students.arms.{label}.method", {})
        _check_method_settings(self.students)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _check_method(method: str, where: str, arms: dict) -> None:
    import recpress.distill  # noqa: F401  (registers the methods)
    from recpress.distill.registry import DISTILLERS, NO_KD, parse_method

    try:
        parse_method(method)
    except ConfigError:
        known = sorted(DISTILLERS) + [NO_KD] + sorted(arms)
        raise ValueError(
            f"unknown method {method!r} at {where}; allowed: {', '.join(known)} or a "
            "composition with + (e.g. htd+rrd), or a name defined under students.arms"
        ) from None


def _check_method_settings(s: StudentsSpec) -> None:
    """Build every method's distillers (constructors only: cheap) so that a bad weight or
    parameter is reported when the config is read, not after the teacher has trained."""
    import recpress.distill  # noqa: F401  (registers the methods)
    from recpress.distill.registry import DISTILLERS, make_distillers

    for section in ("weights", "params"):
        unknown = sorted(set(getattr(s, section)) - set(DISTILLERS))
        if unknown:  # a typo would otherwise be ignored (unused methods' settings are allowed)
            raise ValueError(
                f"students.{section} names {', '.join(unknown)}, which is not a method; "
                f"methods: {', '.join(sorted(DISTILLERS))}"
            )
    for method in s.methods:
        base, weights, params = method_settings(s, method)
        where = f"students.arms.{method}" if method in s.arms else "students"
        try:
            make_distillers(base, weights, params)
        except ConfigError as err:
            field = (err.field or "distill").replace("distill", where, 1)
            raise ValueError(f"{field} (method {method!r}): {err.message}") from None


def method_settings(
    s: StudentsSpec, method: str
) -> tuple[str, dict[str, float], dict[str, dict[str, Any]]]:
    """(registered method, KD weights, KD params) of a grid method or arm: the grid's weights and
    params of its component methods, overridden by the arm's own."""
    from recpress.distill.registry import parse_method

    arm = s.arms.get(method)
    base_method = arm.method if arm else method
    names = parse_method(base_method)
    weights = _component_dict(names, s.weights)
    params = {k: dict(v) for k, v in _component_dict(names, s.params).items()}
    if arm:
        weights.update(arm.weights)
        for k, v in arm.params.items():
            params.setdefault(k, {}).update(v)
    return base_method, weights, params


def load_sweep_config(path: str | Path, assignments: list[str] | None = None) -> SweepConfig:
    """Read and validate a sweep YAML (``--set`` overrides applied); errors name the key."""
    data = apply_overrides(load_yaml(path), assignments or [])
    try:
        return parse_config(SweepConfig, data, str(path))
    except ConfigError:
        raise
    except ValueError as err:  # raised from our validators outside pydantic's wrapping
        raise ConfigError(f"invalid {path}: {err}") from None


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: the teacher (dim None) or a student (dim, method, seed)."""

    label: str
    path: Path
    config: RunConfig
    dim: int | None = None
    method: str | None = None
    seed: int | None = None

    @property
    def is_teacher(self) -> bool:
        return self.dim is None


def _component_dict(names: list[str], given: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in given.items() if k in names}


def student_run_config(cfg: SweepConfig, teacher_dir: Path, dim: int, method: str, seed: int):
    """The RunConfig of one student run."""
    from recpress.distill.registry import parse_method

    s = cfg.students
    base_method, weights, params = method_settings(s, method)
    model = ModelConfig(
        name=s.model or cfg.teacher.model.name,
        embedding_dim=dim,
        init_std=s.init_std or cfg.teacher.model.init_std,
    )
    train = s.train.model_copy(update={"seed": int(seed)})
    distill = None
    if parse_method(base_method):
        distill = DistillConfig(
            teacher=str(teacher_dir.resolve()),
            method=base_method,
            weights=weights,
            params=params,
            topn=s.topn,
        )
    return RunConfig(data=cfg.data, model=model, train=train, distill=distill)


def plan(cfg: SweepConfig, sweep_dir: str | Path) -> list[RunSpec]:
    """All runs of a sweep, teacher first, then students by dim, method, seed."""
    sweep_dir = Path(sweep_dir)
    tdir = sweep_dir / TEACHER_DIR
    teacher = RunConfig(data=cfg.data, model=cfg.teacher.model, train=cfg.teacher.train)
    runs = [RunSpec("teacher", tdir, teacher)]
    for dim in cfg.students.dims:
        for method in cfg.students.methods:
            for seed in cfg.students.seeds:
                runs.append(
                    RunSpec(
                        f"d={dim} {method} seed {seed}",
                        run_path(sweep_dir, dim, method, seed),
                        student_run_config(cfg, tdir, dim, method, seed),
                        dim,
                        method,
                        seed,
                    )
                )
    return runs


def run_path(sweep_dir: Path, dim: int, method: str, seed: int) -> Path:
    return Path(sweep_dir) / RUNS_DIR / str(dim) / method / f"seed{seed}"


def prepare_sweep_dir(cfg: SweepConfig, sweep_dir: str | Path, restart: bool = False) -> Path:
    """Create the sweep directory or check it holds this config (see `_prepare_sweep_dir`)."""
    return _prepare_sweep_dir(cfg, sweep_dir, restart)[0]


def _prepare_sweep_dir(
    cfg: SweepConfig, sweep_dir: str | Path, restart: bool = False
) -> tuple[Path, dict[str, int] | None]:
    """Create the sweep directory or check it holds this config; also the grid change, if any.

    A config that only changes the grid (dims, methods, seeds: more or fewer) or the report
    section is the same experiment: every run both grids share has the same run config, so the
    stored config is replaced and finished runs are kept (`grid_change`). Any other difference
    (data, teacher, training, KD weights or params of a shared run) raises ConfigError unless
    ``restart`` (which removes the teacher, runs and reports, then starts over).
    """
    sweep_dir = Path(sweep_dir)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir} exists and is not a directory; choose another --out")
    existing = sweep_dir / SWEEP_FILE
    text = cfg.to_yaml()
    changed = None
    stored = existing.read_text() if existing.is_file() else None
    if stored is not None and not same_config(stored, text, _normalise_sweep_yaml):
        if restart:
            for name in (TEACHER_DIR, RUNS_DIR):
                shutil.rmtree(sweep_dir / name, ignore_errors=True)
            for name in ("report.md", "report.html", "report.json"):
                (sweep_dir / name).unlink(missing_ok=True)
        else:
            changed = grid_change(stored, cfg, sweep_dir)
            if changed is None:
                raise ConfigError(
                    f"{sweep_dir} holds a sweep with a different config ({existing}); its "
                    "results would mix with this one. Use another --out, or --restart to delete "
                    "its runs and start over (a config that only adds or drops dims, methods or "
                    "seeds is accepted)"
                )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text(existing, text)
    return sweep_dir, changed


def grid_change(stored_yaml: str, cfg: SweepConfig, sweep_dir: Path) -> dict[str, int] | None:
    """How `cfg` changes the grid of the stored sweep config, or None if it is another experiment.

    Compatible means every run in both plans (the teacher included) has the same run config, so
    results cannot mix. Returns {"added": runs only in `cfg`, "dropped": runs only in the stored
    grid (their directories are kept, but no longer reported)}. A stored config that the current
    schema rejects is another experiment.
    """
    try:
        stored = parse_config(SweepConfig, yaml.safe_load(stored_yaml) or {})
    except (RecPressError, ValueError, TypeError):
        return None
    old = {(r.dim, r.method, r.seed): r.config.model_dump() for r in plan(stored, sweep_dir)}
    new = {(r.dim, r.method, r.seed): r.config.model_dump() for r in plan(cfg, sweep_dir)}
    if any(old[key] != new[key] for key in old.keys() & new.keys()):
        return None
    return {"added": len(new.keys() - old.keys()), "dropped": len(old.keys() - new.keys())}


def _normalise_sweep_yaml(text: str) -> str:
    return parse_config(SweepConfig, yaml.safe_load(text) or {}).to_yaml()


def read_sweep(sweep_dir: str | Path) -> SweepConfig:
    """The config of an existing sweep directory."""
    sweep_dir = Path(sweep_dir)
    f = sweep_dir / SWEEP_FILE
    if not f.is_file():
        raise ConfigError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}); run `sweep`")
    return load_sweep_config(f)


# ---------------------------------------------------------------------------------------------
def run_sweep(
    cfg: SweepConfig,
    sweep_dir: str | Path,
    restart: bool = False,
    progress: bool = True,
    only: list[str] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train every run of the sweep that is not finished (teacher first).

    Args:
        only: restrict to runs whose label contains one of these strings (teacher always runs).
        jobs: student runs trained at once, each in its own process with
            ``torch.get_num_threads() // jobs`` threads (at least 1). Small students use few
            threads well, so on a 2-core CPU ``jobs=2`` finishes a grid sooner; each run is
            seeded by its own config, so results do not depend on the order (only on float
            summation order, through the thread count).
    Returns a summary: runs trained, skipped, seconds per run, total wall time, and the grid
    change when the directory held the same experiment with another grid (`grid_change`).
    """
    from recpress.experiments.run import load_split_for, train_run

    if int(jobs) < 1:
        raise ConfigError(f"jobs must be a positive integer, got {jobs}", field="jobs")
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
                train_run(spec.config, spec.path, progress=False, split=split)
                finished(spec, time.perf_counter() - t0)
            else:
                todo.append(spec)
        if todo:
            _run_parallel(parallel_order(todo), int(jobs), bar, finished)
    finally:
        bar.close()
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    return summary


def expected_cost(spec: RunSpec) -> float:
    """Rough relative training time of a run: its KD methods' summed ``epoch_cost`` (1 without
    KD, as the teacher) × (1 + d/100), the growth with the width seen in the reference sweep."""
    from recpress.distill.registry import DISTILLERS, parse_method

    method = spec.config.distill.method if spec.config.distill is not None else "none"
    kd_cost = sum(DISTILLERS[name].epoch_cost for name in parse_method(method))
    return max(1.0, kd_cost) * (1.0 + spec.config.model.embedding_dim / 100)


def parallel_order(specs: list[RunSpec]) -> list[RunSpec]:
    """Student runs in the order a parallel sweep starts them: costliest first (`expected_cost`,
    ties in plan order), so that the longest runs do not start last and run alone at the end
    (longest-processing-time-first scheduling)."""
    return sorted(specs, key=expected_cost, reverse=True)


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
