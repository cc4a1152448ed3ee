"""Every YAML under configs/ is a valid sweep or run config, so a README or docstring command
that names one fails for its data, never for a stale key."""

from pathlib import Path

import pytest

from recpress.errors import ConfigError
from recpress.experiments.config import RunConfig, load_yaml, parse_config
from recpress.experiments.sweep import load_sweep_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def is_sweep(data: dict) -> bool:
    return "students" in data or "teachers" in data or "teacher" in data


def test_configs_are_shipped():
    names = {path.name for path in CONFIGS}
    assert {"td-citeulike.yaml", "kd-d20-citeulike.yaml", "lightgcn-d64-citeulike.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_config_validates(path: Path):
    data = load_yaml(path)
    if is_sweep(data):
        cfg = load_sweep_config(path)
        assert cfg.students.dims and cfg.students.methods
    else:
        cfg = parse_config(RunConfig, data, str(path))
        assert cfg.train.epochs >= 1 and cfg.model.name


def test_a_stale_key_is_refused(tmp_path: Path):
    # the check above is only worth something if an unknown key fails validation
    path = tmp_path / "stale.yaml"
    text = (CONFIG_DIR / "bpr-d64-citeulike.yaml").read_text()
    path.write_text(text.replace("  eval_every: 10", "  eval_evry: 10"))
    with pytest.raises(ConfigError, match="eval_evry"):
        parse_config(RunConfig, load_yaml(path), str(path))
