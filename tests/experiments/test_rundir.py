"""Run-directory reuse: a stored config matches by meaning under the current schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recpress.errors import ConfigError
from recpress.experiments.config import RunConfig, normalise_run_yaml
from recpress.runs import CONFIG, prepare_run_dir


def _config(**train) -> RunConfig:
    return RunConfig.model_validate(
        {"data": {"dataset": "ml-100k"}, "model": {"embedding_dim": 8}, "train": train}
    )


def test_a_config_stored_before_a_new_setting_existed_still_resumes(tmp_path: Path):
    current = _config(epochs=3).to_yaml()
    old = yaml.safe_load(current)
    del old["train"]["fused_optimizer"]  # written by a version without this setting
    (tmp_path / CONFIG).write_text(yaml.safe_dump(old, sort_keys=False))
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert prepare_run_dir(tmp_path, current, normalise=normalise_run_yaml) == "resume"
    assert (tmp_path / CONFIG).read_text() == current  # rewritten in the current schema


@pytest.mark.parametrize(
    "stored",
    [
        _config(epochs=4).to_yaml(),  # another value
        _config(epochs=3).to_yaml().replace("epochs: 3", "epochs: 3\n  no_such_key: 1"),
    ],
)
def test_a_different_or_unreadable_stored_config_is_refused(tmp_path: Path, stored: str):
    (tmp_path / CONFIG).write_text(stored)
    with pytest.raises(ConfigError, match="different config.yaml"):
        prepare_run_dir(tmp_path, _config(epochs=3).to_yaml(), normalise=normalise_run_yaml)
