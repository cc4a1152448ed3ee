"""The plan of a sweep: its runs (RunSpec), their paths and run configs, the sweep directory
(config check, grid changes) and the order a parallel sweep starts them in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from recpress.errors import ConfigError, RecPressError
from recpress.experiments.config import DistillConfig, ModelConfig, RunConfig, parse_config
from recpress.experiments.sweep.schema import (
    RUNS_DIR,
    SWEEP_FILE,
    TEACHER_DIR,
    TEACHERS_DIR,
    SweepConfig,
    load_sweep_config,
    method_settings,
    teacher_of,
)
from recpress.runs import same_config, write_text


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: the teacher (dim None) or a student (dim, method, seed)."""

    label: str
    path: Path
    config: RunConfig
    dim: int | None = None
    method: str | None = None
    seed: int | None = None
    teacher: str | None = None  # a teacher run: its name

    @property
    def is_teacher(self) -> bool:
        return self.dim is None


def teacher_path(cfg: SweepConfig, sweep_dir: str | Path, name: str) -> Path:
    """``teacher/`` for the single teacher, ``teachers/<name>/`` for each of several."""
    if cfg.teacher is not None:
        return Path(sweep_dir) / TEACHER_DIR
    return Path(sweep_dir) / TEACHERS_DIR / name


def student_run_config(cfg: SweepConfig, sweep_dir: Path, dim: int, method: str, seed: int):
    """The RunConfig of one student run (its teachers are the sweep's teacher runs)."""
    from recpress.distill.registry import parse_method

    s = cfg.students
    base_method, weights, params = method_settings(s, method)
    main = cfg.main_teacher().model
    model = ModelConfig(
        name=s.model or main.name,
        embedding_dim=dim,
        init_std=s.init_std or main.init_std,
    )
    train = s.train.model_copy(update={"seed": int(seed)})
    distill = None
    if parse_method(base_method):
        kd = {"method": base_method, "weights": weights, "params": params, "topn": s.topn}
        if cfg.teacher is not None:  # the single form: stored configs of older sweeps match
            kd["teacher"] = str(teacher_path(cfg, sweep_dir, "teacher").resolve())
        else:
            mapping = teacher_of(cfg, method)
            used = sorted({n for v in mapping.values() for n in ([v] if isinstance(v, str) else v)})
            kd["teachers"] = {n: str(teacher_path(cfg, sweep_dir, n).resolve()) for n in used}
            kd["teacher_of"] = mapping
        distill = DistillConfig(**kd)
    return RunConfig(data=cfg.data, model=model, train=train, distill=distill)


def plan(cfg: SweepConfig, sweep_dir: str | Path) -> list[RunSpec]:
    """All runs of a sweep, teachers first, then students by dim, method, seed."""
    sweep_dir = Path(sweep_dir)
    runs = []
    for name, spec in cfg.teacher_specs().items():
        config = RunConfig(data=cfg.data, model=spec.model, train=spec.train)
        label = "teacher" if cfg.teacher is not None else f"teacher {name}"
        runs.append(RunSpec(label, teacher_path(cfg, sweep_dir, name), config, teacher=name))
    for dim in cfg.students.dims:
        for method in cfg.students.methods:
            for seed in cfg.students.seeds:
                runs.append(
                    RunSpec(
                        f"d={dim} {method} seed {seed}",
                        run_path(sweep_dir, dim, method, seed),
                        student_run_config(cfg, sweep_dir, dim, method, seed),
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
            for name in (TEACHER_DIR, TEACHERS_DIR, RUNS_DIR):
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
    old = {r.label: r.config.model_dump() for r in plan(stored, sweep_dir)}
    new = {r.label: r.config.model_dump() for r in plan(cfg, sweep_dir)}
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


def expected_cost(spec: RunSpec) -> float:
    """Rough relative training time of a run: its KD methods' summed ``epoch_cost`` (1 without
    KD, as the teacher) × (1 + d/100), the growth with the width seen in the reference sweep."""
    from recpress.distill.registry import DISTILLERS, parse_method

    method = spec.config.distill.method if spec.config.distill is not None else "none"
    kd_cost = sum(DISTILLERS[name].epoch_cost for name in parse_method(method))
    dim = spec.config.model.params.get("embedding_dim") or 0  # user-row models have none
    return max(1.0, kd_cost) * (1.0 + float(dim) / 100)


def parallel_order(specs: list[RunSpec]) -> list[RunSpec]:
    """Student runs in the order a parallel sweep starts them: costliest first (`expected_cost`,
    ties in plan order), so that the longest runs do not start last and run alone at the end
    (longest-processing-time-first scheduling)."""
    return sorted(specs, key=expected_cost, reverse=True)
