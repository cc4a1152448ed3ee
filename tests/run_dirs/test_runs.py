"""`recpress.runs`: the run directory's layout, `load_run`, and old configs kept recognised."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from recpress import runs
from recpress.errors import ConfigError
from recpress.experiments.config import RunConfig, normalise_run_yaml, parse_config
from recpress.experiments.run import train_run
from recpress.runs import load_run, prepare_run_dir
from tests.run_dirs.tinyruns import tiny_config, write_pairs

#: a student config.yaml as the single-teacher versions wrote it (distill.teacher: PATH)
OLD_STUDENT_YAML = """\
data:
  dataset: tiny
  path: null
  protocol: null
  split_seed: 0
  min_rating: null
  kcore: 0
  interactions: /data/tiny.tsv
  train: null
  valid: null
  test: null
  format: pairs
  columns: null
model:
  name: bpr
  embedding_dim: 8
  init_std: 0.01
distill:
  teacher: /runs/teacher
  method: ftd
  weights: {}
  params: {}
  topn: 500
profile: false
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    data_file = write_pairs(root / "tiny.tsv")
    out = root / "run"
    train_run(tiny_config(data_file), out, progress=False)
    return out


def test_layout_names() -> None:
    assert (runs.CONFIG, runs.SPLIT, runs.METRICS) == ("config.yaml", "split.json", "metrics.json")
    assert (runs.WEIGHTS, runs.AUX_WEIGHTS) == ("model.safetensors", "aux.safetensors")
    assert (runs.HISTORY, runs.CHECKPOINT) == ("history.csv", "checkpoint.pt")
    assert (runs.PROFILE, runs.KNOWLEDGE_DIR) == ("profile.json", "knowledge")


def test_load_run_gives_model_split_config_metrics(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    assert run.path == tiny_run
    assert run.config["model"]["embedding_dim"] == 8
    assert run.metrics is not None and run.metrics["epochs_run"] == 2
    assert not run.model.training
    assert run.model.user_embeddings().shape == (run.split.n_users, 8)
    assert run.model_config.name == "bpr"
    assert run.data_config.format == "pairs"
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.path = Path("elsewhere")  # type: ignore[misc]
    # the weights are the saved ones: a second load gives the same tensors
    again = load_run(tiny_run, split=run.split)
    assert torch.equal(again.model.user_embeddings(), run.model.user_embeddings())


def test_load_run_refuses_a_directory_without_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run(tmp_path)
    (tmp_path / runs.CONFIG).write_text("model: {name: bpr}\n")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        load_run(tmp_path)


def test_load_run_refuses_another_split(tiny_run: Path, tmp_path: Path) -> None:
    from recpress.data.config import DataConfig, load_split_for

    other = write_pairs(tmp_path / "other.tsv", n_users=61)
    split = load_split_for(DataConfig(dataset="tiny", interactions=str(other), format="pairs"))
    with pytest.raises(ConfigError, match="fingerprint"):
        load_run(tiny_run, split=split)


def test_old_single_teacher_config_is_the_same_run(tmp_path: Path) -> None:
    """A config.yaml stored by the single-teacher version normalises to today's text."""
    new = parse_config(RunConfig, yaml.safe_load(OLD_STUDENT_YAML)).to_yaml()
    assert normalise_run_yaml(OLD_STUDENT_YAML) == new
    # the single form is still how it is written (train defaults filled in)
    assert "distill:\n  teacher: /runs/teacher\n  method: ftd\n  weights: {}\n" in new
    run = tmp_path / "student"
    run.mkdir()
    (run / runs.CONFIG).write_text(OLD_STUDENT_YAML)
    assert prepare_run_dir(run, new, normalise=normalise_run_yaml) == "new"
    cfg = parse_config(RunConfig, yaml.safe_load(OLD_STUDENT_YAML))
    assert cfg.distill.teachers == {"teacher": "/runs/teacher"}
    assert cfg.distill.teacher == "/runs/teacher"
    assert cfg.distill.teacher_for("ftd") == "teacher"


def test_several_teachers_dump_their_names() -> None:
    data = yaml.safe_load(OLD_STUDENT_YAML)
    data["distill"] = {
        "teachers": {"a": "/runs/a", "b": "/runs/b"},
        "teacher_of": {"rrd": "a", "ftd": "b"},
        "method": "rrd+ftd",
    }
    text = parse_config(RunConfig, data).to_yaml()
    dumped = yaml.safe_load(text)["distill"]
    assert dumped["teachers"] == {"a": "/runs/a", "b": "/runs/b"}
    assert dumped["teacher_of"] == {"rrd": "a", "ftd": "b"}
    assert "teacher" not in dumped
    assert normalise_run_yaml(text) == text


def test_teacher_and_teachers_together_are_refused() -> None:
    data = yaml.safe_load(OLD_STUDENT_YAML)
    data["distill"]["teachers"] = {"a": "/runs/a"}
    with pytest.raises(ConfigError, match="either teacher"):
        parse_config(RunConfig, data)


def test_teacher_of_an_unknown_teacher_lists_the_teachers() -> None:
    data = yaml.safe_load(OLD_STUDENT_YAML)
    data["distill"] = {"teachers": {"a": "/a", "b": "/b"}, "teacher_of": {"rrd": "c"}}
    with pytest.raises(ConfigError, match="names teacher 'c', but the teachers are: a, b"):
        parse_config(RunConfig, data)
