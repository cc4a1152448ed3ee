"""Artifacts: a trained recommender as plain data (no pickle), checked on load.

An artifact is a folder in one of two forms (manifest key ``form``; a manifest without it is
"dot", as written before model form existed):

* ``"dot"``: models whose scores are ``U @ I.T`` (or rank as one: ``dot_form()``), served from
  the two embedding matrices.
* ``"model"``: models with no dot-product form (NeuMF): the model's own weights, rebuilt from
  its registered name and constructor parameters and served with its ``score`` method. No
  quantisation and no exported scorers.

Files::

    manifest.json        format + version, form, model name and params, sizes, dtype /
                         quantisation, sha256 and byte size of every other file, dataset
                         fingerprint, metrics, config
    weights.safetensors  dot form. fp32 / fp16: ``user_emb`` (n_users, d), ``item_emb``
                         (n_items, d); int8 per-row: ``user_emb.q`` int8 + ``user_emb.scale``
                         fp32 (n_users,), same for ``item_emb`` (row r = q[r] * scale[r])
    model.safetensors    model form: the model's fp32 ``state_dict``
    ids.npz              original id maps ``user_ids`` (n_users,), ``item_ids`` (n_items,)
    seen.npz             training CSR of seen items: ``indptr`` (n_users + 1,), ``indices``;
                         ``popularity`` (n_items,) training counts for the unknown-user fallback
    scorer.onnx / scorer.torchscript.pt   optional exported scorers, dot form (checksummed)

Loading (`load_artifact`) never executes code from the folder: json, safetensors and
``np.load(allow_pickle=False)`` only; a model-form model is built by `recpress.models` from
the manifest's name and params (the training CSR is its split's training part), then given the
stored weights. Every listed file must exist and match its sha256, every array must have the
shape the manifest announces; otherwise `ArtifactError` says what and where.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recpress.errors import ConfigError, DataError
from recpress.fileio import sha256_file
from recpress.models import Recommender

FORMAT = "recpress-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
MODEL_WEIGHTS = "model.safetensors"
IDS = "ids.npz"
SEEN = "seen.npz"
ONNX_FILE = "scorer.onnx"
TORCHSCRIPT_FILE = "scorer.torchscript.pt"
QUANTISATIONS = ("none", "fp16", "int8")
#: "dot": embedding matrices, scores U @ I.T; "model": the model's weights, scored by the model
FORMS = ("dot", "model")


class ArtifactError(DataError):
    """An artifact folder is missing, malformed or tampered with."""


# -- quantisation ------------------------------------------------------------------------------
def quantise_int8(mat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: scale_r = max|row_r| / 127, q = round(row / scale) in [-127, 127].

    Rows that are all zero get scale 1 (q = 0). Returns (q int8 (n, d), scale fp32 (n,)).
    """
    mat = mat.detach().float()
    scale = mat.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(mat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantise_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def quantise(mat: torch.Tensor, quantisation: str) -> dict[str, torch.Tensor]:
    """Stored tensors of one embedding matrix under `quantisation` (keys relative to its name)."""
    if quantisation == "none":
        return {"": mat.detach().float().contiguous()}
    if quantisation == "fp16":
        return {"": mat.detach().half().contiguous()}
    if quantisation == "int8":
        q, s = quantise_int8(mat)
        return {".q": q, ".scale": s}
    raise ArtifactError(f"unknown quantisation {quantisation!r}; use one of {QUANTISATIONS}")


def roundtrip(mat: torch.Tensor, quantisation: str) -> torch.Tensor:
    """`mat` after quantising and dequantising (what a served artifact will use), fp32."""
    stored = quantise(mat, quantisation)
    if quantisation == "int8":
        return dequantise_int8(stored[".q"], stored[".scale"])
    return stored[""].float()


def model_form_refusal(model: str, what: str) -> str:
    """The one-line reason a model-form artifact of `model` cannot have `what`."""
    return (
        f"{what} needs a dot-product model, but {model!r} is exported in model form (its scores "
        "are not U @ I.T, so there are no embedding matrices to write as a scorer or to "
        "quantise); use --format npz without --quantise"
    )


# -- the in-memory object ----------------------------------------------------------------------
@dataclass
class Artifact:
    """A loaded (or about to be saved) artifact; embeddings are fp32 (dequantised) here.

    Attributes:
        user_emb, item_emb: fp32 tensors (n_users, d), (n_items, d); None in model form.
        user_ids, item_ids: numpy arrays of original ids (int64 or str), one per row.
        seen_indptr, seen_indices: int64 CSR of each user's training items (internal ids).
        popularity: float32 (n_items,) training interaction counts.
        manifest: the metadata dict (as in manifest.json).
        path: where it was loaded from (None when built in memory).
        model: model form: the trained `Recommender` whose ``score`` serves it (loaded: built on
            the CPU, eval mode); None in dot form.
    """

    user_emb: torch.Tensor | None
    item_emb: torch.Tensor | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    popularity: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    model: Recommender | None = None

    @property
    def form(self) -> str:
        """ "model" when a model is held (or the manifest says so), else "dot"."""
        if self.model is not None:
            return "model"
        return str(self.manifest.get("form", "dot"))

    @property
    def n_users(self) -> int:
        if self.model is not None:
            return int(self.model.n_users)
        return int(self.user_emb.shape[0])

    @property
    def n_items(self) -> int:
        if self.model is not None:
            return int(self.model.n_items)
        return int(self.item_emb.shape[0])

    @property
    def dim(self) -> int:
        """Embedding width d (model form: the model's ``embedding_dim``, 0 when it has none)."""
        if self.model is not None:
            return int(self.model.embedding_dim or 0)
        return int(self.item_emb.shape[1])

    @property
    def quantisation(self) -> str:
        return str(self.manifest.get("quantisation", "none"))

    def num_parameters(self) -> int:
        """Inference-time parameters: both embedding matrices, or the model's parameters."""
        if self.model is not None:
            return int(self.model.num_parameters())
        return int(self.user_emb.numel() + self.item_emb.numel())

    def disk_bytes(self) -> int | None:
        """Total bytes of the files listed in the manifest (None when not on disk)."""
        files = self.manifest.get("files") or {}
        return int(sum(int(v["bytes"]) for v in files.values())) if files else None

    @classmethod
    def from_run(cls, run_dir: str | Path, split=None) -> Artifact:
        """Build (in memory) the artifact of a finished run directory."""
        from recpress.runs import load_run

        run = load_run(run_dir, split=split)
        return cls.from_model(
            run.model,
            run.split,
            config=dict(run.config),
            metrics=run.metrics or {},
            source=str(run.path),
        )

    @classmethod
    def from_model(
        cls,
        model,
        split,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> Artifact:
        """Build from a trained Recommender and its `Split` (n_users x n_items).

        A model with a ``dot_form()`` (users (U, d'), items (I, d') whose product ranks items as
        its scores do: LightGCN's propagated embeddings, CML's lifted metric embeddings), or
        without one but with embeddings (``score = U @ I.T``, BPR-MF), is exported in dot form.
        ``dot_form() is None`` means it has none (NeuMF): model form, the model itself, which
        must be registered in `recpress.models.MODELS` to be rebuilt on load."""
        from recpress.models import MODELS

        name = getattr(model, "name", type(model).__name__)
        dot_form = getattr(model, "dot_form", None)
        if dot_form is not None:
            users, items = dot_form() or (None, None)
        else:
            users, items = model.user_embeddings(), model.item_embeddings()
        held = None
        if users is None or items is None:
            if MODELS.get(name) is not type(model):
                raise ArtifactError(
                    f"model {name!r} has no dot-product form and is not a registered model "
                    "(recpress.models.register), so it can be exported neither as embeddings "
                    "nor in model form"
                )
            held, users, items = model, None, None
        train = split.train
        manifest = {
            "form": "dot" if held is None else "model",
            "model": name,
            "model_params": model.get_params() if hasattr(model, "get_params") else {},
            "dataset": {
                "name": split.dataset,
                "protocol": split.protocol,
                "fingerprint": split.fingerprint(),
            },
            "metrics": metrics or {},
            "config": config or {},
            "source": source,
        }
        return cls(
            user_emb=None if users is None else users.detach().float().cpu().contiguous(),
            item_emb=None if items is None else items.detach().float().cpu().contiguous(),
            user_ids=_clean_ids(np.asarray(split.user_ids), "user_ids"),
            item_ids=_clean_ids(np.asarray(split.item_ids), "item_ids"),
            seen_indptr=train.indptr.astype(np.int64),
            seen_indices=train.indices.astype(np.int64),
            popularity=np.asarray(train.sum(axis=0)).ravel().astype(np.float32),
            manifest=manifest,
            model=held,
        )

    def quantised(self, quantisation: str) -> Artifact:
        """A copy whose embeddings went through `quantisation` (what serving it would use).

        Model form has no embeddings: "none" returns the artifact itself, others ArtifactError.
        """
        if self.form == "model":
            if quantisation != "none":
                raise ArtifactError(
                    model_form_refusal(
                        self.manifest.get("model", "?"), f"--quantise {quantisation}"
                    )
                )
            return self
        manifest = dict(self.manifest, quantisation=quantisation)
        return Artifact(
            roundtrip(self.user_emb, quantisation),
            roundtrip(self.item_emb, quantisation),
            self.user_ids,
            self.item_ids,
            self.seen_indptr,
            self.seen_indices,
            self.popularity,
            manifest,
        )

    def save(
        self,
        out: str | Path,
        quantisation: str = "none",
        extra_files: dict[str, Path] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the artifact folder atomically (temp folder, then rename); returns its path.

        `extra_files` (name -> existing file) are copied in and checksummed (exported scorers).
        """
        from safetensors.torch import save_file

        if quantisation not in QUANTISATIONS:
            raise ArtifactError(
                f"unknown quantisation {quantisation!r}; use one of {', '.join(QUANTISATIONS)}"
            )
        if self.form == "model" and (quantisation != "none" or extra_files):
            what = f"--quantise {quantisation}" if quantisation != "none" else "an exported scorer"
            raise ArtifactError(model_form_refusal(self.manifest.get("model", "?"), what))
        out = Path(out)
        if out.exists() and not overwrite:
            raise ArtifactError(f"{out} exists; choose another output or pass --overwrite")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            if self.model is not None:
                state = self.model.state_dict()
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in state.items()},
                    str(tmp / MODEL_WEIGHTS),
                )
            else:
                tensors: dict[str, torch.Tensor] = {}
                for name, mat in (("user_emb", self.user_emb), ("item_emb", self.item_emb)):
                    for suffix, t in quantise(mat, quantisation).items():
                        tensors[name + suffix] = t
                save_file(tensors, str(tmp / WEIGHTS))
            np.savez(tmp / IDS, user_ids=self.user_ids, item_ids=self.item_ids)
            np.savez(
                tmp / SEEN,
                indptr=np.asarray(self.seen_indptr, dtype=np.int64),
                indices=np.asarray(self.seen_indices, dtype=np.int32),
                popularity=np.asarray(self.popularity, dtype=np.float32),
            )
            for name, src in (extra_files or {}).items():
                shutil.copyfile(src, tmp / name)
            files = {
                p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in sorted(tmp.iterdir())
            }
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                **{k: v for k, v in self.manifest.items() if k not in ("files", "format")},
                "form": self.form,
                "n_users": self.n_users,
                "n_items": self.n_items,
                "dim": self.dim,
                "quantisation": quantisation,
                "dtype": {"none": "float32", "fp16": "float16", "int8": "int8"}[quantisation],
                "score": "dot" if self.form == "dot" else "model",
                "files": files,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        self.path = out
        return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _clean_ids(ids: np.ndarray, what: str) -> np.ndarray:
    """Original ids as int64 or unicode (object arrays would need pickle)."""
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind == "U":
        return ids
    if ids.dtype.kind == "O":
        if all(isinstance(x, (int, np.integer)) for x in ids.tolist()):
            return ids.astype(np.int64)
        return ids.astype(str)
    raise ArtifactError(f"{what} of dtype {ids.dtype} cannot be stored; use integers or strings")


# -- loading -----------------------------------------------------------------------------------
def _fail(path: Path, message: str) -> ArtifactError:
    return ArtifactError(f"invalid artifact {path}: {message}")


def _npz(path: Path, file: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path / file, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise _fail(path, f"{file} lacks array(s) {', '.join(missing)}")
            return {k: z[k] for k in keys}
    except ArtifactError:
        raise
    except ValueError as err:  # object arrays need pickle: refused
        raise _fail(path, f"{file} cannot be read without pickle ({err})") from None
    except Exception as err:  # noqa: BLE001  corrupt zip etc.
        raise _fail(path, f"{file} is not a readable npz file ({err})") from None


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(
            f"artifact {path} not found (expected a folder written by `recpress export`)"
        )
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise _fail(path, f"missing {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, f"{MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _fail(path, f"{MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _fail(
            path,
            f"format_version {manifest.get('format_version')!r} is not supported "
            f"(this RecPress reads version {FORMAT_VERSION}); re-export it",
        )
    for key, kind in (("n_users", int), ("n_items", int), ("dim", int), ("files", dict)):
        if not isinstance(manifest.get(key), kind):
            raise _fail(path, f"{MANIFEST} field {key!r} is missing or not {kind.__name__}")
    if manifest.get("quantisation") not in QUANTISATIONS:
        raise _fail(path, f"{MANIFEST} quantisation must be one of {QUANTISATIONS}")
    form = manifest.setdefault("form", "dot")  # written before model form existed: dot
    if form not in FORMS:
        raise _fail(path, f"{MANIFEST} form must be one of {FORMS}, got {form!r}")
    if form == "model":
        if not isinstance(manifest.get("model"), str) or not isinstance(
            manifest.get("model_params"), dict
        ):
            raise _fail(
                path, f"{MANIFEST} of form 'model' needs 'model' (a name) and 'model_params'"
            )
        if manifest["quantisation"] != "none":
            raise _fail(path, f"{MANIFEST} of form 'model' must have quantisation 'none'")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists, has its byte size and its sha256."""
    files = manifest["files"]
    weights = MODEL_WEIGHTS if manifest.get("form", "dot") == "model" else WEIGHTS
    for required in (weights, IDS, SEEN):
        if required not in files:
            raise _fail(path, f"{MANIFEST} does not list {required}")
    for name, info in files.items():
        if Path(name).name != name or name == MANIFEST:
            raise _fail(path, f"{MANIFEST} lists an invalid file name {name!r}")
        p = path / name
        if not p.is_file():
            raise _fail(path, f"missing file {name}")
        if not isinstance(info, dict) or "sha256" not in info:
            raise _fail(path, f"{MANIFEST} has no sha256 for {name}")
        if p.stat().st_size != info.get("bytes") or sha256_file(p) != info["sha256"]:
            raise _fail(
                path,
                f"checksum mismatch for {name}: the file was modified or corrupted after export",
            )


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """Load and validate an artifact folder (see the module docstring); raises `ArtifactError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    n_users, n_items, dim = manifest["n_users"], manifest["n_items"], manifest["dim"]
    quant = manifest["quantisation"]
    weights = MODEL_WEIGHTS if manifest["form"] == "model" else WEIGHTS
    try:
        tensors = load_file(str(path / weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise _fail(path, f"{weights} is not a readable safetensors file ({err})") from None

    def matrix(name: str, rows: int) -> torch.Tensor:
        want = {"none": torch.float32, "fp16": torch.float16, "int8": torch.int8}[quant]
        key = name + (".q" if quant == "int8" else "")
        t = tensors.get(key)
        if t is None:
            raise _fail(path, f"{WEIGHTS} lacks tensor {key!r}")
        if t.dtype != want or tuple(t.shape) != (rows, dim):
            raise _fail(
                path,
                f"{WEIGHTS}:{key} has {t.dtype} {tuple(t.shape)}, the manifest announces "
                f"{want} ({rows}, {dim})",
            )
        if quant == "int8":
            s = tensors.get(name + ".scale")
            if s is None or s.dtype != torch.float32 or tuple(s.shape) != (rows,):
                raise _fail(path, f"{WEIGHTS}:{name}.scale must be float32 ({rows},)")
            out = dequantise_int8(t, s)
        else:
            out = t.float()
        if not torch.isfinite(out).all():
            raise _fail(path, f"{WEIGHTS}:{key} holds NaN or infinite values")
        return out.contiguous()

    user_emb = item_emb = None
    if manifest["form"] == "dot":
        user_emb = matrix("user_emb", n_users)
        item_emb = matrix("item_emb", n_items)
    ids = _npz(path, IDS, ("user_ids", "item_ids"))
    seen = _npz(path, SEEN, ("indptr", "indices", "popularity"))
    for key, arr, n in (
        ("user_ids", ids["user_ids"], n_users),
        ("item_ids", ids["item_ids"], n_items),
    ):
        if arr.shape != (n,) or arr.dtype.kind not in "iuU":
            raise _fail(
                path, f"{IDS}:{key} must be int or str of shape ({n},), got {arr.dtype} {arr.shape}"
            )
        if len(np.unique(arr)) != n:
            raise _fail(path, f"{IDS}:{key} holds duplicate ids")
    indptr, indices, pop = seen["indptr"], seen["indices"], seen["popularity"]
    if indptr.shape != (n_users + 1,) or indptr.dtype.kind not in "iu":
        raise _fail(path, f"{SEEN}:indptr must be integers of shape ({n_users + 1},)")
    indptr = indptr.astype(np.int64)
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices):
        raise _fail(
            path, f"{SEEN}: indptr is not a valid CSR row pointer for {len(indices)} entries"
        )
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise _fail(path, f"{SEEN}:indices must be a 1-D integer array")
    indices = indices.astype(np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise _fail(path, f"{SEEN}:indices holds item ids outside [0, {n_items})")
    if pop.shape != (n_items,) or not np.all(np.isfinite(pop)):
        raise _fail(path, f"{SEEN}:popularity must be finite of shape ({n_items},)")
    model = None
    if manifest["form"] == "model":
        train = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n_users, n_items)
        )
        model = _build_model(path, manifest, train, ids["user_ids"], ids["item_ids"], tensors)
    return Artifact(
        user_emb=user_emb,
        item_emb=item_emb,
        user_ids=ids["user_ids"],
        item_ids=ids["item_ids"],
        seen_indptr=indptr,
        seen_indices=indices,
        popularity=pop.astype(np.float32),
        manifest=manifest,
        path=path,
        model=model,
    )


def _build_model(
    path: Path,
    manifest: dict[str, Any],
    train: sp.csr_matrix,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    state: dict[str, torch.Tensor],
) -> Recommender:
    """The model-form model: built by `recpress.models.build_model` from the manifest's name
    and params on a split whose training part is `train` (n_users, n_items), then given the
    stored `state`; eval mode, CPU."""
    from recpress.data.types import Split
    from recpress.models import ModelConfig, build_model
    from recpress.schema import parse_config

    name = manifest["model"]
    empty = sp.csr_matrix(train.shape, dtype=np.float32)
    dataset = manifest.get("dataset") or {}
    split = Split(
        train=train,
        valid=empty,
        test=empty.copy(),
        user_ids=user_ids,
        item_ids=item_ids,
        dataset=str(dataset.get("name") or ""),
        protocol=str(dataset.get("protocol") or ""),
    )
    try:
        config = parse_config(
            ModelConfig, {"name": name, **manifest["model_params"]}, f"{MANIFEST} model"
        )
        # its own generator: the initial draws (overwritten next) leave the global RNG alone
        model = build_model(config, split, generator=torch.Generator().manual_seed(0))
    except (ConfigError, ValueError) as err:
        raise _fail(path, f"its model {name!r} cannot be built ({err})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise _fail(
            path,
            f"{MODEL_WEIGHTS} does not fit model {name!r} {manifest['model_params']}: {detail}",
        ) from None
    for key, t in model.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise _fail(path, f"{MODEL_WEIGHTS}:{key} holds NaN or infinite values")
    return model.eval()
