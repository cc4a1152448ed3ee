"""Teacher knowledge, precomputed once and cached with the teacher run (docs/methods.md §1.6).

`Knowledge` wraps a frozen teacher (or only its per-user top-K lists, for a black-box
teacher) and serves what the distillers need:

* ``user_topk(n, mask_train)``: (n_users, n) int32, the teacher's top-n items per user in
  teacher order; with ``mask_train`` the user's training items are excluded (scored −inf before
  the top-n). A row with fewer than n allowed items is padded with −1 at the end.
* ``item_topk(n, mask_train)``: (n_items, n) int32, the top-n users per item (IR-RRD, DCD).
* ``user_embeddings()`` / ``item_embeddings()``: frozen (n, d_t) teacher embeddings.
* ``score_items(users, items)``: teacher scores of listed items, no gradient.
* ``trajectories()``: the teacher's top-K lists at several training epochs (HetComp), read
  from its run directory.

Lists are computed in chunks (full scoring + top-n, never a dense n_users × n_items matrix),
kept in memory, and saved as safetensors under ``cache_dir`` (a teacher run's ``knowledge/``)
keyed by n and the mask flag; a cached larger n serves a smaller n by slicing. Each file
records the split fingerprint and is ignored if it belongs to another split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recpress.data.types import Split
from recpress.distill.common import mask_train_
from recpress.errors import ConfigError
from recpress.models.base import Recommender

#: scores computed per chunk at the default memory budget (64 MiB in fp32); the chunk follows
#: `recpress.evaluation.ranking.chunk_rows` and ``memory_budget_mb``
CHUNK_FLOATS = 1 << 24


def _freeze(model: Recommender) -> Recommender:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Knowledge:
    """Everything a distiller may ask of the teacher; see the module docstring.

    Build with :meth:`from_teacher` (a trained `Recommender`) or :meth:`from_lists` (a
    black-box teacher given only as per-user top-K lists).
    """

    def __init__(
        self,
        split: Split,
        teacher: Recommender | None = None,
        cache_dir: str | Path | None = None,
        user_lists: torch.Tensor | None = None,
        source: str = "",
        memory_budget_mb: float | None = None,
    ) -> None:
        self.teacher = _freeze(teacher) if teacher is not None else None
        self.split_fingerprint = split.fingerprint()
        self.n_users, self.n_items = split.n_users, split.n_items
        self._train = split.train
        self._split = split
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.source = source
        #: working memory of one chunk of teacher scores (None: the evaluation default)
        self.memory_budget_mb = memory_budget_mb
        self._train_t: tuple[torch.Tensor, torch.Tensor] | None = None
        #: the teacher's run directory (set by the teacher loader), where its trajectories live
        self.run_dir: Path | None = None
        self._trajectories = None
        self._mem: dict[tuple[str, bool], torch.Tensor] = {}
        self._emb: dict[str, torch.Tensor | None] = {}
        #: how many lists were computed (not read from memory or disk) — for tests and logs
        self.computed = 0
        if user_lists is not None:
            lists = torch.as_tensor(user_lists).to(torch.int32).cpu()
            if lists.dim() != 2 or lists.shape[0] != self.n_users:
                raise ConfigError(
                    f"teacher top-K lists must have shape (n_users={self.n_users}, K), got "
                    f"{tuple(lists.shape)}"
                )
            if lists.numel() and (int(lists.max()) >= self.n_items or int(lists.min()) < -1):
                raise ConfigError(
                    f"teacher top-K lists hold item ids outside 0..{self.n_items - 1}"
                )
            self._mem[("user", True)] = lists
        if self.teacher is not None:
            u = self.teacher.user_embeddings()
            self.has_embeddings = u is not None
        else:
            self.has_embeddings = False
        self.has_scores = self.teacher is not None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_teacher(
        cls, teacher: Recommender, split: Split, cache_dir: str | Path | None = None
    ) -> Knowledge:
        if not teacher.is_built:
            raise ConfigError("the teacher model has no parameters yet (build/train it first)")
        if (teacher.n_users, teacher.n_items) != (split.n_users, split.n_items):
            raise ConfigError(
                f"teacher has {teacher.n_users} users × {teacher.n_items} items but the split "
                f"has {split.n_users} × {split.n_items}: it was trained on other data"
            )
        return cls(split, teacher=teacher, cache_dir=cache_dir, source="model")

    @classmethod
    def from_lists(cls, lists: torch.Tensor | np.ndarray, split: Split) -> Knowledge:
        """A black-box teacher: per-user top-K lists only (ranking methods only)."""
        return cls(
            split, teacher=None, user_lists=torch.as_tensor(np.asarray(lists)), source="lists"
        )

    @property
    def provides(self) -> frozenset[str]:
        """What this teacher can give: subset of {"topk", "scores", "embeddings"}."""
        out = {"topk"}
        if self.has_scores:
            out.add("scores")
        if self.has_embeddings:
            out.add("embeddings")
        return frozenset(out)

    def _need(self, what: str, needed_by: str | None) -> None:
        if what not in self.provides:
            who = f"method {needed_by!r}" if needed_by else "this method"
            raise ConfigError(
                f"{who} needs teacher {what}, but the teacher given ({self.source or 'lists'}) "
                f"provides only {', '.join(sorted(self.provides))}; use a teacher run directory "
                "or an .npz with user_embeddings and item_embeddings"
            )

    # -- top-N lists --------------------------------------------------------------------------
    def user_topk(self, n: int, mask_train: bool = True, needed_by: str | None = None):
        """(n_users, n) int32 teacher top-n items per user (see module docstring)."""
        return self._topk("user", int(n), bool(mask_train), needed_by)

    def item_topk(self, n: int, mask_train: bool = True, needed_by: str | None = None):
        """(n_items, n) int32 teacher top-n users per item."""
        return self._topk("item", int(n), bool(mask_train), needed_by)

    def _topk(self, side: str, n: int, mask: bool, needed_by: str | None) -> torch.Tensor:
        limit = self.n_items if side == "user" else self.n_users
        if n <= 0:
            raise ConfigError(f"top-N list length must be positive, got {n}")
        key = (side, mask)
        got = self._mem.get(key)
        if got is not None and got.shape[1] >= n:
            return got[:, :n]
        if self.teacher is None:
            if got is not None and side == "user" and mask:
                raise ConfigError(
                    f"method {needed_by or '?'} needs teacher top-{n} lists but the teacher "
                    f"lists have only {got.shape[1]} entries per user; lower N/K"
                )
            self._need("scores", needed_by)
        if n > limit:
            raise ConfigError(
                f"top-N list of {n} {'items' if side == 'user' else 'users'} asked, but there "
                f"are only {limit}"
            )
        lists = self._load(side, n, mask)
        if lists is None:
            lists = self._compute_user(n, mask) if side == "user" else self._compute_item(n, mask)
            self.computed += 1
            self._save(side, mask, lists)
        self._mem[key] = lists
        return lists[:, :n]

    def _file(self, side: str, n: int, mask: bool) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{side}_topk_n{n}_{'masked' if mask else 'unmasked'}.safetensors"

    def _load(self, side: str, n: int, mask: bool) -> torch.Tensor | None:
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return None
        pat = re.compile(rf"{side}_topk_n(\d+)_{'masked' if mask else 'unmasked'}\.safetensors")
        sizes = sorted(
            int(m.group(1)) for p in self.cache_dir.iterdir() if (m := pat.fullmatch(p.name))
        )
        for size in (s for s in sizes if s >= n):
            path = self._file(side, size, mask)
            try:
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as fh:
                    meta = fh.metadata() or {}
                if meta.get("fingerprint") != self.split_fingerprint:
                    continue
                return load_file(str(path))["lists"]
            except Exception:  # a damaged cache file is recomputed, never trusted
                continue
        return None

    def _save(self, side: str, mask: bool, lists: torch.Tensor) -> None:
        if self.cache_dir is None:
            return
        from recpress.fileio import atomic_write_bytes

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": self.split_fingerprint, "side": side, "mask_train": str(mask)}
        atomic_write_bytes(
            self._file(side, lists.shape[1], mask),
            lambda p: save_file({"lists": lists.contiguous()}, str(p), metadata=meta),
        )

    def _device(self) -> torch.device:
        assert self.teacher is not None
        p = next(self.teacher.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _teacher_scores(self, start: int, end: int, dev, mask: bool) -> torch.Tensor:
        """Teacher scores of users start..end-1 (B, n_items); training items −inf if `mask`."""
        users = torch.arange(start, end, device=dev)
        scores = self.teacher.score(users).float()
        if mask:
            # the training CSR as tensors once, not per chunk (that copy grows with nnz)
            if self._train_t is None or self._train_t[0].device != torch.device(dev):
                self._train_t = (
                    torch.as_tensor(self._train.indptr.astype(np.int64), device=dev),
                    torch.as_tensor(self._train.indices.astype(np.int64), device=dev),
                )
            mask_train_(scores, users, *self._train_t)
        return scores

    def _chunk(self) -> int:
        """Users per chunk of teacher scores under the memory budget."""
        from recpress.evaluation.ranking import chunk_rows

        return chunk_rows(self.n_items, self.memory_budget_mb)

    @torch.no_grad()
    def _compute_user(self, n: int, mask: bool) -> torch.Tensor:
        from recpress.evaluation.ranking import top_k_unobserved

        exclude = ("train",) if mask else ()
        return top_k_unobserved(
            self.teacher, self._split, n, chunk_users=self._chunk(), exclude=exclude
        )

    @torch.no_grad()
    def _compute_item(self, n: int, mask: bool) -> torch.Tensor:
        """Running top-n over user chunks of the full score matrix (items as columns)."""
        dev = self._device()
        chunk = self._chunk()
        best_v = torch.full((0, self.n_items), -torch.inf, device=dev)
        best_i = torch.zeros((0, self.n_items), dtype=torch.int64, device=dev)
        for s in range(0, self.n_users, chunk):
            e = min(s + chunk, self.n_users)
            scores = self._teacher_scores(s, e, dev, mask)
            users = torch.arange(s, e, device=dev).unsqueeze(1).expand(-1, self.n_items)
            v = torch.cat([best_v, scores], 0)
            i = torch.cat([best_i, users], 0)
            k = min(n, v.shape[0])
            best_v, pos = torch.topk(v, k, dim=0)
            best_i = torch.gather(i, 0, pos)
        best_i[torch.isneginf(best_v)] = -1
        return best_i.T.contiguous().to(torch.int32).cpu()

    # -- trajectories -------------------------------------------------------------------------
    def attach_trajectories(self, trajectories) -> Knowledge:
        """Use these trajectories (``epochs``: list[int], ``lists``: (C, n_users, K) int item ids
        best-first, training items excluded, −1 padded; optional ``fingerprint``) instead of
        reading them from the run directory."""
        self._trajectories = trajectories
        return self

    def trajectories(self, needed_by: str | None = None):
        """The teacher's per-user top-K lists at several training epochs (`recpress.runs.
        Trajectories`: ``epochs`` ascending, ``lists`` (C, n_users, K) int32), read once from the
        run directory. ConfigError when the teacher has none or they belong to another split."""
        if self._trajectories is None:
            who = f"method {needed_by!r}" if needed_by else "this method"
            try:
                from recpress.runs import read_trajectories
            except ImportError:  # a build without trajectory support
                read_trajectories = None
            if self.run_dir is None or read_trajectories is None:
                raise ConfigError(
                    f"{who} needs the teacher's trajectories (per-user top-K lists kept at "
                    f"several training epochs), but the teacher given "
                    f"({self.run_dir or self.source or 'lists'}) has none; give a teacher run "
                    "directory and make them with `recpress trajectories RUN --epochs E1,E2,...`"
                )
            self._trajectories = read_trajectories(self.run_dir)
        traj = self._trajectories
        fp = getattr(traj, "fingerprint", None)
        if isinstance(fp, dict):
            fp = fp.get("fingerprint")
        where = self.run_dir if self.run_dir is not None else self.source
        if fp is not None and str(fp) != self.split_fingerprint:
            raise ConfigError(
                f"the trajectories of teacher {where} were made on split {fp}, but the student's "
                f"split is {self.split_fingerprint}: remake them with `recpress trajectories`"
            )
        lists = traj.lists
        if lists.dim() != 3 or lists.shape[1] != self.n_users or len(traj.epochs) != lists.shape[0]:
            raise ConfigError(
                f"the trajectories of teacher {where} have shape {tuple(lists.shape)} for "
                f"{len(traj.epochs)} epochs; expected (epochs, n_users={self.n_users}, K)"
            )
        return traj

    # -- embeddings and scores ----------------------------------------------------------------
    def user_embeddings(self, needed_by: str | None = None) -> torch.Tensor | None:
        """Frozen teacher user embeddings (n_users, d_t), no grad."""
        return self._embedding("user", needed_by)

    def item_embeddings(self, needed_by: str | None = None) -> torch.Tensor | None:
        """Frozen teacher item embeddings (n_items, d_t), no grad."""
        return self._embedding("item", needed_by)

    def _embedding(self, side: str, needed_by: str | None) -> torch.Tensor | None:
        if needed_by is not None or self.teacher is None:
            self._need("embeddings", needed_by)
        if side not in self._emb:
            with torch.no_grad():
                t = self.teacher
                e = t.user_embeddings() if side == "user" else t.item_embeddings()
                self._emb[side] = None if e is None else e.detach().clone()
        return self._emb[side]

    @torch.no_grad()
    def score_items(
        self, users: torch.Tensor, items: torch.Tensor, needed_by: str | None = None
    ) -> torch.Tensor:
        """Teacher scores (B, K) of items (B, K) for users (B,), no grad.

        The ids may live on any device: they are moved to the teacher's, and the scores come
        back on the device of ``users``.
        """
        self._need("scores", needed_by)
        dev = self._device()
        scores = self.teacher.score_items(users.to(dev), items.to(dev)).detach()
        return scores.to(users.device)

    def to(self, device: torch.device | str) -> Knowledge:
        """Move the teacher (and cached embeddings) to `device`; lists stay on the CPU."""
        if self.teacher is not None:
            self.teacher.to(device)
        self._emb = {k: (None if v is None else v.to(device)) for k, v in self._emb.items()}
        return self
