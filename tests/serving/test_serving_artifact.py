"""Artifacts: round trip, quantisation, clear errors for missing / tampered / malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from recpress.serving.artifact import (
    Artifact,
    ArtifactError,
    dequantise_int8,
    load_artifact,
    quantise_int8,
    sha256_file,
)


def test_round_trip_is_exact(small_artifact: Path, small_model, small_split) -> None:
    art = load_artifact(small_artifact)
    assert torch.equal(art.user_emb, small_model.user_emb.weight.detach())
    assert torch.equal(art.item_emb, small_model.item_emb.weight.detach())
    assert art.user_ids.tolist() == small_split.user_ids.tolist()
    assert art.item_ids.tolist() == small_split.item_ids.tolist()
    assert np.array_equal(art.seen_indptr, small_split.train.indptr)
    assert np.array_equal(art.seen_indices, small_split.train.indices)
    assert art.popularity.sum() == small_split.train.nnz
    m = art.manifest
    assert m["dataset"]["fingerprint"] == small_split.fingerprint()
    assert (m["n_users"], m["n_items"], m["dim"], m["quantisation"]) == (40, 60, 8, "none")
    assert m["metrics"]["test"]["recall@50"] == 0.5
    assert set(m["files"]) == {"weights.safetensors", "ids.npz", "seen.npz"}


def test_existing_output_is_refused(small_artifact: Path, small_model, small_split) -> None:
    with pytest.raises(ArtifactError, match="exists"):
        Artifact.from_model(small_model, small_split).save(small_artifact)


@pytest.mark.parametrize("quant", ["fp16", "int8"])
def test_quantised_round_trip(tmp_path: Path, small_model, small_split, quant: str) -> None:
    art = Artifact.from_model(small_model, small_split)
    art.save(tmp_path / quant, quantisation=quant)
    loaded = load_artifact(tmp_path / quant)
    assert loaded.quantisation == quant
    err = (loaded.item_emb - small_model.item_emb.weight.detach()).abs().max()
    bound = small_model.item_emb.weight.abs().max() * (1e-3 if quant == "fp16" else 1 / 254 + 1e-6)
    assert err <= bound
    assert torch.equal(loaded.item_emb, art.quantised(quant).item_emb)
    raw = load_file(str(tmp_path / quant / "weights.safetensors"))
    if quant == "int8":
        assert raw["item_emb.q"].dtype == torch.int8 and raw["item_emb.scale"].shape == (60,)
    else:
        assert raw["item_emb"].dtype == torch.float16


def test_int8_per_row_quantisation_known_values() -> None:
    mat = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-254.0, 127.0, 1.0]])
    q, s = quantise_int8(mat)
    assert q.dtype == torch.int8 and q[0].tolist() == [127, -64, 32] and q[1].tolist() == [0] * 3
    assert s.tolist() == pytest.approx([1 / 127, 1.0, 2.0])
    assert torch.allclose(dequantise_int8(q, s)[2], torch.tensor([-254.0, 128.0, 0.0]))


def _rewrite_listed(path: Path, name: str) -> None:
    """Re-record a file's checksum in the manifest (a consistent-looking but malformed folder)."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = {
        "sha256": sha256_file(path / name),
        "bytes": (path / name).stat().st_size,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_changed_bytes_fail_the_checksum(small_artifact: Path) -> None:
    p = small_artifact / "weights.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for weights.safetensors"):
        load_artifact(small_artifact)


def test_missing_files(small_artifact: Path) -> None:
    (small_artifact / "seen.npz").unlink()
    with pytest.raises(ArtifactError, match="missing file seen.npz"):
        load_artifact(small_artifact)
    (small_artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="missing manifest.json"):
        load_artifact(small_artifact)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(small_artifact / "nope")


def test_wrong_shapes_are_reported(small_artifact: Path) -> None:
    w = small_artifact / "weights.safetensors"
    tensors = load_file(str(w))
    tensors["item_emb"] = tensors["item_emb"][:-1].contiguous()
    save_file(tensors, str(w))
    _rewrite_listed(small_artifact, "weights.safetensors")
    with pytest.raises(ArtifactError, match=r"item_emb has torch.float32 \(59, 8\).*\(60, 8\)"):
        load_artifact(small_artifact)


def test_bad_seen_indices_are_reported(small_artifact: Path) -> None:
    p = small_artifact / "seen.npz"
    with np.load(p) as z:
        arrays = dict(z)
    arrays["indices"][0] = 10_000
    np.savez(p, **arrays)
    _rewrite_listed(small_artifact, "seen.npz")
    with pytest.raises(ArtifactError, match="outside"):
        load_artifact(small_artifact)


def test_pickled_arrays_are_refused_without_running_them(small_artifact: Path, tmp_path) -> None:
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    p = small_artifact / "ids.npz"
    with np.load(p) as z:
        arrays = dict(z)
    obj = np.empty(40, dtype=object)
    obj[:] = [Evil()] * 40
    arrays["user_ids"] = obj
    np.savez(p, **arrays)
    _rewrite_listed(small_artifact, "ids.npz")
    with pytest.raises(ArtifactError, match="without pickle"):
        load_artifact(small_artifact)
    assert not marker.exists()


def test_bad_manifest(small_artifact: Path) -> None:
    m = small_artifact / "manifest.json"
    good = json.loads(m.read_text())
    m.write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(small_artifact)
    m.write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_artifact(small_artifact)
    m.write_text(json.dumps({**good, "n_items": 61}))
    with pytest.raises(ArtifactError, match=r"\(61, 8\)"):
        load_artifact(small_artifact)
    files = dict(good["files"])
    files["../escape"] = files.pop("ids.npz")
    m.write_text(json.dumps({**good, "files": files}))
    with pytest.raises(ArtifactError, match="ids.npz"):
        load_artifact(small_artifact)
