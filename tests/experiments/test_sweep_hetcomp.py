"""A sweep with several teachers and HetComp: its multi-teacher term takes a list of teachers
(default all of them) while single-teacher terms keep one name each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recpress.errors import ConfigError
from recpress.experiments.sweep import load_sweep_config, plan
from tests.experiments.grids import TRAIN


def config(tmp_path: Path, teacher_of: dict) -> Path:
    teachers = {
        name: {"model": {"name": "bpr", "embedding_dim": dim}, "train": TRAIN}
        for name, dim in (("wide", 8), ("narrow", 6), ("mid", 7))
    }
    data = {
        "name": "het",
        "data": {"dataset": "ml-100k", "min_rating": 4},
        "teachers": teachers,
        "students": {
            "dims": [4],
            "methods": ["none", "rrd", "hetcomp"],
            "seeds": [0],
            "train": TRAIN,
            "model": "bpr",
            "teacher_of": teacher_of,
        },
    }
    path = tmp_path / "het.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_hetcomp_gets_every_teacher_by_default_and_a_list_when_given(tmp_path):
    cfg = load_sweep_config(config(tmp_path, {"rrd": "wide"}))
    runs = {r.method: r for r in plan(cfg, tmp_path / "out") if not r.is_teacher}
    het = runs["hetcomp"].config.distill
    assert het.teacher_of == {"hetcomp": ["wide", "narrow", "mid"]}
    assert set(het.teachers) == {"wide", "narrow", "mid"}
    assert het.teachers_for("hetcomp") == ["wide", "narrow", "mid"]
    assert runs["rrd"].config.distill.teacher_of == {"rrd": "wide"}
    cfg = load_sweep_config(config(tmp_path, {"rrd": "wide", "hetcomp": ["mid", "wide"]}))
    het = next(r for r in plan(cfg, tmp_path / "out") if r.method == "hetcomp").config.distill
    assert het.teachers_for("hetcomp") == ["mid", "wide"] and set(het.teachers) == {"mid", "wide"}


def test_bad_teacher_lists_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"teachers \['big'\] of 'hetcomp' are not in"):
        load_sweep_config(config(tmp_path, {"rrd": "wide", "hetcomp": ["wide", "big"]}))
    with pytest.raises(ConfigError, match="'rrd' learns from one teacher"):
        load_sweep_config(config(tmp_path, {"rrd": ["wide", "mid"]}))
