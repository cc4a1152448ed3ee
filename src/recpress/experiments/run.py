"""Train one model from a `RunConfig` into a run directory (resumable)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from recpress.data.config import DataConfig
from recpress.data.config import load_split_for as load_data_split
from recpress.data.types import Split
from recpress.distill.knowledge import Knowledge
from recpress.distill.registry import (
    check_requires,
    check_student,
    describe,
    make_distillers,
    prepare_distillers,
)
from recpress.distill.teachers import load_teacher, teacher_info
from recpress.errors import ConfigError
from recpress.experiments.config import RunConfig, normalise_run_yaml
from recpress.models import make_model
from recpress.runs import (
    CHECKPOINT,
    METRICS,
    SPLIT,
    prepare_run_dir,
    read_json,
    split_record,
    write_json,
)
from recpress.training import Trainer, distributed
from recpress.training.memory import peak_memory
from recpress.training.trainer import resolve_device


def load_split_for(config: RunConfig | DataConfig) -> Split:
    """Load the split a run config (or its data section) names (DataError / ConfigError)."""
    return load_data_split(config.data if isinstance(config, RunConfig) else config)


def load_teachers(config: RunConfig, split: Split) -> dict[str, Knowledge]:
    """Each teacher of the distill section loaded once: name -> its Knowledge for `split`."""
    assert config.distill is not None
    teachers = config.distill.teachers.items()
    return {name: load_teacher(path, split, name=name) for name, path in teachers}


def _bind_teachers(config: RunConfig, distillers, knowledge: dict[str, Knowledge]) -> list:
    """The Knowledge of each configured distiller's own teacher, in distiller order (a list of
    Knowledge for a multi-teacher distiller)."""
    cfg_d = config.distill
    terms = [d.name for d, _ in distillers]
    unused = sorted(set(cfg_d.teacher_of) - set(terms))
    if unused:
        raise ConfigError(
            f"distill.teacher_of names {', '.join(unused)}, which method {cfg_d.method!r} does "
            f"not use; its terms: {', '.join(terms) or '(none)'}",
            field="distill.teacher_of",
        )
    out: list = []
    for d, _ in distillers:
        if d.multi_teacher:
            out.append([knowledge[name] for name in cfg_d.teachers_for(d.name)])
        else:
            out.append(knowledge[cfg_d.teacher_for(d.name)])
    return out


def _teachers_of(config: RunConfig, distiller) -> str | list[str]:
    """The teacher name(s) a configured distiller learns from, for metrics.json."""
    if distiller.multi_teacher:
        return config.distill.teachers_for(distiller.name)
    return config.distill.teacher_for(distiller.name)


def train_run(
    config: RunConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    split: Split | None = None,
    distillers=(),
    extra_metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the model of `config` into run directory `out` and return its metrics.

    Every input is validated (data loaded, model built, teachers loaded and checked against
    the methods that use them) before the directory is created, so a bad input leaves nothing
    behind. A finished run is not retrained; an interrupted one resumes. The efficiency
    profile (``config.profile``) is the caller's: `recpress.serving.profile.profile_run`.
    """
    split = split if split is not None else load_split_for(config)
    split.check_trainable()
    # unbuilt: the Trainer builds it from its seeded generator
    model = make_model(config.model.name, **config.model.params)
    out = Path(out)
    distillers = list(distillers)
    teachers: dict[str, Knowledge] = {}
    bound: list[Knowledge] = []
    n_configured = 0
    if config.distill is not None:
        # validated before the run directory exists: a bad input leaves nothing behind
        cfg_d = config.distill
        configured = make_distillers(cfg_d.method, cfg_d.weights, cfg_d.params)
        teachers = load_teachers(config, split)
        bound = _bind_teachers(config, configured, teachers)
        for (d, w), k in zip(configured, bound, strict=True):
            check_requires([(d, w)], k)
            d.check_teachers(k)  # e.g. HetComp: every teacher has trajectories
        # extra distillers (given by code) learn from the first teacher
        bound += [next(iter(teachers.values()))] * len(distillers)
        n_configured = len(configured)
        distillers = configured + distillers
        check_student(distillers, model)  # representation methods need student embeddings
    # under torchrun only rank 0 writes the run directory; the others wait for it
    rank = distributed.setup(config.train.device)
    state = distributed.on_main(
        lambda: prepare_run_dir(
            out, config.to_yaml(), overwrite=overwrite, normalise=normalise_run_yaml
        )
    )
    if state == "finished":
        return read_json(out / METRICS)
    if rank.is_main:
        write_json(out / SPLIT, split_record(split))
    extra_metrics = dict(extra_metrics or {})
    if config.distill is not None:
        if not rank.is_main:  # rank 0 first: the others then read its cached teacher lists
            distributed.barrier()
        extra_metrics.update(
            _prepare_distillation(config, model, split, teachers, bound, distillers, n_configured)
        )
        if rank.enabled and rank.is_main:
            distributed.barrier()
    started = time.perf_counter()
    result = Trainer(config.train).fit(
        model, split, distillers=distillers, run_dir=out, progress=progress
    )
    metrics: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "selection": config.train.selection,
        "selection_metric": config.train.selection_metric,
        "valid": result.valid,
        "test": result.test,
        "seconds_per_epoch": round(result.seconds_per_epoch, 4),
        "wall_seconds_this_session": round(time.perf_counter() - started, 2),
        "parameters": model.num_parameters(),
        "split": split_record(split),
        "device": str(next(model.parameters()).device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "memory": peak_memory(),
    }
    if rank.enabled:  # absent from single-process runs, as before
        metrics["processes"] = rank.world
        metrics["backend"] = rank.backend
    if config.distill is not None:
        aux = int(sum(d.num_aux_parameters() for d, _ in distillers))
        metrics["aux_parameters"] = aux
        metrics["training_parameters"] = model.num_parameters() + aux
    if extra_metrics:
        metrics.update(extra_metrics)
    if rank.is_main:
        write_json(out / METRICS, metrics)
        (out / CHECKPOINT).unlink(missing_ok=True)
    distributed.barrier()  # every rank returns once the run is marked finished
    return metrics


def _prepare_distillation(
    config: RunConfig,
    model,
    split,
    teachers: dict[str, Knowledge],
    bound: list[Knowledge],
    distillers,
    n_configured: int,
) -> dict:
    """Precompute each teacher's knowledge and build auxiliary modules (timed; not epoch time)."""
    cfg_d = config.distill
    device = resolve_device(config.train.device)
    t0 = time.perf_counter()
    used = {id(k) for b in bound for k in (b if isinstance(b, list) else [b])}
    for knowledge in teachers.values():
        knowledge.to(device)
        if id(knowledge) in used and knowledge.teacher is not None:
            knowledge.user_topk(min(cfg_d.topn, split.n_items))  # shared cache
    prepare_distillers(distillers, bound, split, student=model, seed=config.train.seed)
    prepare_seconds = time.perf_counter() - t0
    info = describe(distillers)
    info["method"] = cfg_d.method
    info["topn"] = cfg_d.topn
    out: dict[str, Any] = {"distill": info}
    if cfg_d.teacher is not None:  # one teacher: the record of every earlier version
        out["teacher"] = teacher_info(cfg_d.teacher)
    else:
        info["teacher_of"] = {d.name: _teachers_of(config, d) for d, _ in distillers[:n_configured]}
        out["teachers"] = {name: teacher_info(path) for name, path in cfg_d.teachers.items()}
    out["prepare_seconds"] = round(prepare_seconds, 3)
    out["knowledge_lists_computed"] = int(sum(k.computed for k in teachers.values()))
    return out
