"""Named datasets: lookup, the TD split, its rebuild from users.dat, downloads, errors."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recpress.data import (
    DATASETS,
    dataset_stats,
    download_file,
    find_dataset,
    list_datasets,
    load_dataset,
    load_split,
    read_pairs_tsv,
    rebuild_td_interactions,
    registry,
)
from recpress.errors import ConfigError, DataError


def test_td_split_loads(shared_data):
    s = load_split("citeulike-t-td")
    assert s.protocol == "fixed"
    assert s.stats() == {
        "users": 5219,
        "items": 25181,
        "train": 115_142,
        "valid": 5219,
        "test": 5219,
    }
    assert (np.diff(s.valid.indptr) == 1).all() and (np.diff(s.test.indptr) == 1).all()
    assert s.train.multiply(s.valid).nnz == 0 and s.train.multiply(s.test).nnz == 0
    assert load_split("citeulike-t-td").fingerprint() == s.fingerprint()
    inter = load_dataset("citeulike-t-td")
    assert (inter.n_users, inter.n_items, len(inter)) == (5219, 25181, 125_580)


def test_td_rebuild_matches_tsv(data_root):
    rebuilt = rebuild_td_interactions(data_root / "citeulike-t" / "users.dat")
    assert (rebuilt.n_users, rebuilt.n_items, len(rebuilt)) == (5219, 25181, 125_580)
    folder = data_root / "citeulike-t" / "kd_split_td_kdd21"
    tsv = np.concatenate(
        [read_pairs_tsv(folder / f"{p}.tsv").to_numpy() for p in ("train", "valid", "test")]
    )
    key_tsv = np.sort(tsv[:, 0] * 25181 + tsv[:, 1])
    key_rebuilt = np.sort(rebuilt.users * 25181 + rebuilt.items)
    assert np.array_equal(key_tsv, key_rebuilt)


def test_td_fallback_rebuilds_from_users_dat(data_root, monkeypatch, tmp_path):
    # a data root holding only citeulike-t/users.dat: the TD ids are rebuilt, split is seeded LOO
    root = tmp_path / "data"
    (root / "citeulike-t").mkdir(parents=True)
    shutil.copy(data_root / "citeulike-t" / "users.dat", root / "citeulike-t" / "users.dat")
    monkeypatch.setenv("RECPRESS_DATA", str(root))
    monkeypatch.setenv("RECPRESS_CACHE", str(tmp_path / "cache"))
    assert find_dataset("citeulike-t-td") is None
    s = load_split("citeulike-t-td", seed=0)
    assert (s.n_users, s.n_items, s.valid.nnz, s.test.nnz) == (5219, 25181, 5219, 5219)
    assert s.train.nnz == 115_142


def test_named_datasets_and_stats(shared_data):
    st = dataset_stats("citeulike-a")
    assert (st["users"], st["items"], st["interactions"]) == (5551, 16980, 204_986)
    assert st["density"] == pytest.approx(204_986 / (5551 * 16980))
    t = load_dataset("citeulike-t")
    assert (t.n_users, t.n_items, len(t)) == (7947, 25584, 134_860)
    rows = {r["name"]: r for r in list_datasets()}
    assert set(rows) == set(DATASETS)
    assert rows["ml-100k"]["available"] and rows["ml-100k"]["interactions"] == 100_000
    assert rows["citeulike-t-td"]["users"] == 5219
    assert not rows["gowalla"]["available"] and "interactions" not in rows["gowalla"]


def test_explicit_path_wins(shared_data, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "users.dat").write_text("2 0 1\n3 0 1 2\n")
    inter = load_dataset("citeulike-a", path=d)
    assert len(inter) == 5
    assert len(load_dataset("citeulike-a", path=d / "users.dat")) == 5


def test_unknown_name():
    with pytest.raises(ConfigError) as ei:
        load_dataset("netflix")
    msg = str(ei.value)
    assert "netflix" in msg and "ml-100k" in msg and "citeulike-t-td" in msg
    with pytest.raises(ConfigError, match="bogus"):
        load_split("ml-100k", protocol="bogus", path="/nonexistent", download=False)


def test_missing_without_download(isolated):
    with pytest.raises(DataError) as ei:
        load_dataset("ml-1m", download=False)
    msg = str(ei.value)
    assert "ratings.dat" in msg and "ml-1m.zip" in msg and str(isolated / "ml-1m") in msg
    assert "RECPRESS_DATA" in msg


def _serve(tmp_path: Path, content: bytes) -> tuple[str, str]:
    src = tmp_path / "upstream.dat"
    src.write_bytes(content)
    return src.as_uri(), hashlib.sha256(content).hexdigest()


def test_download_file_url(tmp_path):
    url, sha = _serve(tmp_path, b"2 0 1\n")
    dest = tmp_path / "out" / "users.dat"
    download_file(url, dest, sha, progress=False)
    assert dest.read_bytes() == b"2 0 1\n"
    with pytest.raises(DataError, match="sha256 mismatch") as ei:
        download_file(url, tmp_path / "out2" / "users.dat", "0" * 64, progress=False)
    assert "users.dat" in str(ei.value)
    assert list((tmp_path / "out2").iterdir()) == []  # nothing half-written


def test_download_zip_member(tmp_path):
    z = tmp_path / "ml.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t2\t5\t100\n")
    dest = tmp_path / "got" / "u.data"
    sha = hashlib.sha256(b"1\t2\t5\t100\n").hexdigest()
    download_file(z.as_uri(), dest, sha, member="ml-100k/u.data", progress=False)
    assert dest.read_text() == "1\t2\t5\t100\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["u.data"]


def test_registry_download_then_cache(isolated, monkeypatch, tmp_path):
    url, sha = _serve(tmp_path, b"2 0 1\n1 1\n")
    spec = registry.DatasetSpec(
        "citeulike-a",
        "test",
        "citeulike-a",
        (registry.RemoteFile("users.dat", url, sha),),
        "users_dat",
    )
    monkeypatch.setitem(registry.DATASETS, "citeulike-a", spec)
    inter = load_dataset("citeulike-a", progress=False)
    assert len(inter) == 3
    assert (isolated / "citeulike-a" / "users.dat").is_file()
    bad = registry.DatasetSpec(
        "citeulike-a",
        "test",
        "citeulike-a",
        (registry.RemoteFile("users.dat", url, "ab" * 32),),
        "users_dat",
    )
    (isolated / "citeulike-a" / "users.dat").unlink()
    monkeypatch.setitem(registry.DATASETS, "citeulike-a", bad)
    with pytest.raises(DataError, match="sha256"):
        load_dataset("citeulike-a", progress=False)
    assert not (isolated / "citeulike-a" / "users.dat").exists()


def test_offline_message(isolated, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataError) as ei:
        load_dataset("ml-100k", progress=False)
    msg = str(ei.value)
    assert "could not download https://files.grouplens.org/datasets/movielens/ml-100k.zip" in msg
    assert "offline" in msg and str(isolated / "ml-100k" / "u.data") in msg
    assert "ml-100k/u.data" in msg  # which member of the zip
    assert list((isolated / "ml-100k").iterdir()) == []


def test_lightgcn_fixed_split(tmp_path, isolated):
    d = tmp_path / "gw"
    d.mkdir()
    (d / "train.txt").write_text("0 0 1 2\n1 1 2\n2 0 3\n")
    (d / "test.txt").write_text("0 3\n1 0\n2 1 2\n")
    s = load_split("gowalla", path=d)
    assert s.protocol == "fixed" and s.valid.nnz == 0
    assert (s.n_users, s.n_items, s.train.nnz, s.test.nnz) == (3, 4, 7, 4)
    assert len(load_dataset("gowalla", path=d)) == 11
    loo = load_split("gowalla", protocol="loo", path=d)
    assert loo.valid.nnz == 3
    with pytest.raises(ConfigError):
        load_split("ml-100k", protocol="fixed", path=d)
