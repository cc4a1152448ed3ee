"""Teacher trajectories: top-K unobserved lists, the trainer hook, kept checkpoints, the
`recpress trajectories` command and its messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recpress.cli import main
from recpress.errors import ConfigError
from recpress.evaluation.ranking import top_k_unobserved
from recpress.experiments.run import train_run
from recpress.experiments.trajectories import make_trajectories
from recpress.models import make_model
from recpress.models.bpr import BPRMF
from recpress.models.registry import MODELS
from recpress.runs import (
    TRAJECTORIES,
    WEIGHTS,
    checkpoint_path,
    load_split_of,
    read_trajectories,
    write_trajectories,
)
from recpress.training import Trainer
from recpress.training.config import TrainConfig
from tests.distill.tiny import tiny
from tests.run_dirs.tinyruns import tiny_config, write_pairs
from tests.topk_checks import assert_same_topk

TRAIN = {
    "epochs": 4,
    "eval_every": 3,  # evaluates at 0 and 3: epoch 2's lazy updates are still pending
    "batch_size": 128,
    "device": "cpu",
    "selection": "fixed_epochs",
    "optimizer": "lazy",
}
RECORD = {"trajectory_epochs": [0, 2, 3], "trajectory_k": 7, "keep_checkpoints": [0, 2]}


def _config(data_file: Path, **train):
    config = tiny_config(data_file, epochs=4)
    return config.model_copy(update={"train": TrainConfig(**{**TRAIN, **train})})


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("traj")
    data_file = write_pairs(root / "tiny.tsv", n_users=40, n_items=80, per_user=10)
    plain, recorded = root / "plain", root / "recorded"
    train_run(_config(data_file), plain, progress=False)
    train_run(_config(data_file, **RECORD), recorded, progress=False)
    return {"plain": plain, "recorded": recorded, "data": data_file}


def _reference_topk(model, split, k, mask=True):
    """Slow explicit reference: float64 scores, training items -inf, a stable argsort."""
    u = model.user_embeddings().double()
    i = model.item_embeddings().double()
    scores = (u @ i.T).numpy()
    if mask:
        train = split.train.toarray() > 0
        scores[train] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, order, axis=1)
    return values, order, scores


def test_top_k_unobserved_equals_a_slow_reference():
    split, teacher, _, _ = tiny(n_users=9, n_items=15, per_user=4)
    k = 13  # > 15 - 4 allowed items: the last two ranks are padding
    got = top_k_unobserved(teacher, split, k, chunk_users=2)
    assert got.dtype == torch.int32 and got.shape == (9, k)
    values, order, scores = _reference_topk(teacher, split, k)
    got_np = got.numpy().astype(np.int64)
    assert (got_np[:, 11:] == -1).all() and (got_np[:, :11] >= 0).all()
    at = np.take_along_axis(scores, np.maximum(got_np, 0), 1)
    got_values = np.where(got_np >= 0, at, -np.inf)
    assert_same_topk(got_values, got_np, values, np.where(np.isinf(values), -1, order), scores)
    train = split.train.toarray() > 0
    for user, row in enumerate(got_np):
        assert not train[user, row[row >= 0]].any()  # no training item in any list
    # the default chunking, a user subset and the unmasked variant agree with the reference
    assert torch.equal(top_k_unobserved(teacher, split, k), got)
    assert torch.equal(top_k_unobserved(teacher, split, k, users=[4, 1]), got[[4, 1]])
    v_all, o_all, s_all = _reference_topk(teacher, split, 5, mask=False)
    unmasked = top_k_unobserved(teacher, split, 5, exclude=()).numpy().astype(np.int64)
    assert_same_topk(np.take_along_axis(s_all, unmasked, 1), unmasked, v_all, o_all, s_all)
    with pytest.raises(ConfigError, match="K must be in 1..15"):
        top_k_unobserved(teacher, split, 16)


def test_trainer_stores_lists_and_kept_weights(runs):
    run = runs["recorded"]
    split = load_split_of(run)
    traj = read_trajectories(run, split=split)
    assert traj.epochs == [0, 2, 3] and traj.k == 7
    assert traj.lists.dtype == torch.int32 and traj.lists.shape == (3, split.n_users, 7)
    assert traj.fingerprint["fingerprint"] == split.fingerprint()
    train = split.train.toarray() > 0
    for c in range(3):
        rows = traj.lists[c].numpy()
        assert (rows >= 0).all()
        assert not np.take_along_axis(train, rows.astype(np.int64), 1).any()
    assert checkpoint_path(run, 0).is_file() and checkpoint_path(run, 2).is_file()
    assert not checkpoint_path(run, 1).exists() and not checkpoint_path(run, 3).exists()
    # the lists at the last epoch are the final model's
    model = BPRMF(8).build(split, torch.Generator().manual_seed(0))
    model.load_state_dict(load_file(str(run / WEIGHTS)))
    assert torch.equal(traj.at(3), top_k_unobserved(model, split, 7))


def test_recording_does_not_change_the_training(runs):
    """Epoch 2's lists read the caught-up model, then the optimiser state is put back."""
    plain = load_file(str(runs["plain"] / WEIGHTS))
    recorded = load_file(str(runs["recorded"] / WEIGHTS))
    assert plain.keys() == recorded.keys()
    for name in plain:
        assert torch.equal(plain[name], recorded[name]), name


def test_lists_made_from_kept_checkpoints_equal_the_trainers(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["recorded"], copy)
    (copy / TRAJECTORIES).unlink()
    lines: list[str] = []
    made = make_trajectories(copy, [0, 2], k=7, progress=lines.append)
    assert len(lines) == 2 and "checkpoints/epoch_0000.safetensors" in lines[0]
    trainer = read_trajectories(runs["recorded"], epochs=[0, 2])
    assert torch.equal(made.lists, trainer.lists)
    # resume: stored epochs are skipped; the selected epoch (fixed_epochs: the last) comes
    # from model.safetensors
    lines.clear()
    made = make_trajectories(copy, [0, 2, 3], k=7, progress=lines.append)
    assert len(lines) == 1 and "epoch 3" in lines[0] and WEIGHTS in lines[0]
    assert torch.equal(made.lists, read_trajectories(runs["recorded"]).lists)
    shorter = make_trajectories(copy, [2], k=3)
    assert shorter.k == 3 and torch.equal(shorter.lists[0], trainer.lists[1, :, :3])
    with pytest.raises(ConfigError, match=r"no weights for epochs \[1\].*epochs \[0, 2\]"):
        make_trajectories(copy, [1, 2], k=7)
    # a longer K remakes every stored epoch from its kept weights
    longer = make_trajectories(copy, [2], k=20)
    assert read_trajectories(copy).epochs == [0, 2, 3] and longer.lists.shape == (1, 40, 20)
    split = load_split_of(copy)
    model = BPRMF(8).build(split, torch.Generator().manual_seed(0))
    model.load_state_dict(load_file(str(checkpoint_path(copy, 0))))
    assert torch.equal(
        read_trajectories(copy, epochs=[0]).lists[0], top_k_unobserved(model, split, 20)
    )
    checkpoint_path(copy, 0).unlink()  # now epoch 0 cannot be remade
    with pytest.raises(ConfigError, match=r"epochs \[0\] have no kept weights.*--overwrite"):
        make_trajectories(copy, [2], k=30)
    assert make_trajectories(copy, [2], k=30, overwrite=True).epochs == [2]
    assert read_trajectories(copy).epochs == [2]


def test_an_interrupted_run_ends_with_the_same_lists(runs, tmp_path):
    split = load_split_of(runs["recorded"])
    config = _config(runs["data"], **RECORD)
    cfg = config.train
    run = tmp_path / "interrupted"

    def unbuilt():  # built by the trainer from its seeded generator, as train_run does
        return make_model(config.model.name, **config.model.params)

    class Stop(Exception):
        pass

    def stop_at_3(epoch, row):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        Trainer(cfg).fit(unbuilt(), split, run_dir=run, progress=False, on_evaluation=stop_at_3)
    assert read_trajectories(run).epochs == [0, 2, 3]  # epoch 3's lists, then the stop
    Trainer(cfg).fit(unbuilt(), split, run_dir=run, progress=False)
    assert torch.equal(read_trajectories(run).lists, read_trajectories(runs["recorded"]).lists)


def test_read_trajectories_messages(runs, tmp_path):
    with pytest.raises(ConfigError, match=r"recpress trajectories .* --epochs 9,19"):
        read_trajectories(runs["plain"], epochs=[9, 19])
    with pytest.raises(ConfigError, match="holds top-7 lists but top-50 are asked"):
        read_trajectories(runs["recorded"], k=50)
    with pytest.raises(ConfigError, match=r"no lists for epochs \[1\]"):
        read_trajectories(runs["recorded"], epochs=[1])
    other, _, _, _ = tiny(n_users=40, n_items=80)
    with pytest.raises(ConfigError, match="fingerprint") as err:
        read_trajectories(runs["recorded"], split=other)
    assert other.fingerprint() in str(err.value)
    assert load_split_of(runs["recorded"]).fingerprint() in str(err.value)
    # writes merge by epoch and refuse another K or another split
    out = tmp_path / "t"
    lists = torch.zeros((2, 3, 4), dtype=torch.int32)
    write_trajectories(out, [5, 1], lists, {"fingerprint": "aaaa"})
    write_trajectories(out, [3], lists[:1] + 1, {"fingerprint": "aaaa"})
    assert read_trajectories(out).epochs == [1, 3, 5]
    with pytest.raises(ConfigError, match="top-4"):
        write_trajectories(out, [7], torch.zeros((1, 3, 5), dtype=torch.int32), None)
    with pytest.raises(ConfigError, match="fingerprint aaaa"):
        write_trajectories(out, [7], lists[:1], {"fingerprint": "bbbb"})


def test_config_fields_validated_and_absent_by_default(runs):
    with pytest.raises(ValueError, match=r"trajectory_epochs \[4\] are not trained"):
        TrainConfig(epochs=4, trajectory_epochs=[4])
    with pytest.raises(ValueError, match="0-based"):
        TrainConfig(keep_checkpoints=[-1])
    assert TrainConfig(epochs=9, trajectory_epochs=[5, 2, 5]).trajectory_epochs == [2, 5]
    dumped = tiny_config(runs["data"]).to_yaml()
    assert "trajectory" not in dumped and "keep_checkpoints" not in dumped
    assert "trajectory_epochs" in (runs["recorded"] / "config.yaml").read_text()


def test_cli_makes_lists_and_names_the_kept_epochs(runs, tmp_path, capsys):
    copy = tmp_path / "cli"
    shutil.copytree(runs["recorded"], copy)
    (copy / TRAJECTORIES).unlink()
    with pytest.raises(SystemExit) as exc:
        main(["trajectories", str(copy), "--epochs", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "epochs [0, 2]" in err and "Traceback" not in err
    main(["trajectories", str(copy), "--epochs", "0,2", "--k", "7"])
    assert "epochs [0, 2], top-7" in capsys.readouterr().out
    assert torch.equal(
        read_trajectories(copy).lists, read_trajectories(runs["recorded"], epochs=[0, 2]).lists
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_records_the_lists_its_kept_weights_give(name, runs, tmp_path):
    """Score-only and user-batch models included: the trainer's lists at each recorded epoch
    equal the lists made afterwards from the weights kept at that epoch."""
    config = tiny_config(runs["data"], epochs=3)
    params = {} if name in ("multvae", "cdae") else {"embedding_dim": 8}
    train = TrainConfig(
        epochs=3,
        eval_every=2,
        batch_size=128,
        device="cpu",
        trajectory_epochs=[0, 1],
        trajectory_k=9,
        keep_checkpoints=[0, 1],
    )
    model = type(config.model)(name=name, **params)
    out = tmp_path / name
    train_run(config.model_copy(update={"model": model, "train": train}), out, progress=False)
    trainer = read_trajectories(out)
    (out / TRAJECTORIES).unlink()
    made = make_trajectories(out, [0, 1], k=9)
    assert made.lists.shape == (2, 40, 9) and made.lists.dtype == torch.int32
    assert torch.equal(trainer.lists, made.lists)
    train_rows = load_split_of(out).train.toarray() > 0
    for lists in made.lists.numpy().astype(np.int64):
        assert not np.take_along_axis(train_rows, lists, 1).any()


def test_overwrite_drops_lists_and_kept_weights_of_the_old_run(runs, tmp_path):
    from recpress.runs import prepare_run_dir

    copy = tmp_path / "over"
    shutil.copytree(runs["recorded"], copy)
    assert prepare_run_dir(copy, "other: config\n", overwrite=True) == "new"
    assert not (copy / TRAJECTORIES).exists()
    assert not checkpoint_path(copy, 0).exists() and not checkpoint_path(copy, 2).exists()
