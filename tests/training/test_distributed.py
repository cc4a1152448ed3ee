"""Data-parallel training with 2 gloo processes on loopback (the torchrun environment, spawned).

Each worker is one rank: it trains BPR-MF on a generated clustered split through the same
`Trainer.fit` as one process, with ``RANK``/``WORLD_SIZE``/... set as torchrun sets them. The
test then checks what the ranks report: only rank 0 wrote the run directory, both ranks hold
the same weights, the distributed evaluation equals a one-process evaluation of those weights,
an interrupted run resumes to the uninterrupted result, and the 2-process run lands at the
1-process accuracy.
"""

from __future__ import annotations

import json
import os
import socket
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from recpress.evaluation import evaluate
from recpress.models import BPRMF
from recpress.training import TrainConfig, Trainer
from tests.models.clustered import clustered_split

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)

WORLD = 2
KS = [10, 20]


def _split():
    return clustered_split(n_users=240, n_items=300, groups=3, per_user=10, seed=1)


def _config(**kw) -> TrainConfig:
    base = dict(
        epochs=3,
        lr=0.02,
        weight_decay=0.0,
        batch_size=128,  # the global batch: 64 per rank
        eval_every=1,
        patience=None,
        ks=KS,
        selection_metric="recall@20",
        seed=5,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _step_gradient_error(
    rank: int, split, reduction: str, make_model=lambda: BPRMF(4), dtype=torch.float32
) -> float:
    """Largest relative difference between the gradient the distributed step applies for one global
    batch of 64 (each rank backpropagating its half) and the one-process gradient of the whole
    batch. BPR-MF has row-sparse tables only; NeuMF adds dense MLP layers (DDP's part), in
    float64 so that the summation order of its cancelling terms stays below the tolerance."""
    from recpress.data.sampling import epoch_triples
    from recpress.models.base import TripletBatch
    from recpress.training import TrainingObjective, distributed
    from recpress.training.trainer import _wrap_distributed

    users, pos, neg = epoch_triples(split, torch.Generator().manual_seed(9))
    half = slice(32 * rank, 32 * (rank + 1))
    model = make_model().build(split, generator=torch.Generator().manual_seed(0)).to(dtype)
    step = _wrap_distributed(
        TrainingObjective(model, reduction=reduction), distributed.info(), torch.device("cpu"),
        reduction,
    )  # fmt: skip
    step(TripletBatch(users[half], pos[half], neg[half]), 0).backward()
    step.sync_gradients()
    ref = make_model().build(split, generator=torch.Generator().manual_seed(0)).to(dtype)
    TrainingObjective(ref, reduction=reduction)(
        TripletBatch(users[:64], pos[:64], neg[:64]), 0
    ).backward()
    return max(  # relative to the gradient's size: a summed loss has large entries
        float((p.grad.to_dense() - q.grad.to_dense()).abs().max())
        / max(1.0, float(q.grad.to_dense().abs().max()))
        for p, q in zip(model.parameters(), ref.parameters(), strict=True)
    )


def _rank_sparse_grads(rank: int) -> list[torch.Tensor | None]:
    """Rank `rank`'s gradients of four tables: (10, 3) with repeated rows; (6, 2, 2); (5, 4)
    without a gradient anywhere; (7, 3) with a gradient on rank 0 only."""
    g = torch.Generator().manual_seed(100 + rank)

    def rows(n_rows: int, shape: tuple[int, ...], k: int) -> torch.Tensor:
        ids = torch.randint(n_rows, (k,), generator=g)
        values = torch.randn(k, *shape[1:], generator=g)
        return torch.sparse_coo_tensor(ids.unsqueeze(0), values, shape)

    return [
        rows(10, (10, 3), 8 + rank),
        rows(6, (6, 2, 2), 3),
        None,
        rows(7, (7, 3), 4) if rank == 0 else None,
    ]


def _sparse_exchange_errors(rank: int) -> list[float | None]:
    """`sum_sparse_grads(scale=0.5)` against 0.5 x the dense sum of every rank's gradient
    (the other rank's regenerated from its seed); None where no rank has a gradient."""
    from recpress.training import distributed

    shapes = [(10, 3), (6, 2, 2), (5, 4), (7, 3)]
    params = [torch.zeros(shape, requires_grad=True) for shape in shapes]
    for p, grad in zip(params, _rank_sparse_grads(rank), strict=True):
        p.grad = grad
    distributed.sum_sparse_grads(params, scale=0.5)
    errors: list[float | None] = []
    for i, p in enumerate(params):
        parts = [_rank_sparse_grads(r)[i] for r in range(WORLD)]
        present = [part.to_dense() for part in parts if part is not None]
        if not present:
            errors.append(None if p.grad is None else float("inf"))
            continue
        expected = 0.5 * sum(present)
        assert p.grad.is_sparse and p.grad.is_coalesced()
        errors.append(float((p.grad.to_dense() - expected).abs().max()))
    return errors


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: a 3-epoch run, and a run interrupted after 2 epochs then resumed."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    import recpress.training.trainer as trainer_module
    from recpress.training import distributed

    writes: list[str] = []
    real_write = trainer_module.atomic_write_bytes

    def counting_write(path, fn):
        writes.append(Path(path).name)
        return real_write(path, fn)

    trainer_module.atomic_write_bytes = counting_write
    root = Path(out)
    split = _split()
    distributed.setup("cpu")
    from recpress.models import NeuMF

    gradient_errors = {r: _step_gradient_error(rank, split, r) for r in ("sum", "mean")}
    neumf = partial(NeuMF, 4, layers=2, init_std=0.1)
    gradient_errors |= {
        f"neumf-{r}": _step_gradient_error(rank, split, r, neumf, torch.float64)
        for r in ("sum", "mean")
    }
    sparse_errors = _sparse_exchange_errors(rank)
    model = BPRMF(8)
    result = Trainer(_config()).fit(model, split, run_dir=root / "run", progress=False)
    sharded = distributed.evaluate(model, split, ks=KS, phase="test", per_user=True)
    resumed = BPRMF(8)
    Trainer(_config(epochs=2)).fit(resumed, split, run_dir=root / "resumed", progress=False)
    Trainer(_config()).fit(resumed, split, run_dir=root / "resumed", progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / f"w{rank}.st")
    save_file({k: v.contiguous() for k, v in resumed.state_dict().items()}, root / f"r{rank}.st")
    report = {
        "writes": writes,
        "test": result.test,
        "losses": [row["loss"] for row in result.history],
        "sharded": sharded.metrics,
        "sharded_users": sharded.users.tolist(),
        "gradient_errors": gradient_errors,
        "sparse_errors": sparse_errors,
    }
    (root / f"rank{rank}.json").write_text(json.dumps(report))
    distributed.barrier()  # no rank leaves the group while the other still talks to it
    distributed.teardown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_only_rank_0_writes_the_run_directory(ranks):
    out, reports = ranks
    assert {"model.safetensors", "history.csv", "checkpoint.pt"} <= set(reports[0]["writes"])
    assert reports[1]["writes"] == []
    assert (out / "run" / "model.safetensors").is_file()


def test_one_step_applies_the_global_batch_gradient(ranks):
    """Summed loss: the ranks' gradients are summed; mean: averaged (= the global mean)."""
    _, reports = ranks
    for report in reports:
        for reduction, error in report["gradient_errors"].items():
            assert error < 1e-6, (reduction, error)


def test_the_sparse_exchange_sums_every_table_over_the_ranks(ranks):
    """Repeated rows, a 3-d table, a table without gradients and one with a gradient on one
    rank only: each rank ends with the scaled sum; no gradient stays no gradient."""
    _, reports = ranks
    for report in reports:
        errors = report["sparse_errors"]
        assert errors[2] is None
        assert max(e for e in errors if e is not None) < 1e-6, errors


def test_ranks_end_with_the_same_weights_and_losses(ranks):
    out, reports = ranks
    w0, w1 = load_file(str(out / "w0.st")), load_file(str(out / "w1.st"))
    for name, value in w0.items():
        torch.testing.assert_close(w1[name], value, rtol=0, atol=1e-6)
    assert reports[0]["losses"] == pytest.approx(reports[1]["losses"], rel=1e-6)
    assert reports[0]["test"] == pytest.approx(reports[1]["test"], abs=1e-12)


def test_distributed_evaluation_equals_one_process(ranks):
    out, reports = ranks
    split = _split()
    model = BPRMF(8).build(split)
    model.load_state_dict(load_file(str(out / "w0.st")))
    single = evaluate(model, split, ks=KS, phase="test")
    for report in reports:
        assert report["sharded_users"] == single.users.tolist()
        for name, value in single.metrics.items():
            assert report["sharded"][name] == pytest.approx(value, rel=1e-9, abs=1e-12)
    # the selected weights (saved by rank 0) are the ones the reported test metrics come from
    best = BPRMF(8).build(split)
    best.load_state_dict(load_file(str(out / "run" / "model.safetensors")))
    best_metrics = evaluate(best, split, ks=KS, phase="test").metrics
    assert reports[0]["test"] == pytest.approx(best_metrics, abs=1e-9)


def test_interrupted_distributed_run_resumes_to_the_same_weights(ranks):
    out, _ = ranks
    straight, resumed = load_file(str(out / "w0.st")), load_file(str(out / "r0.st"))
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)


def test_two_processes_reach_the_one_process_accuracy(ranks):
    _, reports = ranks
    torch.set_num_threads(1)
    split = _split()
    one = Trainer(_config()).fit(BPRMF(8), split, progress=False)
    two = reports[0]["test"]
    random_recall = 20 / split.n_items
    assert one.test["recall@20"] > 2 * random_recall  # both learn the structure ...
    for name in ("recall@20", "ndcg@20"):  # ... equally well
        assert abs(two[name] - one.test[name]) < 0.08, (name, two[name], one.test[name])
    assert np.isfinite(reports[0]["losses"]).all()


def test_a_distributed_sweep_trains_one_run_at_a_time(tmp_path):
    from recpress.errors import ConfigError
    from recpress.experiments.sweep import SweepConfig, run_sweep

    train = {"epochs": 1, "ks": [10], "selection_metric": "recall@10"}
    config = SweepConfig.model_validate(
        {
            "name": "ddp",
            "data": {"dataset": "ml-100k"},
            "teacher": {"model": {"name": "bpr", "embedding_dim": 4}, "train": train},
            "students": {"dims": [2], "methods": ["none"], "seeds": [0], "train": train},
        }
    )
    with pytest.raises(ConfigError, match="one run at a time"):
        run_sweep(config, tmp_path / "sweep", jobs=2, distributed=2, progress=False)
    assert not (tmp_path / "sweep").exists()
