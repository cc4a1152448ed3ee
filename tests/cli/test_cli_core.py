"""The command line end to end: train/evaluate/datasets, bad input, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recpress.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def data_env(data_root, monkeypatch, tmp_path):
    monkeypatch.setenv("RECPRESS_DATA", str(data_root))
    monkeypatch.setenv("RECPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return data_root


def test_train_then_evaluate_ml100k(data_env, tmp_path, capsys):
    out = tmp_path / "run"
    train_args = (
        "train --dataset ml-100k --protocol loo --dim 16 --epochs 3 --set train.eval_every=1 "
        f"--set train.lr=0.005 --no-progress --out {out}"
    ).split()
    code, stdout, err = run_cli(train_args, capsys)
    assert code == 0, err
    for name in ("config.yaml", "split.json", "history.csv", "metrics.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["split"]["users"] == 943
    assert 0.0 < metrics["test"]["recall@50"] <= 1.0
    code, stdout, err = run_cli(["evaluate", str(out), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["recall@50"] == pytest.approx(metrics["test"]["recall@50"])
    # a finished run is skipped, not retrained
    code, stdout, err = run_cli(train_args, capsys)
    assert code == 0 and json.loads((out / "metrics.json").read_text()) == metrics


def test_datasets_lists_registry(data_env, capsys):
    code, stdout, _ = run_cli(["datasets"], capsys)
    assert code == 0
    for name in ("citeulike-t-td", "ml-100k", "gowalla", "amazon-book"):
        assert name in stdout


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_FILES = {
    "wrong column count": ("1\t2\t3\n", "inter.tsv:1:"),
    "non-integer id": ("1\t2\nx\t3\n", "inter.tsv:2:"),
    "negative id": ("1\t2\n-4\t3\n", "inter.tsv:2:"),
    "empty": ("", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_interaction_files(case, tmp_path, capsys):
    text, expected = BAD_FILES[case]
    data = _write(tmp_path / "inter.tsv", text)
    out = tmp_path / "run"
    code, _, err = run_cli(
        [
            "train",
            "--interactions",
            str(data),
            "--format",
            "pairs",
            "--out",
            str(out),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2
    assert "Traceback" not in err and str(data) in err and expected in err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
    assert not out.exists()


def test_error_text_is_not_read_as_markup(tmp_path, capsys):
    """Brackets in a message (a path like data[v2]/, "recpress[serve]") are printed as given."""
    folder = tmp_path / "data[v2]"
    folder.mkdir()
    data = _write(folder / "inter.tsv", "1\t2\t3\n")
    code, _, err = run_cli(
        ["train", "--interactions", str(data), "--format", "pairs", "--out", str(tmp_path / "r")],
        capsys,
    )
    assert code == 2 and str(data) in err


def test_user_without_training_items(tmp_path, capsys):
    train = _write(tmp_path / "train.tsv", "0\t1\n0\t2\n1\t1\n")
    valid = _write(tmp_path / "valid.tsv", "0\t3\n1\t2\n")
    test = _write(tmp_path / "test.tsv", "0\t4\n7\t2\n")
    out = tmp_path / "run"
    code, _, err = run_cli(
        [
            "train",
            "--set",
            f"data.train={train}",
            "--set",
            f"data.valid={valid}",
            "--set",
            f"data.test={test}",
            "--out",
            str(out),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2 and "no training items" in err and "test.tsv:2" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--dataset", "ml-100k", "--protocol", "zigzag"], "unknown split protocol 'zigzag'"),
        (["--dataset", "ml-100k", "--model", "svdpp"], "unknown model 'svdpp'"),
        (["--dataset", "ml-100k", "--set", "train.lr=-1"], "train.lr"),
        (["--dataset", "ml-100k", "--set", "train.optimizer=sgd"], "'lazy' or 'reference'"),
        (["--dataset", "ml-100k", "--set", "train.bogus=1"], "train.bogus: unknown key"),
        (["--dataset", "ml-100k", "--dim", "0"], "model.embedding_dim"),
        (["--interactions", "/nonexistent/file.tsv"], "not found"),
    ],
)
def test_bad_names_and_values(args, expected, data_env, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", *args, "--out", str(out), "--no-progress"], capsys)
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert not out.exists()


def test_missing_dataset_offline_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECPRESS_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("RECPRESS_CACHE", str(tmp_path / "cache"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    out = tmp_path / "run"
    code, _, err = run_cli(
        ["train", "--dataset", "ml-100k", "--out", str(out), "--no-progress"], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert "ml-100k" in err
    assert not out.exists()


def test_ctrl_c_stops_training_with_130_and_says_how_to_resume(data_env, tmp_path):
    """Ctrl-C (SIGINT) mid-run: exit code 130 and one line, no traceback (typer hands the
    interruption back as a return value, which must not become a silent exit 0)."""
    env = {**os.environ, "RECPRESS_DATA": str(data_env), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    config = tmp_path / "long.yaml"  # no early stopping: the run cannot end before the signal
    config.write_text(
        "data: {dataset: ml-100k}\nmodel: {name: bpr, embedding_dim: 16}\n"
        "train: {epochs: 2000, patience: null}\n"
    )
    command = [sys.executable, "-m", "recpress", "train", "--config", str(config),
               "--no-progress", "--out", str(out)]  # fmt: skip
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: the child gets the default disposition back,
    # as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    history = out / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        history.exists() and len(history.read_text().splitlines()) >= 3
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"rerun the same command to resume" in err and b"Traceback" not in err
    assert not (out / "metrics.json").exists()


def test_kill_mid_run_then_rerun_resumes(data_env, tmp_path):
    """SIGKILL a training process mid-run; the same command continues where it stopped and
    ends with exactly the metrics of an uninterrupted run."""
    env = {**os.environ, "RECPRESS_DATA": str(data_env), "OMP_NUM_THREADS": "1"}
    base = [
        sys.executable,
        "-m",
        "recpress",
        "train",
        "--dataset",
        "ml-100k",
        "--dim",
        "16",
        "--epochs",
        "12",
        "--set",
        "train.eval_every=2",
        "--set",
        "train.lr=0.005",
        "--no-progress",
    ]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    proc = subprocess.Popen(
        [*base, "--out", str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    history = cut / "history.csv"
    while time.time() < deadline:
        if history.exists() and len(history.read_text().splitlines()) >= 4:  # 3 epochs done
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "metrics.json").exists(), "killed too late: the run had finished"
    done_before = len(history.read_text().splitlines()) - 1
    assert 0 < done_before < 12
    subprocess.run([*base, "--out", str(cut)], env=env, check=True, capture_output=True)
    subprocess.run([*base, "--out", str(whole)], env=env, check=True, capture_output=True)
    a = json.loads((cut / "metrics.json").read_text())
    b = json.loads((whole / "metrics.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    epochs = [line.split(",")[0] for line in history.read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(12)]
