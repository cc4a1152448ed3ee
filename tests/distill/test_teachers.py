"""Each distiller bound to its own teacher: `distill.teachers` + `teacher_of`, npz teachers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import recpress.experiments.run as run_module
from recpress.distill.teachers import EmbeddingTeacher, load_teacher
from recpress.errors import ConfigError
from recpress.experiments.config import student_config
from recpress.experiments.run import load_split_for, train_run
from recpress.runs import KNOWLEDGE_DIR, load_run
from tests.run_dirs.tinyruns import tiny_config, write_pairs

FAST = {"rrd": {"K": 5, "L": 5, "N": 20}}


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data file, teacher a d=8, teacher b d=16), each 2 epochs on the same tiny data."""
    root = tmp_path_factory.mktemp("teachers")
    data_file = write_pairs(root / "tiny.tsv")
    a, b = root / "a", root / "b"
    train_run(tiny_config(data_file, dim=8), a, progress=False)
    train_run(tiny_config(data_file, dim=16), b, progress=False)
    return data_file, a, b


def student(teachers, teacher_of=None, method="rrd+ftd"):
    return student_config(
        teachers,
        method,
        4,
        epochs=1,
        teacher_of=teacher_of,
        values={
            "distill.params": {k: v for k, v in FAST.items() if k in method.split("+")},
            "profile": False,
            "train.eval_every": 1,
        },
    )


def test_each_distiller_gets_its_own_teachers_knowledge(two_teachers, tmp_path, monkeypatch):
    _, a, b = two_teachers
    seen = {}
    original = run_module.prepare_distillers

    def spy(distillers, knowledge, split, **kw):
        seen.update({d.name: k for (d, _), k in zip(distillers, knowledge, strict=True)})
        return original(distillers, knowledge, split, **kw)

    monkeypatch.setattr(run_module, "prepare_distillers", spy)
    config = student({"a": a, "b": b}, {"rrd": "a", "ftd": "b"})
    metrics = train_run(config, tmp_path / "s", progress=False)
    assert seen["rrd"].cache_dir == a / KNOWLEDGE_DIR
    assert seen["ftd"].cache_dir == b / KNOWLEDGE_DIR
    assert seen["rrd"].teacher.embedding_dim == 8
    assert seen["ftd"].teacher.embedding_dim == 16
    assert seen["rrd"] is not seen["ftd"]
    # the teacher's own weights, not another's
    ta, tb = load_run(a).model, load_run(b).model
    assert torch.equal(seen["rrd"].user_embeddings(), ta.user_embeddings())
    assert torch.equal(seen["ftd"].user_embeddings(), tb.user_embeddings())
    # each teacher's lists are cached in its own run directory
    assert any((a / KNOWLEDGE_DIR).iterdir()) and any((b / KNOWLEDGE_DIR).iterdir())
    assert metrics["distill"]["teacher_of"] == {"rrd": "a", "ftd": "b"}
    assert set(metrics["teachers"]) == {"a", "b"}
    assert "teacher" not in metrics
    # the stored config names both teachers and resumes as the same run
    assert (
        train_run(config, tmp_path / "s", progress=False)["best_epoch"] == (metrics["best_epoch"])
    )


def test_several_teachers_need_teacher_of_for_every_term(two_teachers, tmp_path):
    _, a, b = two_teachers
    with pytest.raises(ConfigError, match="several: a, b.*teacher_of.ftd"):
        train_run(student({"a": a, "b": b}, {"rrd": "a"}), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()  # refused before the run directory exists


def test_unknown_teacher_name_lists_the_teachers(two_teachers):
    _, a, b = two_teachers
    with pytest.raises(ConfigError, match="names teacher 'c', but the teachers are: a, b"):
        student({"a": a, "b": b}, {"rrd": "c", "ftd": "a"})


def test_teacher_of_a_term_the_method_lacks(two_teachers, tmp_path):
    _, a, b = two_teachers
    config = student({"a": a, "b": b}, {"rrd": "a", "ftd": "b", "de": "a"})
    with pytest.raises(ConfigError, match="teacher_of names de"):
        train_run(config, tmp_path / "s", progress=False)


def test_single_teacher_config_unchanged(two_teachers, tmp_path):
    _, a, _ = two_teachers
    config = student(a, method="ftd")
    dumped = yaml.safe_load(config.to_yaml())["distill"]
    assert dumped["teacher"] == str(a) and "teachers" not in dumped
    metrics = train_run(config, tmp_path / "s", progress=False)
    assert metrics["teacher"]["path"] == str(a.resolve())
    assert "teachers" not in metrics


def test_teacher_of_another_split_is_refused_by_name(two_teachers, tmp_path):
    data_file, a, _ = two_teachers
    other = write_pairs(tmp_path / "other.tsv", n_users=61)
    c = tmp_path / "c"
    train_run(tiny_config(other, dim=8, epochs=1), c, progress=False)
    config = student({"a": a, "c": c}, {"rrd": "a", "ftd": "c"})
    split = load_split_for(config)
    with pytest.raises(ConfigError, match=f"teacher {c} was trained on a split") as err:
        train_run(config, tmp_path / "s", progress=False, split=split)
    assert err.value.field == "distill.teachers.c"


def test_npz_embedding_teacher_is_read_only_dot_product(two_teachers, tmp_path):
    data_file, a, _ = two_teachers
    split = load_split_for(tiny_config(data_file))
    u = np.random.default_rng(1).normal(size=(split.n_users, 6)).astype(np.float32)
    i = np.random.default_rng(2).normal(size=(split.n_items, 6)).astype(np.float32)
    path = tmp_path / "emb.npz"
    np.savez(path, user_embeddings=u, item_embeddings=i)
    k = load_teacher(path, split)
    assert isinstance(k.teacher, EmbeddingTeacher)
    assert k.provides == {"topk", "scores", "embeddings"}
    assert not any(p.requires_grad for p in k.teacher.parameters())
    users = torch.tensor([0, 3])
    torch.testing.assert_close(k.teacher.score(users), torch.from_numpy(u[[0, 3]] @ i.T))
    items = torch.tensor([[1, 2], [5, 0]])
    torch.testing.assert_close(k.score_items(users, items), k.teacher.score(users).gather(1, items))
    assert k.cache_dir == tmp_path / "emb.knowledge"


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from recpress.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


def test_cli_teachers_and_teacher_of(two_teachers, tmp_path, capsys):
    _, a, b = two_teachers
    out = tmp_path / "s"
    args = ["distill", "--method", "rrd+ftd", "--dim", "4", "--out", str(out), "--epochs", "1"]
    args += ["--no-progress", "--set", "profile=false", "--set", "train.eval_every=1"]
    args += [f"--set=distill.params.rrd.{k}={v}" for k, v in FAST["rrd"].items()]
    code, text = _cli([*args, "--teachers", f"a={a},b={b}", "--teacher-of", "rrd=a,ftd=b"], capsys)
    assert code == 0, text
    cfg = yaml.safe_load((out / "config.yaml").read_text())["distill"]
    assert cfg["teachers"] == {"a": str(a), "b": str(b)}
    assert cfg["teacher_of"] == {"rrd": "a", "ftd": "b"}
    code, text = _cli([*args, "--teachers", f"a={a},b"], capsys)  # b: a path named b
    assert code == 2 and "teacher b does not exist" in text
    code, text = _cli([*args, "--teachers", f"a={a},{a}"], capsys)
    assert code == 2 and "names teacher 'a' twice" in text
    code, text = _cli([*args, "--teacher", str(a), "--teachers", f"a={a}"], capsys)
    assert code == 2 and "give one of --teacher" in text
