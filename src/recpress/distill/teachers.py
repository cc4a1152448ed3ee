"""Loading a teacher: a run directory trained here, or an external teacher file.

* Run directory (``recpress train --out DIR``): the model with its selected weights; its split
  fingerprint must match the student's split. Knowledge is cached in ``DIR/knowledge/``.
* ``.npz`` with ``user_embeddings`` (n_users, d) and ``item_embeddings`` (n_items, d): a
  read-only `EmbeddingTeacher`, s_ui = ⟨e_u, e_i⟩ (every method). Knowledge is cached in
  ``<file stem>.knowledge/`` next to the file.
* ``.npz`` with ``topk`` (n_users, K) int item ids in teacher order (training items excluded,
  −1 padding allowed): a black-box teacher; ranking methods that need only lists (RRD).
Either npz may carry ``fingerprint`` (the split fingerprint string), checked when present.
A student with several teachers loads each once; each keeps its own knowledge cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recpress.data.types import Split
from recpress.distill.knowledge import Knowledge
from recpress.errors import ConfigError
from recpress.runs import (
    CONFIG,
    KNOWLEDGE_DIR,
    METRICS,
    WEIGHTS,
    load_run,
    read_json,
    split_mismatch,
)


class EmbeddingTeacher(nn.Module):
    """A read-only teacher given as embeddings: s_ui = ⟨e_u, e_i⟩.

    ``user_emb`` (n_users, d) and ``item_emb`` (n_items, d) are frozen parameters (so
    ``.to(device)`` moves them); ``score(users (B,)) -> (B, n_items)``, ``score_items(users (B,),
    items (B, K)) -> (B, K)``, the same products as BPR-MF.
    """

    name = "embeddings"
    has_embeddings = True
    is_built = True

    def __init__(self, user_embeddings: torch.Tensor, item_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.user_emb = nn.Parameter(torch.as_tensor(user_embeddings), requires_grad=False)
        self.item_emb = nn.Parameter(torch.as_tensor(item_embeddings), requires_grad=False)
        self.n_users, self.n_items = int(self.user_emb.shape[0]), int(self.item_emb.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.user_emb.shape[1])

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T

    def score_items(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", self.user_emb[users], self.item_emb[items])

    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_emb if users is None else self.user_emb[users]

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_emb if items is None else self.item_emb[items]

    def num_parameters(self) -> int:
        return int(self.user_emb.numel() + self.item_emb.numel())


def teacher_info(path: str | Path) -> dict[str, Any]:
    """Path, kind and (for a run) test metrics of a teacher, for the student's metrics.json."""
    p = Path(path)
    info: dict[str, Any] = {"path": str(p.resolve())}
    if p.is_dir():
        info["kind"] = "run"
        m = p / METRICS
        if m.is_file():
            data = read_json(m)
            info["test"] = data.get("test", {})
            info["valid"] = data.get("valid", {})
            info["parameters"] = data.get("parameters")
    else:
        info["kind"] = "npz"
    return info


def check_teacher_path(path: str | Path, field: str = "distill.teacher") -> Path:
    """`path` as a Path, or ConfigError when it is no usable teacher (`field` names it)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"teacher {p} does not exist; pass a run directory written by `recpress train` or "
            "an .npz teacher",
            field=field,
        )
    if p.is_dir():
        if not (p / CONFIG).is_file():
            raise ConfigError(f"teacher {p} is not a run directory (no config.yaml)", field=field)
        if not (p / WEIGHTS).is_file():
            raise ConfigError(
                f"teacher {p} has no model.safetensors yet: finish training it first",
                field=field,
            )
    elif p.suffix != ".npz":
        raise ConfigError(f"teacher {p} is neither a run directory nor an .npz file", field=field)
    return p


def load_teacher(path: str | Path, split: Split, name: str | None = None) -> Knowledge:
    """Teacher knowledge for `split` from a run directory or an .npz (see module docstring).

    `name` (a key of ``distill.teachers``) is named in the errors.
    """
    field = "distill.teacher" if name in (None, "teacher") else f"distill.teachers.{name}"
    p = check_teacher_path(path, field)
    if p.is_dir():
        return _from_run(p, split, field)
    return _from_npz(p, split, field)


def _from_run(p: Path, split: Split, field: str = "distill.teacher") -> Knowledge:
    record = split_mismatch(p, split)
    if record is not None:
        raise ConfigError(
            f"teacher {p} was trained on a split with fingerprint {record['fingerprint']} "
            f"({record.get('dataset')}, {record.get('protocol')}), "
            f"but the student's split has fingerprint {split.fingerprint()} "
            f"({split.dataset}, {split.protocol}): use a teacher of the same dataset/split",
            field=field,
        )
    model = load_run(p, split=split).model
    knowledge = Knowledge.from_teacher(model, split, cache_dir=p / KNOWLEDGE_DIR)
    knowledge.run_dir = p
    return knowledge


def _from_npz(p: Path, split: Split, field: str = "distill.teacher") -> Knowledge:
    try:
        data = np.load(p, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except Exception as err:
        raise ConfigError(f"teacher {p} is not a readable .npz ({err})") from None
    fp = arrays.get("fingerprint")
    if fp is not None and str(fp) != split.fingerprint():
        raise ConfigError(
            f"teacher {p} was made for split {fp}, but the student's split is "
            f"{split.fingerprint()}",
            field=field,
        )
    if "user_embeddings" in arrays and "item_embeddings" in arrays:
        u, i = arrays["user_embeddings"], arrays["item_embeddings"]
        if u.ndim != 2 or i.ndim != 2 or u.shape[1] != i.shape[1]:
            raise ConfigError(f"teacher {p}: embeddings must be 2-D with the same width")
        if (u.shape[0], i.shape[0]) != (split.n_users, split.n_items):
            raise ConfigError(
                f"teacher {p} has {u.shape[0]} users × {i.shape[0]} items but the split has "
                f"{split.n_users} × {split.n_items}"
            )
        model = EmbeddingTeacher(
            torch.as_tensor(u, dtype=torch.float32), torch.as_tensor(i, dtype=torch.float32)
        )
        k = Knowledge.from_teacher(model, split, cache_dir=p.with_name(p.stem + ".knowledge"))
        k.source = "npz embeddings"
        return k
    if "topk" in arrays:
        lists = arrays["topk"]
        if not np.issubdtype(lists.dtype, np.integer):
            raise ConfigError(f"teacher {p}: topk must hold integer item ids")
        k = Knowledge.from_lists(lists, split)
        k.source = "npz top-K lists"
        return k
    raise ConfigError(
        f"teacher {p} holds {', '.join(arrays) or 'nothing'}; expected user_embeddings + "
        "item_embeddings, or topk"
    )
