"""Export with ONNX / TorchScript parity, quantisation accuracy change, and the profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recpress.errors import ConfigError
from recpress.serving.artifact import Artifact, load_artifact
from recpress.serving.export import (
    check_parity,
    export_run,
    onnx_scorer,
    torch_scorer,
    torchscript_scorer,
    write_onnx,
)
from recpress.serving.profile import profile_run
from recpress.serving.recommender import TopKRecommender


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_scorer_parity(ml_run: Path, tmp_path: Path, fmt: str) -> None:
    report = export_run(ml_run, tmp_path / fmt, format=fmt)
    parity = report["parity"]
    assert parity["ok"] and parity["users"] == 943 and parity["id_mismatches"] == 0
    assert parity["max_abs_score_diff"] < 1e-5
    art = load_artifact(tmp_path / fmt)
    name = "scorer.onnx" if fmt == "onnx" else "scorer.torchscript.pt"
    assert name in art.manifest["files"]
    load = onnx_scorer if fmt == "onnx" else torchscript_scorer
    users = np.array([0, 5, 942])
    expected = torch_scorer(art.user_emb, art.item_emb)(users)
    assert np.allclose(load(tmp_path / fmt / name)(users), expected, rtol=1e-5, atol=1e-6)


def test_npz_export_matches_the_run(ml_run: Path, tmp_path: Path) -> None:
    from recpress.runs import load_run

    report = export_run(ml_run, tmp_path / "a")
    assert "parity" not in report and report["bytes"] > report["weights_bytes"]
    loaded = load_run(ml_run)
    model, split = loaded.model, loaded.split
    art = load_artifact(tmp_path / "a")
    assert torch.equal(art.item_emb, model.item_emb.weight.detach())
    assert art.manifest["dataset"]["fingerprint"] == split.fingerprint()
    assert art.manifest["config"]["model"]["embedding_dim"] == 8
    assert "recall@50" in art.manifest["metrics"]["test"]
    with pytest.raises(ConfigError, match="exists"):
        export_run(ml_run, tmp_path / "a")
    with pytest.raises(ConfigError, match="--format"):
        export_run(ml_run, tmp_path / "b", format="pickle")


@pytest.mark.parametrize("quant", ["fp16", "int8"])
def test_quantisation_change_is_measured_and_small(ml_run: Path, tmp_path: Path, quant: str):
    report = export_run(ml_run, tmp_path / quant, format="onnx", quantisation=quant)
    acc = report["accuracy"]
    assert acc["n_users"] == 943 and set(acc["fp32"]) == set(acc["quantised"])
    assert abs(acc["relative_change"]["recall@50"]) <= 0.05
    assert report["parity"]["ok"]
    fp32_weights = 2 * (943 + 1682) * 8 * 4
    assert report["weights_bytes"] < fp32_weights * (0.6 if quant == "fp16" else 0.4)


def test_parity_check_catches_a_wrong_scorer(small_model, small_split) -> None:
    art = Artifact.from_model(small_model, small_split)
    ref = torch_scorer(art.user_emb, art.item_emb)
    ok = check_parity(ref, ref, art, k=10)
    assert ok["ok"] and ok["tie_swaps"] == 0
    shuffled = check_parity(ref, lambda u: ref(u)[:, ::-1].copy(), art, k=10)
    assert not shuffled["ok"] and shuffled["id_mismatches"] > 0
    noisy = check_parity(ref, lambda u: ref(u) + 1e-3, art, k=10)
    assert not noisy["ok"] and noisy["id_mismatches"] == 0


def test_onnx_graph_matches_torch(tmp_path: Path, small_model, small_split) -> None:
    art = Artifact.from_model(small_model, small_split)
    path = write_onnx(art.user_emb, art.item_emb, tmp_path / "s.onnx")
    got = onnx_scorer(path, threads=1)(np.arange(40))
    assert np.allclose(got, torch_scorer(art.user_emb, art.item_emb)(np.arange(40)), atol=1e-5)


def test_profile_run_with_teacher_ratios(ml_run: Path, tmp_path: Path) -> None:
    import shutil

    student = tmp_path / "student"
    shutil.copytree(ml_run, student)
    metrics = json.loads((student / "metrics.json").read_text())
    metrics.update(aux_parameters=100, distill={"teacher": str(ml_run)})
    (student / "metrics.json").write_text(json.dumps(metrics))
    prof = profile_run(student, n_requests=20, warmup=2)
    assert prof["parameters"] == (943 + 1682) * 8
    assert prof["training_parameters"] == prof["parameters"] + 100
    assert prof["flops_per_user"] == 2 * 8 * 1682
    assert prof["bytes_on_disk"] > prof["parameters"] * 4
    lat = prof["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert prof["throughput"]["users_per_s"] > 0 and prof["memory"]["peak_rss_mb"] > 0
    # d=8: the batch path multiplies by item strips, 2**18 scores per block
    assert prof["serving_path"] == {"selector": "numba", "product": "tiles", "users_per_block": 155}
    assert prof["ratios"]["parameters"] == 1.0 and prof["teacher"]["aux_parameters"] == 0
    assert json.loads((student / "profile.json").read_text())["parameters"] == prof["parameters"]
    assert "profile" in json.loads((student / "metrics.json").read_text())


def test_recommender_on_exported_run(ml_run: Path, tmp_path: Path) -> None:
    export_run(ml_run, tmp_path / "a")
    rec = TopKRecommender.load(tmp_path / "a")
    items, _ = rec.recommend([1, 943, 10**6], k=20)
    assert items.shape == (3, 20) and items.dtype.kind in "iu"
    assert items.min() >= 1 and items.max() <= 1682  # ml-100k original ids are 1-based
