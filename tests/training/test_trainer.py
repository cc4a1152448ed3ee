"""The training loop: selection, early stopping, history, resume after interruption."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file

from recpress.models import BPRMF
from recpress.training import TrainConfig, Trainer
from recpress.training.trainer import typical_epoch_seconds
from tests.conftest import random_split


def _config(**kw) -> TrainConfig:
    base = dict(
        epochs=6,
        lr=0.05,
        weight_decay=0.0,
        batch_size=32,
        eval_every=1,
        patience=None,
        ks=[5, 10],
        selection_metric="recall@10",
        seed=3,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_fit_selects_best_validation_epoch_and_writes_history(tmp_path):
    split = random_split()
    result = Trainer(_config()).fit(BPRMF(8), split, run_dir=tmp_path, progress=False)
    assert result.epochs_run == 6
    valid = [row["valid_recall@10"] for row in result.history]
    assert result.best_epoch == max(range(6), key=lambda e: (valid[e], -e))
    assert result.valid["recall@10"] == pytest.approx(max(valid))
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert "test_recall@10" in rows[0]
    assert (tmp_path / "model.safetensors").exists()


def test_epoch_cost_is_the_median_pass_so_a_stalled_pass_does_not_dominate():
    # one pass that spanned a suspended process (6842 s among 4 s passes, as a paused VM gave)
    history = [{"epoch": e, "seconds": 4.0 + 0.1 * e} for e in range(5)]
    history[2]["seconds"] = 6842.0
    assert typical_epoch_seconds(history) == pytest.approx(4.3)
    assert typical_epoch_seconds(history[:4]) == pytest.approx((4.1 + 4.3) / 2)
    assert typical_epoch_seconds([]) == 0.0


def test_fit_reports_the_median_of_its_history_seconds():
    result = Trainer(_config(epochs=3)).fit(BPRMF(8), random_split(), progress=False)
    seconds = sorted(row["seconds"] for row in result.history)
    assert result.seconds_per_epoch == pytest.approx(seconds[1])


def test_early_stopping_counts_evaluations_without_improvement():
    split = random_split()
    # lr 0 → metrics never improve after the first evaluation
    result = Trainer(_config(lr=1e-12, epochs=50, patience=3)).fit(BPRMF(8), split, progress=False)
    assert result.best_epoch == 0
    assert result.epochs_run == 4


def test_fixed_epochs_keeps_final_weights():
    split = random_split()
    model = BPRMF(8)
    result = Trainer(_config(selection="fixed_epochs", epochs=4)).fit(model, split, progress=False)
    assert result.best_epoch == 3


def test_resume_after_interruption_gives_the_uninterrupted_result(tmp_path):
    split = random_split(seed=4)
    full = Trainer(_config()).fit(BPRMF(8), split, run_dir=tmp_path / "full", progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_epoch_2(epoch, row):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(_config()).fit(
            BPRMF(8),
            split,
            run_dir=tmp_path / "cut",
            progress=False,
            on_evaluation=stop_after_epoch_2,
        )
    # the checkpoint of epoch 1 exists; rerunning continues from epoch 2
    resumed = Trainer(_config()).fit(BPRMF(8), split, run_dir=tmp_path / "cut", progress=False)
    assert [r["epoch"] for r in resumed.history] == list(range(6))
    assert resumed.best_epoch == full.best_epoch
    assert resumed.test == pytest.approx(full.test)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_reduction_mean_differs_from_sum():
    split = random_split()
    s = Trainer(_config(epochs=1)).fit(BPRMF(8), split, progress=False)
    m = Trainer(_config(epochs=1, reduction_base="mean")).fit(BPRMF(8), split, progress=False)
    assert s.history[0]["loss"] > 10 * m.history[0]["loss"]


def test_bad_train_config_values_are_rejected():
    with pytest.raises(ValueError):
        TrainConfig(selection_metric="auc@10")
    with pytest.raises(ValueError):
        TrainConfig(ks=[0, 10])
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
