"""Train one model from a `RunConfig` into a run directory (resumable)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from recpress.data.types import Split
from recpress.experiments.config import RunConfig, normalise_run_yaml
from recpress.experiments.rundir import (
    METRICS,
    SPLIT,
    prepare_run_dir,
    read_json,
    write_json,
)
from recpress.models import Recommender, make_model
from recpress.training import Trainer
from recpress.training.trainer import CHECKPOINT


def load_split_for(config: RunConfig) -> Split:
    """Load the split a config names (raises DataError / ConfigError on bad input)."""
    from recpress.data import load_split

    d = config.data
    clean: dict[str, Any] = {}
    if d.min_rating is not None:
        clean["min_rating"] = d.min_rating
    if d.kcore:
        clean.update(user_k=d.kcore, item_k=d.kcore)
    if d.interactions or d.train or d.valid or d.test:
        from recpress.data.files import load_files_split

        return load_files_split(
            interactions=d.interactions,
            train=d.train,
            valid=d.valid,
            test=d.test,
            fmt=d.format,
            columns=d.columns,
            protocol=d.protocol,
            seed=d.split_seed,
            name=d.dataset,
            **clean,
        )
    return load_split(d.dataset, protocol=d.protocol, seed=d.split_seed, path=d.path, **clean)


def build_model(config: RunConfig) -> Recommender:
    m = config.model
    return make_model(m.name, embedding_dim=m.embedding_dim, init_std=m.init_std)


def split_record(split: Split) -> dict[str, Any]:
    return {
        "dataset": split.dataset,
        "protocol": split.protocol,
        "fingerprint": split.fingerprint(),
        **split.stats(),
    }


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

    Every input is validated (data loaded, model built) before the directory is created, so a
    bad input leaves nothing behind. A finished run is not retrained; an interrupted one resumes.
    """
    split = split if split is not None else load_split_for(config)
    split.check_trainable()
    model = build_model(config)
    out = Path(out)
    distillers = list(distillers)
    knowledge = None
    if config.distill is not None:
        # validated before the run directory exists: a bad input leaves nothing behind
        from recpress.distill.registry import check_requires, make_distillers
        from recpress.distill.teachers import load_teacher

        cfg_d = config.distill
        configured = make_distillers(cfg_d.method, cfg_d.weights, cfg_d.params)
        knowledge = load_teacher(cfg_d.teacher, split)
        check_requires(configured, knowledge)
        distillers = configured + distillers
    state = prepare_run_dir(
        out, config.to_yaml(), overwrite=overwrite, normalise=normalise_run_yaml
    )
    if state == "finished":
        return read_json(out / METRICS)
    write_json(out / SPLIT, split_record(split))
    extra_metrics = dict(extra_metrics or {})
    if config.distill is not None:
        extra_metrics.update(_prepare_distillation(config, model, split, knowledge, distillers))
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
    }
    if config.distill is not None:
        aux = int(sum(d.num_aux_parameters() for d, _ in distillers))
        metrics["aux_parameters"] = aux
        metrics["training_parameters"] = model.num_parameters() + aux
    if extra_metrics:
        metrics.update(extra_metrics)
    write_json(out / METRICS, metrics)
    (out / CHECKPOINT).unlink(missing_ok=True)
    if config.profile:
        from recpress.serving.profile import profile_run

        metrics["profile"] = profile_run(out, write=True, n_requests=100)
    return metrics


def _prepare_distillation(config: RunConfig, model, split, knowledge, distillers) -> dict:
    """Precompute teacher knowledge and build auxiliary modules (timed; not epoch time)."""
    from recpress.distill.registry import describe, prepare_distillers
    from recpress.distill.teachers import teacher_info
    from recpress.training.trainer import resolve_device

    cfg_d = config.distill
    device = resolve_device(config.train.device)
    t0 = time.perf_counter()
    knowledge.to(device)
    if distillers and knowledge.teacher is not None:
        knowledge.user_topk(min(cfg_d.topn, split.n_items))  # shared cache
    prepare_distillers(distillers, knowledge, split, student=model, seed=config.train.seed)
    prepare_seconds = time.perf_counter() - t0
    info = describe(distillers)
    info["method"] = cfg_d.method
    info["topn"] = cfg_d.topn
    return {
        "distill": info,
        "teacher": teacher_info(cfg_d.teacher),
        "prepare_seconds": round(prepare_seconds, 3),
        "knowledge_lists_computed": knowledge.computed,
    }


def load_run(
    run_dir: str | Path, split: Split | None = None
) -> tuple[RunConfig, Recommender, Split]:
    """Rebuild a saved run: its config, its model with the selected weights, and its split.

    The split is checked against the fingerprint recorded in the run.
    """
    from safetensors.torch import load_file

    from recpress.errors import ConfigError
    from recpress.experiments.config import load_yaml, parse_config
    from recpress.experiments.rundir import CONFIG
    from recpress.training.trainer import WEIGHTS

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG}); pass a --out of train")
    if not (run_dir / WEIGHTS).is_file():
        raise ConfigError(f"{run_dir} has no {WEIGHTS} yet: train it first (rerun `train`)")
    config = parse_config(RunConfig, load_yaml(run_dir / CONFIG), str(run_dir / CONFIG))
    split = split if split is not None else load_split_for(config)
    record = run_dir / SPLIT
    if record.is_file():
        expected = read_json(record).get("fingerprint")
        if expected and expected != split.fingerprint():
            raise ConfigError(
                f"{run_dir} was trained on a split with fingerprint {expected}, but the data "
                f"found now has {split.fingerprint()}; point --data-path at the original data"
            )
    model = build_model(config).build(split.n_users, split.n_items)
    model.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    return config, model, split
