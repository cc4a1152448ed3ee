"""Model-form artifacts: a NeuMF run (no dot-product form) exported with its own weights,
reloaded through the model registry and served by its ``score``; dot-only options refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recpress.errors import ConfigError
from recpress.runs import load_run
from recpress.serving.artifact import ArtifactError, load_artifact
from recpress.serving.export import export_run
from recpress.serving.profile import profile_run
from recpress.serving.recommender import TopKRecommender, UnknownUserError
from tests.serving.test_serving_cli import run_cli
from tests.topk_checks import assert_same_topk

REFUSAL = "not U @ I.T"


@pytest.fixture(scope="module")
def neumf_artifact(neumf_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("neumf-art") / "artifact"
    report = export_run(neumf_run, out)
    assert (
        report["form"] == "model"
        and report["weights_bytes"] == report["files"]["model.safetensors"]
    )
    return out


def own_topk(model, train, k: int, exclude_seen: bool = True):
    """The model's own top-k over every user's unseen items: (values, items, scores)."""
    with torch.no_grad():
        scores = model.score(torch.arange(model.n_users)).double()
    masked = scores.clone()
    if exclude_seen:
        rows, cols = train.nonzero()
        masked[torch.as_tensor(rows), torch.as_tensor(cols)] = float("-inf")
    values, items = torch.topk(masked, k, dim=1)
    return values, items, scores


def test_export_writes_the_model_form(neumf_artifact: Path, neumf_run: Path) -> None:
    manifest = json.loads((neumf_artifact / "manifest.json").read_text())
    assert manifest["form"] == "model" and manifest["model"] == "neumf"
    assert manifest["model_params"]["layers"] == 2 and manifest["quantisation"] == "none"
    assert set(manifest["files"]) == {"model.safetensors", "ids.npz", "seen.npz"}
    assert {"sha256", "bytes"} <= set(manifest["files"]["model.safetensors"])
    run = load_run(neumf_run)
    art = load_artifact(neumf_artifact)
    assert art.form == "model" and art.user_emb is None and art.item_emb is None
    assert (art.n_users, art.n_items) == (run.split.n_users, run.split.n_items)
    assert manifest["dataset"]["fingerprint"] == run.split.fingerprint()
    want, got = run.model.state_dict(), art.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert art.num_parameters() == run.model.num_parameters()


@pytest.mark.parametrize("selector, chunk", [("numba", None), ("torch", None), ("numba", 7 * 80)])
def test_recommend_is_the_models_own_topk(neumf_artifact, neumf_run, selector, chunk) -> None:
    run = load_run(neumf_run)
    rec = TopKRecommender.load(neumf_artifact, selector=selector, chunk_elements=chunk)
    assert rec.selector == selector and rec.product == "rows"
    values, items, scores = own_topk(run.model, run.split.train, k=10)
    got = rec.recommend(list(run.split.user_ids), k=10)
    assert not got.fallback.any()
    index = {item: i for i, item in enumerate(run.split.item_ids.tolist())}
    got_items = np.vectorize(index.__getitem__)(got.items)
    assert_same_topk(got.scores, got_items, values, items, scores=scores)
    seen = run.split.train
    for r in range(run.split.n_users):
        assert not set(got_items[r].tolist()) & set(
            seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
        )


def test_include_seen_and_unknown_users(neumf_artifact: Path, neumf_run: Path) -> None:
    run = load_run(neumf_run)
    rec = TopKRecommender.load(neumf_artifact)
    values, items, scores = own_topk(run.model, run.split.train, k=5, exclude_seen=False)
    got = rec.recommend(list(run.split.user_ids[:3]), k=5, exclude_seen=False)
    index = {item: i for i, item in enumerate(run.split.item_ids.tolist())}
    got_items = np.vectorize(index.__getitem__)(got.items)
    assert_same_topk(got.scores, got_items, values[:3], items[:3], scores=scores[:3])

    known = run.split.user_ids[0]
    res = rec.recommend([known, 10**6], k=4)
    assert res.fallback.tolist() == [False, True]
    popular = np.argsort(-np.asarray(run.split.train.sum(axis=0)).ravel(), kind="stable")[:4]
    assert res.items[1].tolist() == run.split.item_ids[popular].tolist()
    with pytest.raises(UnknownUserError, match="1000000"):
        rec.recommend([known, 10**6], k=4, unknown="error")


def test_tiles_product_is_refused(neumf_artifact: Path) -> None:
    with pytest.raises(ConfigError, match="model form"):
        TopKRecommender.load(neumf_artifact, product="tiles")


@pytest.mark.parametrize("fmt, quant", [("onnx", "none"), ("npz", "int8"), ("torchscript", "fp16")])
def test_dot_only_exports_are_refused(neumf_run: Path, tmp_path: Path, fmt, quant) -> None:
    out = tmp_path / "a"
    with pytest.raises(ConfigError, match=REFUSAL) as err:
        export_run(neumf_run, out, format=fmt, quantisation=quant)
    assert "--format npz" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_export_refusal_and_recommend(neumf_run, neumf_artifact, tmp_path, capsys) -> None:
    out = tmp_path / "onnx"
    code, _, err = run_cli(["export", neumf_run, "--out", out, "--format", "onnx"], capsys)
    assert code == 2 and REFUSAL in err and "Traceback" not in err and not out.exists()
    code, out_text, _ = run_cli(["recommend", neumf_artifact, "--user", "0", "--user", "999",
                                 "-k", "3"], capsys)  # fmt: skip
    rows = [json.loads(line) for line in out_text.splitlines()]
    assert code == 0 and [r["fallback"] for r in rows] == [False, True]
    assert all(len(r["items"]) == 3 for r in rows)


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_http_app_serves_the_model_form(neumf_artifact: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from recpress.serving.app import create_app

    client = TestClient(create_app(neumf_artifact, max_k=20))
    meta = client.get("/metadata").json()
    assert meta["manifest"]["form"] == "model"
    body = client.post("/recommend", json={"users": [0, 5, 999], "k": 4}).json()
    assert [r["fallback"] for r in body["results"]] == [False, False, True]
    assert client.get("/recommend", params={"user": "3", "k": 2}).status_code == 200


def test_profile_of_a_model_form_run(neumf_run: Path) -> None:
    prof = profile_run(neumf_run, write=False, n_requests=5, warmup=1)
    assert prof["form"] == "model" and prof["serving_path"]["product"] == "rows"
    assert prof["parameters"] == load_run(neumf_run).model.num_parameters()
    assert prof["flops_per_user"] > 2 * 8 * prof["n_items"]  # the MLP costs more than a dot


def test_tampered_model_weights_are_detected(neumf_artifact: Path, tmp_path: Path) -> None:
    import shutil

    art = tmp_path / "art"
    shutil.copytree(neumf_artifact, art)
    data = bytearray((art / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (art / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for model.safetensors"):
        load_artifact(art)
    # weights of another architecture: refused by the model, not silently mis-served
    shutil.copytree(neumf_artifact, tmp_path / "other")
    mpath = tmp_path / "other" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["model_params"]["layers"] = 1
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not fit model 'neumf'"):
        load_artifact(tmp_path / "other")


def test_old_dot_manifest_without_form_still_loads(small_artifact: Path, small_model) -> None:
    mpath = small_artifact / "manifest.json"
    manifest = json.loads(mpath.read_text())
    assert manifest.pop("form") == "dot"
    mpath.write_text(json.dumps(manifest))  # as written before model form existed
    art = load_artifact(small_artifact)
    assert art.form == "dot" and art.model is None
    assert torch.equal(art.item_emb, small_model.item_emb.weight.detach())
    items, _ = TopKRecommender(art).recommend(["u0"], k=3)
    assert items.shape == (1, 3)
