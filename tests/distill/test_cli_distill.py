"""`recpress distill` end to end on an ml-100k slice, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recpress.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, data_root) -> Path:
    """BPR dim 32, 3 epochs on ml-100k (loo)."""
    import os

    os.environ.setdefault("RECPRESS_DATA", str(data_root))
    out = tmp_path_factory.mktemp("teacher") / "t"
    try:
        main(
            [
                "train",
                "--dataset",
                "ml-100k",
                "--data-path",
                str(data_root / "ml-100k"),
                "--protocol",
                "loo",
                "--dim",
                "32",
                "--epochs",
                "3",
                "--out",
                str(out),
                "--no-progress",
                "--set",
                "train.eval_every=5",
            ]
        )
    except SystemExit as exc:
        assert not exc.code
    return out


def test_distill_end_to_end(teacher_dir, tmp_path, capsys):
    out = tmp_path / "student"
    code, stdout, err = run_cli(
        [
            "distill",
            "--teacher",
            str(teacher_dir),
            "--method",
            "de+rrd",
            "--dim",
            "8",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "distill.weights.de=0.02",
            "--set",
            "distill.params.rrd.K=20",
        ],
        capsys,
    )
    assert code == 0, err
    for name in ("config.yaml", "metrics.json", "model.safetensors", "history.csv", "split.json"):
        assert (out / name).is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert m["distill"]["method"] == "de+rrd"
    assert m["distill"]["weights"] == {"de": 0.02, "rrd": 0.001}
    assert m["distill"]["params"]["rrd"]["K"] == 20
    assert m["distill"]["params"]["de"]["n_experts"] == 30
    assert m["parameters"] == (943 + 1682) * 8
    assert m["training_parameters"] == m["parameters"] + m["aux_parameters"] > m["parameters"]
    assert m["teacher"]["test"]["recall@50"] > 0
    assert (teacher_dir / "knowledge" / "user_topk_n500_masked.safetensors").is_file()
    # the cache is reused by the next student
    out2 = tmp_path / "student2"
    code, _, err = run_cli(
        [
            "distill",
            "--teacher",
            str(teacher_dir),
            "--method",
            "rrd",
            "--dim",
            "8",
            "--epochs",
            "1",
            "--out",
            str(out2),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((out2 / "metrics.json").read_text())["knowledge_lists_computed"] == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "nope"], "known: "),
        (["--method", "rrd", "--set", "distill.params.rrd.KK=3"], "unknown parameter"),
        (["--method", "de", "--dim", "0"], "positive integer"),
        (["--method", "de", "--set", "distill.weights.de=nan"], "finite"),
        (["--method", "rrd", "--set", "data.split_seed=1"], "fingerprint"),
        (["--method", "rrd", "--teacher", "/nonexistent/teacher"], "does not exist"),
    ],
)
def test_distill_bad_inputs(teacher_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "student"
    argv = [
        "distill",
        "--teacher",
        str(teacher_dir),
        "--dim",
        "8",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    # later options win: --method/--dim/--teacher in `extra` override the defaults above
    code, stdout, err = run_cli(argv + extra, capsys)
    assert code == 2
    text = " ".join(err.split())
    assert message in text, text
    assert "Traceback" not in err
    assert text.startswith("error:")
    assert not out.exists()
