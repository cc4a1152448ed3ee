"""Loading a teacher: a run directory trained here, or an external teacher file.

* Run directory (``recpress train --out DIR``): the model with its selected weights; its split
  fingerprint must match the student's split. Knowledge is cached in ``DIR/knowledge/``.
* ``.npz`` with ``user_embeddings`` (n_users, d) and ``item_embeddings`` (n_items, d): an MF
  teacher, s_ui = ⟨e_u, e_i⟩ (every method). Knowledge is cached in ``<file stem>.knowledge/``
  next to the file.
* ``.npz`` with ``topk`` (n_users, K) int item ids in teacher order (training items excluded,
  −1 padding allowed): a black-box teacher; ranking methods that need only lists (RRD).
Either npz may carry ``fingerprint`` (the split fingerprint string), checked when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recpress.data.types import Split
from recpress.distill.knowledge import Knowledge
from recpress.errors import ConfigError

KNOWLEDGE_DIR = "knowledge"


def teacher_info(path: str | Path) -> dict[str, Any]:
    """Path, kind and (for a run) test metrics of a teacher, for the student's metrics.json."""
    p = Path(path)
    info: dict[str, Any] = {"path": str(p.resolve())}
    if p.is_dir():
        info["kind"] = "run"
        m = p / "metrics.json"
        if m.is_file():
            import json

            data = json.loads(m.read_text())
            info["test"] = data.get("test", {})
            info["valid"] = data.get("valid", {})
            info["parameters"] = data.get("parameters")
    else:
        info["kind"] = "npz"
    return info


def check_teacher_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"teacher {p} does not exist; pass a run directory written by `recpress train` or "
            "an .npz teacher",
            field="distill.teacher",
        )
    if p.is_dir():
        if not (p / "config.yaml").is_file():
            raise ConfigError(
                f"teacher {p} is not a run directory (no config.yaml)", field="distill.teacher"
            )
        if not (p / "model.safetensors").is_file():
            raise ConfigError(
                f"teacher {p} has no model.safetensors yet: finish training it first",
                field="distill.teacher",
            )
    elif p.suffix != ".npz":
        raise ConfigError(
            f"teacher {p} is neither a run directory nor an .npz file", field="distill.teacher"
        )
    return p


def load_teacher(path: str | Path, split: Split) -> Knowledge:
    """Teacher knowledge for `split` from a run directory or an .npz (see module docstring)."""
    p = check_teacher_path(path)
    if p.is_dir():
        return _from_run(p, split)
    return _from_npz(p, split)


def _from_run(p: Path, split: Split) -> Knowledge:
    from recpress.experiments.run import load_run
    from recpress.experiments.rundir import SPLIT, read_json

    record = p / SPLIT
    if record.is_file():
        expected = read_json(record).get("fingerprint")
        if expected and expected != split.fingerprint():
            raise ConfigError(
                f"teacher {p} was trained on a split with fingerprint {expected} "
                f"({read_json(record).get('dataset')}, {read_json(record).get('protocol')}), "
                f"but the student's split has fingerprint {split.fingerprint()} "
                f"({split.dataset}, {split.protocol}): use a teacher of the same dataset/split",
                field="distill.teacher",
            )
    _, model, _ = load_run(p, split=split)
    return Knowledge.from_teacher(model, split, cache_dir=p / KNOWLEDGE_DIR)


def _from_npz(p: Path, split: Split) -> Knowledge:
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
            field="distill.teacher",
        )
    if "user_embeddings" in arrays and "item_embeddings" in arrays:
        from recpress.models.bpr import BPRMF

        u, i = arrays["user_embeddings"], arrays["item_embeddings"]
        if u.ndim != 2 or i.ndim != 2 or u.shape[1] != i.shape[1]:
            raise ConfigError(f"teacher {p}: embeddings must be 2-D with the same width")
        if (u.shape[0], i.shape[0]) != (split.n_users, split.n_items):
            raise ConfigError(
                f"teacher {p} has {u.shape[0]} users × {i.shape[0]} items but the split has "
                f"{split.n_users} × {split.n_items}"
            )
        model = BPRMF(embedding_dim=int(u.shape[1])).build(split.n_users, split.n_items)
        with torch.no_grad():
            model.user_emb.weight.copy_(torch.as_tensor(u, dtype=torch.float32))
            model.item_emb.weight.copy_(torch.as_tensor(i, dtype=torch.float32))
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
