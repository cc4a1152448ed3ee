"""Named datasets: where their files live, where to download them, and how to load them.

Lookup order for a dataset's folder: the explicit ``path`` argument, ``$RECPRESS_DATA/<folder>``,
then ``<cache>/<folder>`` where cache is ``$RECPRESS_CACHE`` or the platform cache dir
(``~/.cache/recpress`` on Linux). Missing files are downloaded (into ``path`` when given,
else the cache) with a sha256 check where the hash is known, a progress bar and an atomic
rename. Offline, a :class:`DataError` says which file to place where and where to get it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recpress.data.cleaning import build_interactions
from recpress.data.readers import read_lightgcn, read_movielens, read_pairs_tsv, read_users_dat
from recpress.data.splits import PROTOCOLS, split, split_from_parts
from recpress.data.synthetic import GOWALLA_SHAPE, parse_synthetic_name, synthetic_interactions
from recpress.data.types import Interactions, Split
from recpress.errors import ConfigError, DataError, unknown_name
from recpress.fileio import sha256_file

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "RemoteFile",
    "cache_dir",
    "dataset_stats",
    "download_file",
    "find_dataset",
    "list_datasets",
    "load_dataset",
    "load_split",
    "rebuild_td_interactions",
]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder and where to get it.

    ``member`` is the path inside a zip archive at ``url``; ``sha256`` is of the final file.
    """

    name: str
    url: str | None
    sha256: str | None = None
    member: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry. ``folder`` is relative to a data root (``$RECPRESS_DATA``, cache)."""

    name: str
    description: str
    folder: str
    files: tuple[RemoteFile, ...]
    kind: str  # users_dat | movielens | lightgcn | td | synthetic
    fixed_split: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)


_GL = "https://files.grouplens.org/datasets/movielens"
_LGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data"
_CUA = (
    "https://raw.githubusercontent.com/js05212/citeulike-a/91b603922d7f2d3db18071d4798bf78c9c5d1680"
)
_CUT = (
    "https://raw.githubusercontent.com/js05212/citeulike-t/4f103c6ea0fe407b23be230837b65517e613c34a"
)


def _lightgcn(name: str, title: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        description=f"{title} (LightGCN release, fixed train/test split; no validation part)",
        folder=name,
        files=(
            RemoteFile("train.txt", f"{_LGCN}/{name}/train.txt"),
            RemoteFile("test.txt", f"{_LGCN}/{name}/test.txt"),
        ),
        kind="lightgcn",
        fixed_split=True,
    )


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "citeulike-a",
            "CiteULike-a bookmarks: 5,551 users x 16,980 articles (not the KD papers' variant)",
            "citeulike-a",
            (
                RemoteFile(
                    "users.dat",
                    f"{_CUA}/users.dat",
                    "53211d82c14ff261e595634d285ed9fbf8049cf81dcb751d924d695b9612a02c",
                ),
            ),
            "users_dat",
        ),
        DatasetSpec(
            "citeulike-t",
            "CiteULike-t bookmarks: 7,947 users x 25,584 articles (raw; KD papers keep >= 5)",
            "citeulike-t",
            (
                RemoteFile(
                    "users.dat",
                    f"{_CUT}/users.dat",
                    "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf",
                ),
            ),
            "users_dat",
        ),
        DatasetSpec(
            "citeulike-t-td",
            "Topology Distillation (KDD'21) leave-one-out split of CiteULike-t: 5,219 x 25,181",
            "citeulike-t/kd_split_td_kdd21",
            (
                RemoteFile(
                    "train.tsv",
                    None,
                    "8fe560890fc0768b6f89ee38826845eb6ac5a3124353f5aa60acad11ef9752ff",
                ),
                RemoteFile(
                    "valid.tsv",
                    None,
                    "718be04032601cd229d72c9737cee38b95ccdc70ca51fcc56dda197802632b4e",
                ),
                RemoteFile(
                    "test.tsv",
                    None,
                    "422901887e8e2bb401bf9eb2d0d427df824f600d60798dfad28b130dc82648f9",
                ),
            ),
            "td",
            fixed_split=True,
        ),
        DatasetSpec(
            "ml-100k",
            "MovieLens 100K ratings (943 x 1,682); min_rating=4 keeps ratings >= 4",
            "ml-100k",
            (
                RemoteFile(
                    "u.data",
                    f"{_GL}/ml-100k.zip",
                    "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                    member="ml-100k/u.data",
                ),
            ),
            "movielens",
        ),
        DatasetSpec(
            "ml-1m",
            "MovieLens 1M ratings (6,040 x 3,706); min_rating=4 keeps ratings >= 4",
            "ml-1m",
            (RemoteFile("ratings.dat", f"{_GL}/ml-1m.zip", member="ml-1m/ratings.dat"),),
            "movielens",
        ),
        _lightgcn("gowalla", "Gowalla check-ins"),
        _lightgcn("yelp2018", "Yelp 2018 reviews"),
        _lightgcn("amazon-book", "Amazon-book reviews"),
        DatasetSpec(
            "synthetic-gowalla",
            "generated with Gowalla's shape (29,858 x 40,981 x 1,027,370, >= 10 items per "
            "user), power-law popularity, latent factors; split 60/20/20 per user",
            "",
            (),
            "synthetic",
            defaults={
                "n_users": GOWALLA_SHAPE[0],
                "n_items": GOWALLA_SHAPE[1],
                "n_interactions": GOWALLA_SHAPE[2],
                "min_per_user": 10,
                "seed": 0,
                "protocol": "ratio",
            },
        ),
    )
}

#: generator arguments a synthetic spec's ``defaults`` may hold (the rest are split settings)
_SYNTHETIC_KEYS = ("n_users", "n_items", "n_interactions", "min_per_user", "seed")


def _synthetic_spec(name: str, sizes: dict[str, int]) -> DatasetSpec:
    """The registry entry of a ``synthetic:UxIxN[:seed]`` name."""
    low = max(1, min(5, sizes["n_interactions"] // max(sizes["n_users"], 1)))
    return DatasetSpec(
        name,
        "generated: power-law popularity, latent factors; split 60/20/20 per user",
        "",
        (),
        "synthetic",
        defaults={"min_per_user": low, "seed": 0, **sizes, "protocol": "ratio"},
    )


def _load_synthetic(spec: DatasetSpec, path, clean: dict[str, Any]) -> Interactions:
    if path is not None:
        raise ConfigError(
            f"{spec.name} is generated, it reads no files; drop data.path, or name the real "
            "dataset (e.g. --dataset gowalla --data-path DIR)",
            field="path",
        )
    if any(v for v in clean.values()):
        raise ConfigError(f"{spec.name} is generated; it takes no cleaning options", "dataset")
    args = {k: v for k, v in spec.defaults.items() if k in _SYNTHETIC_KEYS}
    return synthetic_interactions(**args, name=spec.name)


def _spec(name: str) -> DatasetSpec:
    sizes = parse_synthetic_name(name)
    if sizes is not None:
        return _synthetic_spec(name, sizes)
    if name not in DATASETS:
        raise unknown_name("dataset", name, list(DATASETS), field="dataset")
    return DATASETS[name]


def cache_dir() -> Path:
    """Download cache root: ``$RECPRESS_CACHE`` or the platform's user cache dir + recpress."""
    env = os.environ.get("RECPRESS_CACHE")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
        return base / "recpress" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "recpress"
    return Path(os.environ.get("XDG_CACHE_HOME", home / ".cache")) / "recpress"


def _candidates(spec: DatasetSpec, path: str | Path | None) -> list[Path]:
    if path is not None:
        p = Path(path).expanduser()
        return [p.parent if p.is_file() else p]
    out = []
    env = os.environ.get("RECPRESS_DATA")
    if env:
        out.append(Path(env).expanduser() / spec.folder)
    out.append(cache_dir() / spec.folder)
    return out


def find_dataset(name: str, path: str | Path | None = None) -> Path | None:
    """Folder holding all of the dataset's files, following the lookup order; None if absent."""
    spec = _spec(name)
    if spec.kind == "synthetic":  # generated, no folder
        return None
    for d in _candidates(spec, path):
        if all((d / f.name).is_file() for f in spec.files):
            return d
    return None


def _where_msg(spec: DatasetSpec, f: RemoteFile, dest: Path) -> str:
    src = f" (from {f.url}" + (f", file {f.member} inside the zip)" if f.member else ")")
    return (
        f"place {f.name}{src if f.url else ''} at {dest}, or set RECPRESS_DATA to a folder "
        f"holding {spec.folder}/{f.name}"
    )


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    member: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` atomically (temp file + rename), checking sha256 if given.

    With `member`, `url` is a zip archive and `dest` receives that member. Network failure or a
    checksum mismatch -> DataError; nothing half-written is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    extracted: Path | None = None
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length") if resp.headers else None
                _copy_with_progress(resp, out, int(total) if total else None, dest.name, progress)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(
                f"could not download {url} ({reason}). You may be offline: download it by hand "
                f"and place {dest.name}"
                + (f" (the file {member} inside the zip)" if member else "")
                + f" at {dest}",
                path=dest,
            ) from None
        final = tmp
        if member is not None:
            try:
                with zipfile.ZipFile(tmp) as zf, zf.open(member) as src:
                    fd2, ex_name = tempfile.mkstemp(
                        prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
                    )
                    extracted = Path(ex_name)
                    with os.fdopen(fd2, "wb") as out2:
                        shutil.copyfileobj(src, out2)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise DataError(
                    f"downloaded archive {url} is not a zip holding {member}: {exc}", path=dest
                ) from None
            final = extracted
        if sha256 is not None:
            digest = sha256_file(final)
            if digest != sha256.lower():
                raise DataError(
                    f"sha256 mismatch for {url}: got {digest}, expected {sha256}. The download "
                    "is corrupt or the upstream file changed; retry, or place a verified copy "
                    f"at {dest}",
                    path=dest,
                )
        os.replace(final, dest)
        return dest
    finally:
        for p in (tmp, extracted):
            if p is not None and p.exists():
                p.unlink()


def _copy_with_progress(resp, out, total: int | None, label: str, progress: bool) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(f"download {label}", total=total)
        while True:
            chunk = resp.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
            bar.update(task, advance=len(chunk))


def _ensure(spec: DatasetSpec, path: str | Path | None, download: bool, progress: bool) -> Path:
    """Folder with all files of `spec`, downloading missing ones if allowed."""
    found = find_dataset(spec.name, path)
    if found is not None:
        return found
    target = _candidates(spec, path)[0] if path is not None else cache_dir() / spec.folder
    for f in spec.files:
        dest = target / f.name
        if dest.is_file():
            continue
        if f.url is None or not download:
            why = "no download URL is known" if f.url is None else "download=False"
            raise DataError(
                f"dataset {spec.name!r}: file {f.name} not found ({why}); "
                + _where_msg(spec, f, dest)
            )
        download_file(f.url, dest, f.sha256, f.member, progress=progress)
    return target


def rebuild_td_interactions(users_dat: str | Path) -> Interactions:
    """CiteULike-t users with >= 5 items, ids as in the Topology Distillation split.

    Rule (citeulike-t/SOURCE.md): keep lines with count >= 5; they become users 0.. in file
    order; items are numbered in order of first appearance reading kept lines left to right.
    ``user_ids`` / ``item_ids`` hold the original users.dat line numbers / article ids.
    """
    frame = read_users_dat(users_dat)
    users = frame["user"].to_numpy()
    counts = np.bincount(users)
    frame = frame.loc[counts[users] >= 5].reset_index(drop=True)
    return build_interactions(frame, "citeulike-t-td", order="appearance")


def _td_from_tsv(folder: Path) -> tuple[Interactions, np.ndarray]:
    parts = [read_pairs_tsv(folder / n) for n in ("train.tsv", "valid.tsv", "test.tsv")]
    users = np.concatenate([p["user"].to_numpy() for p in parts])
    items = np.concatenate([p["item"].to_numpy() for p in parts])
    label = np.repeat(np.arange(3, dtype=np.int8), [len(p) for p in parts])
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    inter = Interactions(
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        n_users=n_users,
        n_items=n_items,
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        name="citeulike-t-td",
    )
    return inter, label


def _load_td(path, download, progress, seed) -> tuple[Interactions, np.ndarray | None]:
    found = find_dataset("citeulike-t-td", path)
    if found is not None:
        return _td_from_tsv(found)
    # No tsv files: rebuild ids from citeulike-t users.dat; the valid/test choice is a seeded
    # LOO and is NOT the authors' random choice (their split ships only as pickles).
    base = _ensure(DATASETS["citeulike-t"], None, download, progress)
    return rebuild_td_interactions(base / "users.dat"), None


_LOADER_KEYS = ("min_rating", "user_k", "item_k")


def _read(spec: DatasetSpec, folder: Path) -> tuple[pd.DataFrame, np.ndarray | None]:
    if spec.kind == "users_dat":
        return read_users_dat(folder / spec.files[0].name), None
    if spec.kind == "movielens":
        return read_movielens(folder / spec.files[0].name), None
    if spec.kind == "lightgcn":
        tr, te = read_lightgcn(folder / "train.txt"), read_lightgcn(folder / "test.txt")
        label = np.repeat(np.array([0, 2], dtype=np.int8), [len(tr), len(te)])
        return pd.concat([tr, te], ignore_index=True), label
    raise AssertionError(spec.kind)


def _load(
    name: str, path, download: bool, progress: bool, seed: int = 0, **clean: Any
) -> tuple[Interactions, np.ndarray | None]:
    spec = _spec(name)
    bad = set(clean) - set(_LOADER_KEYS)
    if bad:
        raise ConfigError(
            f"unknown dataset option(s): {', '.join(sorted(bad))}; known: "
            f"{', '.join(_LOADER_KEYS)}",
            field="dataset",
        )
    if spec.kind == "td":
        if any(v for v in clean.values()):
            raise ConfigError(
                "citeulike-t-td is a fixed split; it takes no cleaning options", field="dataset"
            )
        return _load_td(path, download, progress, seed)
    if spec.kind == "synthetic":
        return _load_synthetic(spec, path, clean), None
    folder = _ensure(spec, path, download, progress)
    frame, label = _read(spec, folder)
    opts = {**spec.defaults, **clean}
    if label is not None and any(opts.get(k) for k in _LOADER_KEYS):
        raise ConfigError(
            f"{name} ships a fixed split; cleaning options would break it", field="dataset"
        )
    if label is not None:
        dup = frame.duplicated(subset=["user", "item"]).to_numpy()
        frame, label = frame.loc[~dup].reset_index(drop=True), label[~dup]
    inter = build_interactions(
        frame,
        name,
        min_rating=opts.get("min_rating"),
        user_k=int(opts.get("user_k") or 0),
        item_k=int(opts.get("item_k") or 0),
    )
    return inter, label


def load_dataset(
    name: str,
    path: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    **clean: Any,
) -> Interactions:
    """Load a named dataset as cleaned :class:`Interactions` (all pairs, every part).

    Options: ``min_rating`` (ml-100k/ml-1m binarisation; None keeps every rating),
    ``user_k`` / ``item_k`` (iterative k-core). For ``citeulike-t-td`` the ids are the split's.
    """
    return _load(name, path, download, progress, **clean)[0]


def load_split(
    name: str,
    protocol: str | None = None,
    seed: int = 0,
    path: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    **opts: Any,
) -> Split:
    """Split of a named dataset; ``fixed`` (the published split) where one exists, else ``loo``.

    For ``citeulike-t-td`` without its tsv files, the ids are rebuilt from citeulike-t users.dat
    and the protocol falls back to a seeded ``loo`` (see :func:`rebuild_td_interactions`).
    """
    spec = _spec(name)
    clean = {k: opts.pop(k) for k in _LOADER_KEYS if k in opts}
    protocol = protocol or spec.defaults.get("protocol") or ("fixed" if spec.fixed_split else "loo")
    if protocol not in PROTOCOLS:  # fail before reading any file
        raise unknown_name("split protocol", protocol, PROTOCOLS, field="protocol")
    if protocol == "fixed" and not spec.fixed_split:
        raise ConfigError(
            f"dataset {name!r} has no published split; use a protocol such as "
            "'loo', 'ratio' or 'temporal'",
            field="protocol",
        )
    inter, label = _load(name, path, download, progress, seed=seed, **clean)
    if protocol == "fixed":
        if label is None:  # TD split rebuilt from users.dat
            return split(inter, "loo", seed=seed)
        if opts:
            raise ConfigError(
                f"unknown option(s) for a fixed split: {', '.join(opts)}", field="protocol"
            )
        return split_from_parts(inter, label, "fixed")
    return split(inter, protocol, seed=seed, **opts)


def _stats(inter: Interactions) -> dict[str, Any]:
    n = len(inter)
    return {
        "users": inter.n_users,
        "items": inter.n_items,
        "interactions": n,
        "density": n / (inter.n_users * inter.n_items) if n else 0.0,
    }


def dataset_stats(
    name: str, path: str | Path | None = None, download: bool = False, **clean: Any
) -> dict[str, Any]:
    """users, items, interactions, density (interactions / (users * items)) of a dataset."""
    return _stats(load_dataset(name, path=path, download=download, progress=False, **clean))


def _synthetic_row(spec: DatasetSpec) -> dict[str, Any]:
    d = spec.defaults
    return {
        "name": spec.name,
        "description": spec.description,
        "available": True,
        "path": None,
        "urls": [],
        "users": d["n_users"],
        "items": d["n_items"],
        "interactions": d["n_interactions"],
        "density": d["n_interactions"] / (d["n_users"] * d["n_items"]),
    }


def list_datasets(with_stats: bool = True) -> list[dict[str, Any]]:
    """One dict per registered dataset: name, description, available, path, urls and, for
    locally available ones, statistics (users, items, interactions, density)."""
    out: list[dict[str, Any]] = []
    for spec in DATASETS.values():
        if spec.kind == "synthetic":
            out.append(_synthetic_row(spec))
            continue
        found = find_dataset(spec.name)
        if found is None and spec.kind == "td":
            base = find_dataset("citeulike-t")
            rebuilt = base is not None
        else:
            rebuilt = False
        row: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "available": found is not None or rebuilt,
            "path": str(found) if found is not None else None,
            "urls": [f.url for f in spec.files if f.url],
        }
        if with_stats and row["available"]:
            try:
                row.update(dataset_stats(spec.name))
            except DataError as exc:
                row["available"] = False
                row["error"] = str(exc)
        out.append(row)
    return out
