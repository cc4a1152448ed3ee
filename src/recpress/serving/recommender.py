"""A CPU top-K recommender over an artifact's embeddings (or its model), vectorised over users.

``rec = TopKRecommender.load("artifact/")``; ``items, scores = rec.recommend(["u1", "u7"], k=20)``
returns original item ids (n, k) and scores (n, k), excluding each user's seen (training) items.
A user id the artifact does not know gets the most popular items (flagged in
``result.fallback``) under ``unknown="popularity"``, or raises `UnknownUserError` under
``unknown="error"``.

A model-form artifact (NeuMF: no dot-product form) is scored by its model's own full-catalogue
``score`` (the `Recommender` contract) on chunks of users; seen items are excluded and top-k
selected by the same code as the dot form (the compiled ``masked_topk`` on each chunk's scores,
or the torch path's masking and hierarchical top-k).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recpress.errors import ConfigError
from recpress.serving import selection
from recpress.serving.artifact import Artifact, load_artifact

UNKNOWN_POLICIES = ("popularity", "error")
#: top-k selectors: "numba" (the compiled kernel of `recpress.serving.selection`, CPU), "torch"
#: (masking scatter + exact hierarchical ``torch.topk``, any device), "auto" (numba where it
#: can run, else torch)
SELECTORS = ("auto", "numba", "torch")
#: default fan-out of the levels of maxima per selector
DEFAULT_FANOUT = {"numba": selection.DEFAULT_FANOUT, "torch": 4}
#: how the "numba" selector multiplies a batch: "rows" (a block of users by the whole item
#: matrix, `selection.scored_topk`), "tiles" (by item strips, `selection.tiled_scored_topk`),
#: "auto" (tiles up to `TILED_MAX_DIM` dims and `TILED_MAX_ITEMS` items, else rows)
PRODUCTS = ("auto", "rows", "tiles")


class UnknownUserError(ConfigError):
    """Some requested user ids are not in the artifact (policy ``unknown="error"``)."""

    def __init__(self, users: Sequence[Any]):
        shown = ", ".join(repr(u) for u in list(users)[:5])
        more = f" (and {len(users) - 5} more)" if len(users) > 5 else ""
        super().__init__(f"unknown user id(s): {shown}{more}")
        self.users = list(users)


@dataclass
class Recommendations:
    """Answer of `TopKRecommender.recommend` for n users.

    Attributes:
        items: (n, k) original item ids (dtype of the artifact's item ids).
        scores: (n, k) float32 scores, descending per row; -inf marks padding when a user has
            fewer than k unseen items (the item id there is meaningless).
        fallback: (n,) bool, True where the user was unknown and got the popularity list
            (its scores are training interaction counts).
        users: the requested ids, as given.

    Unpacks as ``items, scores = result``.
    """

    items: np.ndarray
    scores: np.ndarray
    fallback: np.ndarray
    users: list[Any]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.items, self.scores))

    def __len__(self) -> int:
        return len(self.users)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per user: user, items, scores, fallback (padding dropped)."""
        out = []
        finite = np.isfinite(self.scores)
        for r, user in enumerate(self.users):
            keep = finite[r]
            out.append(
                {
                    "user": _py(user),
                    "items": self.items[r][keep].tolist(),
                    "scores": [float(s) for s in self.scores[r][keep]],
                    "fallback": bool(self.fallback[r]),
                }
            )
        return out


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


#: the hierarchy stops where the top level would hold fewer than this many groups
_MIN_TOP = 8
#: at most this fraction of padding columns (extra matmul work) for one more level
_MAX_PAD = 0.01


def _resolve_selector(selector: str, device: torch.device) -> str:
    """The selector to use: validate `selector` (one of `SELECTORS`) for this device."""
    if selector not in SELECTORS:
        raise ConfigError(
            f"selector must be one of {', '.join(SELECTORS)}, got {selector!r}", field="selector"
        )
    if selector == "torch" or (selector == "auto" and device.type != "cpu"):
        return "torch"
    if device.type != "cpu":
        raise ConfigError(
            f"selector 'numba' runs on the CPU only, got device {device}; use selector='torch'",
            field="selector",
        )
    if not selection.available():
        if selector == "numba":
            raise ConfigError(
                "selector 'numba' needs numba, which is not installed; "
                "install it (pip install numba) or use selector='torch'",
                field="selector",
            )
        return "torch"
    return "numba"


def _check_product(product: str) -> None:
    """`product` is one of `PRODUCTS` (ConfigError otherwise)."""
    if product not in PRODUCTS:
        raise ConfigError(
            f"product must be one of {', '.join(PRODUCTS)}, got {product!r}", field="product"
        )


def _chunk_users(chunk_elements: int | None, n_items: int, dim: int, tiles: bool) -> int:
    """Users scored per chunk: ``chunk_elements // n_items`` when given, else the default of
    the product in use (`TILED_CHUNK_ELEMENTS` for tiles, `default_chunk_users` for rows)."""
    if chunk_elements is not None:
        return max(1, int(chunk_elements) // max(1, n_items))
    if tiles:
        return max(1, TILED_CHUNK_ELEMENTS // max(1, n_items))
    return default_chunk_users(n_items, dim)


def _resolve_product(product: str, selector: str, fanout: int, dim: int, n_items: int) -> str:
    """The batch product in use: validate `product` (one of `PRODUCTS`); "rows" wherever the
    tiles cannot serve (torch selector, fanout 0); "auto" → tiles for small dims and catalogues
    (`TILED_MAX_DIM`, `TILED_MAX_ITEMS`)."""
    _check_product(product)
    if selector != "numba" or fanout < 2:
        if product == "tiles":
            raise ConfigError(
                "product 'tiles' needs selector 'numba' and fanout >= 2", field="product"
            )
        return "rows"
    if product == "auto":
        small = dim <= TILED_MAX_DIM and n_items <= TILED_MAX_ITEMS
        return "tiles" if small else "rows"
    return product


def _hierarchy_shape(n_items: int, fanout: int) -> tuple[int, int]:
    """(levels, width): the most levels (top level >= `_MIN_TOP` groups) whose padding of the
    catalogue to a multiple of fanout**levels stays under `_MAX_PAD`; width = padded size."""
    levels = 0
    if fanout >= 2:
        while n_items // fanout ** (levels + 1) >= _MIN_TOP:
            unit = fanout ** (levels + 1)
            if (-(-n_items // unit) * unit - n_items) > _MAX_PAD * n_items:
                break
            levels += 1
    unit = fanout**levels if fanout >= 2 else 1
    return levels, -(-n_items // unit) * unit


def _hierarchical_topk(
    scores: torch.Tensor, k: int, fanout: int, levels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of `scores` (b, W), W divisible by fanout**levels: (values,
    indices), both (b, k), values descending.

    Level 0 is the row; level i holds the maxima of `fanout` strided groups of level i−1
    (group g of a level of width w holds the elements g, g + w, g + 2w, ... below it, so each
    level is one vectorised ``amax`` over a contiguous view). Lemma: the top-k elements of a
    level lie in the k groups with the largest maxima above it (if an element x of the top-k
    sat in another group, those k groups would hold k distinct maxima ≥ x's group maximum ≥ x,
    so x would not be needed, up to ties that keep the same values). So a ``topk`` over the
    top level and, going down, one over the k·fanout members of the k chosen groups give the
    exact answer, comparing W_h + levels·k·fanout elements instead of W (measured in
    bench/README.md, section "Serving: top-k selection").
    """
    b = scores.shape[0]
    maxima = [scores]
    for _ in range(levels):
        below = maxima[-1]
        maxima.append(below.view(b, fanout, below.shape[1] // fanout).amax(dim=1))
    top = torch.topk(maxima[-1], k, dim=1, sorted=False).indices  # (b, k) at level `levels`
    spread = torch.arange(fanout, device=scores.device).view(1, fanout, 1)
    values = scores.new_empty(0)
    for level in range(levels, 0, -1):
        below = maxima[level - 1]
        members = (top.unsqueeze(1) + spread * maxima[level].shape[1]).reshape(b, fanout * k)
        values, pick = torch.topk(below.gather(1, members), k, dim=1, sorted=level == 1)
        top = members.gather(1, pick)
    return values, top


#: scores per chunk of users when none is given (see `TopKRecommender`)
DEFAULT_CHUNK_ELEMENTS = 2**21
#: the same for the "tiles" product: a block's scores fit in a core's L2 cache
TILED_CHUNK_ELEMENTS = 2**18
#: "auto" multiplies by item strips (`selection.tiled_scored_topk`) up to this embedding dim
TILED_MAX_DIM = 64
#: ... and up to this many items: a larger catalogue leaves fewer than 2 users per default block,
#: and a block of 1 user reads the whole item table per user (bench/README.md, section
#: "Serving: chunk sizes and the item-strip product")
TILED_MAX_ITEMS = TILED_CHUNK_ELEMENTS // 2
#: the default never gives a worker's buffer more scores than this (64 MiB of float32)
MAX_DEFAULT_CHUNK_ELEMENTS = 2**24


def default_chunk_users(n_items: int, dim: int) -> int:
    """Users per chunk when none is given: `DEFAULT_CHUNK_ELEMENTS` scores and at least `dim`
    users, but at most `MAX_DEFAULT_CHUNK_ELEMENTS` scores (a large catalogue would otherwise
    get d rows of n scores per worker: 1.6 GB for d=200 and a million items on 2 threads)."""
    n = max(1, int(n_items))
    wanted = max(DEFAULT_CHUNK_ELEMENTS // n, int(dim))
    return max(1, min(wanted, MAX_DEFAULT_CHUNK_ELEMENTS // n))


class TopKRecommender:
    """Top-K over ``scores = U[users] @ I.T`` with seen items masked, on CPU (any torch device).

    A model-form artifact is scored by ``artifact.model.score(users) -> (B, n_items)`` instead
    (chunks of `chunk_users` users); ``product`` is then "rows" ("tiles" is refused).

    Args:
        artifact: a loaded `Artifact`.
        unknown: "popularity" (fallback, flagged) or "error" (raise `UnknownUserError`).
        chunk_elements: users per chunk are chosen so that a chunk holds about this many
            scores. None (default, `default_chunk_users`): 2**21 floats (8 MiB) and at least d
            users, so that each pass over the item matrix (d × n floats) yields at least as many
            score rows as it has dimensions, capped at 2**24 floats per chunk. Each worker of a
            batch request has a buffer of one chunk (chunk sizes measured in bench/README.md,
            section "Serving: chunk sizes and the item-strip product").
        device: where the matrix product runs (the "numba" selector needs "cpu").
        fanout: items per group at each level of maxima of the exact top-k (0 disables the
            levels: one selection pass over the whole catalogue). None: 16 for "numba", 4 for
            "torch" (see `recpress.serving.selection` and `_hierarchical_topk`).
        selector: one of `SELECTORS`; the attribute ``selector`` holds the one in use.
        product: one of `PRODUCTS`, for the "numba" selector's batches; the attribute
            ``product`` holds the one in use ("rows" under the torch selector or fanout 0).
            With "tiles" the default chunk is 2**18 scores (`TILED_CHUNK_ELEMENTS`).
    """

    def __init__(
        self,
        artifact: Artifact,
        unknown: str = "popularity",
        chunk_elements: int | None = None,
        device: str | torch.device = "cpu",
        fanout: int | None = None,
        selector: str = "auto",
        product: str = "auto",
    ) -> None:
        if unknown not in UNKNOWN_POLICIES:
            raise ConfigError(
                f"unknown-user policy must be one of {', '.join(UNKNOWN_POLICIES)}, "
                f"got {unknown!r}",
                field="unknown",
            )
        self.artifact = artifact
        self.unknown = unknown
        self.device = torch.device(device)
        self.selector = _resolve_selector(selector, self.device)
        n_items = artifact.n_items
        self.fanout = DEFAULT_FANOUT[self.selector] if fanout is None else int(fanout)
        if self.fanout < 0 or self.fanout == 1:
            raise ConfigError(f"fanout must be 0 or >= 2, got {fanout}", field="fanout")
        #: model form: the model whose ``score`` serves (None in dot form)
        self.model = None
        if artifact.form == "model":
            _check_product(product)
            if product == "tiles":
                raise ConfigError(
                    f"product 'tiles' multiplies embedding strips, but this "
                    f"{artifact.manifest.get('model', '?')!r} artifact is in model form (scored "
                    "by the model, not U @ I.T); use product 'auto' or 'rows'",
                    field="product",
                )
            self._init_model_form(artifact, chunk_elements)
            return
        self.user_emb = artifact.user_emb.to(self.device).contiguous()
        if self.selector == "torch":
            # (d, width): zero columns pad the catalogue to a multiple of fanout**levels items
            self.levels, width = _hierarchy_shape(n_items, self.fanout)
        else:  # the kernel handles ragged groups itself; rows of a multiple of 16 floats (64
            # bytes) keep the matrix product fast (bench/README.md, "Serving: top-k selection")
            self.levels, width = 0, -(-n_items // 16) * 16
        item_t = torch.zeros(artifact.dim, width, dtype=torch.float32)
        item_t[:, :n_items] = artifact.item_emb.T
        self.item_emb_t = item_t.to(self.device).contiguous()
        self._init_lookup(artifact)
        self.product = _resolve_product(product, self.selector, self.fanout, artifact.dim, n_items)
        self._item_tiles = (
            selection.item_tiles(self.item_emb_t.numpy(), n_items, self.fanout)
            if self.product == "tiles"
            else None
        )
        self.chunk_users = _chunk_users(
            chunk_elements, n_items, artifact.dim, tiles=self.product == "tiles"
        )

    def _init_lookup(self, artifact: Artifact) -> None:
        """Id maps, seen CSR and popularity order (both forms)."""
        self.item_ids = artifact.item_ids
        self.user_ids = artifact.user_ids
        self.user_ids_are_int = artifact.user_ids.dtype.kind in "iu"
        self._index = {str(u): i for i, u in enumerate(artifact.user_ids.tolist())}
        self.indptr = torch.as_tensor(artifact.seen_indptr, dtype=torch.int64)
        self.indices = torch.as_tensor(artifact.seen_indices, dtype=torch.int64)
        self._indptr_np = self.indptr.numpy()
        self._indices_np = self.indices.numpy()
        self.popularity = torch.as_tensor(artifact.popularity, dtype=torch.float32)
        self._pop_order = torch.argsort(self.popularity, descending=True, stable=True)

    def _init_model_form(self, artifact: Artifact, chunk_elements: int | None) -> None:
        """Model form: no embedding matrices; scores (chunk, n_items) come from the model."""
        n_items = artifact.n_items
        self.model = artifact.model.to(self.device).eval()
        self.user_emb = self.item_emb_t = None
        self._item_tiles = None
        self.product = "rows"
        if self.selector == "torch":  # scores are copied into a row padded for the levels
            self.levels, self._width = _hierarchy_shape(n_items, self.fanout)
        else:
            self.levels, self._width = 0, n_items
        self._init_lookup(artifact)
        self.chunk_users = _chunk_users(chunk_elements, n_items, max(1, artifact.dim), tiles=False)

    def _scores_into(self, part: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
        """Scores of users `part` (b,) in the first b rows of `buffer` (rows, width): the dot
        product, or the model's ``score`` (padding columns past n_items left to the caller)."""
        out = buffer[: len(part)]
        if self.model is None:
            return torch.mm(self.user_emb[part.to(self.device)], self.item_emb_t, out=out)
        out[:, : self.n_items] = self.model.score(part.to(self.device))
        return out

    @classmethod
    def load(cls, path: str | Path, unknown: str = "popularity", **kwargs: Any) -> TopKRecommender:
        """Load and validate the artifact at `path` (see `load_artifact`)."""
        return cls(load_artifact(path), unknown=unknown, **kwargs)

    @property
    def n_users(self) -> int:
        return self.artifact.n_users

    @property
    def n_items(self) -> int:
        return self.artifact.n_items

    # -- id mapping ---------------------------------------------------------------------------
    def lookup(self, user_ids: Sequence[Any]) -> np.ndarray:
        """Internal indices of original user ids; -1 where unknown."""
        get = self._index.get
        return np.fromiter(
            (get(str(_py(u)), -1) for u in user_ids), dtype=np.int64, count=len(user_ids)
        )

    # -- the hot path -------------------------------------------------------------------------
    def _mask_seen(self, scores: torch.Tensor, idx: torch.Tensor) -> None:
        """Set scores of each row's training items to -inf (vectorised over the rows)."""
        starts = self.indptr[idx]
        counts = self.indptr[idx + 1] - starts
        total = int(counts.sum())
        if total == 0:
            return
        rows = torch.repeat_interleave(torch.arange(len(idx)), counts)
        offsets = torch.cumsum(counts, 0) - counts
        pos = torch.arange(total) - offsets[rows] + starts[rows]
        cols = self.indices[pos]
        scores.view(-1).index_fill_(0, rows * scores.shape[1] + cols, float("-inf"))

    def topk_internal(
        self, idx: np.ndarray | torch.Tensor, k: int, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (scores, internal item indices) for known internal user indices, chunked.

        Returns (values (n, k) float32 descending, items (n, k) int64), on the CPU.
        """
        idx = torch.as_tensor(idx, dtype=torch.int64)
        k = min(int(k), self.n_items)
        if self.selector == "numba":
            return self._topk_compiled(idx, k, exclude_seen)
        vals, tops = [], []
        # one score buffer reused by every chunk (no page faults of a fresh tensor per chunk)
        rows = min(self.chunk_users, max(len(idx), 1))
        width = self._width if self.model is not None else self.item_emb_t.shape[1]
        buffer = torch.empty((rows, width), device=self.device)
        with torch.no_grad():
            for start in range(0, len(idx), self.chunk_users):
                part = idx[start : start + self.chunk_users]
                scores = self._scores_into(part, buffer)
                if scores.shape[1] > self.n_items:
                    scores[:, self.n_items :] = float("-inf")
                if exclude_seen:
                    self._mask_seen(scores, part)
                # the kernel's cost model (W_h + h·k·fanout); width divides fanout**self.levels
                levels = selection.choose_levels(scores.shape[1], k, self.fanout, self.levels)
                if levels:
                    v, t = _hierarchical_topk(scores, k, self.fanout, levels)
                    t.clamp_(max=self.n_items - 1)  # padding (-inf) only when k > unseen items
                else:
                    v, t = torch.topk(scores[:, : self.n_items], k, dim=1)
                vals.append(v)
                tops.append(t)
        if not vals:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
        return torch.cat(vals).cpu(), torch.cat(tops).cpu()

    def _topk_compiled(
        self, idx: torch.Tensor, k: int, exclude_seen: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`topk_internal` with the compiled kernels: one user is scored by torch and selected
        on the calling thread; a batch goes through `selection.tiled_scored_topk` or
        `selection.scored_topk` (``self.product``), whose workers (torch's thread count) each
        multiply a block of `chunk_users` rows and select it."""
        n = len(idx)
        values = np.empty((n, k), dtype=np.float32)
        items = np.empty((n, k), dtype=np.int64)
        if n == 0 or k == 0:
            return torch.from_numpy(values), torch.from_numpy(items)
        users = idx.numpy()
        fanout = max(self.fanout, 2)
        levels = selection.choose_levels(self.n_items, k, fanout) if self.fanout else 0
        common = {"n_items": self.n_items, "exclude_seen": exclude_seen, "out": (values, items)}
        csr = (self._indptr_np, self._indices_np)
        batch = {"threads": torch.get_num_threads(), "block_rows": self.chunk_users}
        with torch.no_grad():
            if self.model is not None:  # the model scores a chunk, the kernel selects it
                for s in range(0, n, self.chunk_users):
                    part = idx[s : s + self.chunk_users]
                    scores = self.model.score(part).float().contiguous().numpy()
                    selection.masked_topk(
                        scores, users[s : s + len(part)], *csr, k, fanout=fanout, levels=levels,
                        threads=batch["threads"], n_items=self.n_items, exclude_seen=exclude_seen,
                        out=(values[s : s + len(part)], items[s : s + len(part)]),
                    )  # fmt: skip
            elif n < selection.PARALLEL_MIN_ROWS:
                scores = torch.mm(self.user_emb[idx], self.item_emb_t).numpy()
                selection.masked_topk(
                    scores, users, *csr, k, fanout=fanout, levels=levels, **common
                )
            elif self._item_tiles is not None and k <= self._item_tiles.shape[2]:
                selection.tiled_scored_topk(
                    self.user_emb.numpy()[users], self._item_tiles, users, *csr, k,
                    **batch, **common,
                )  # fmt: skip
            else:
                selection.scored_topk(
                    self.user_emb.numpy()[users], self.item_emb_t.numpy(), users, *csr, k,
                    fanout=fanout, levels=levels, **batch, **common,
                )  # fmt: skip
        return torch.from_numpy(values), torch.from_numpy(items)

    def warm_up(self, k: int = 10) -> None:
        """Run the serving path once for one user and for a small batch (compiles or loads the
        kernel, allocates), so that the first real request is not slower than the rest."""
        if self.n_users:
            self.topk_internal(torch.zeros(1, dtype=torch.int64), k)
            self.topk_internal(torch.arange(min(self.n_users, 4)), k)

    def recommend(
        self,
        user_ids: Sequence[Any] | Any,
        k: int = 20,
        exclude_seen: bool = True,
        unknown: str | None = None,
    ) -> Recommendations:
        """Top-`k` original item ids and scores for each of `user_ids` (original ids).

        A single id (not a list) is treated as a list of one. `unknown` overrides the policy of
        this recommender for this call. Raises ConfigError for k <= 0 and `UnknownUserError`.
        """
        if isinstance(user_ids, (str, bytes, int, np.integer)):
            user_ids = [user_ids]
        user_ids = list(user_ids)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ConfigError(f"k must be a positive integer, got {k!r}", field="k")
        policy = unknown or self.unknown
        if policy not in UNKNOWN_POLICIES:
            raise ConfigError(f"unknown-user policy must be popularity or error, got {policy!r}")
        k = min(int(k), self.n_items)
        idx = self.lookup(user_ids)
        known = idx >= 0
        if not known.all() and policy == "error":
            raise UnknownUserError([u for u, ok in zip(user_ids, known, strict=True) if not ok])
        n = len(user_ids)
        items_idx = np.zeros((n, k), dtype=np.int64)
        scores = np.zeros((n, k), dtype=np.float32)
        if known.any():
            v, t = self.topk_internal(idx[known], k, exclude_seen=exclude_seen)
            scores[known] = v.numpy()
            items_idx[known] = t.numpy()
        if not known.all():
            top = self._pop_order[:k]
            items_idx[~known] = top.numpy()
            scores[~known] = self.popularity[top].numpy()
        return Recommendations(
            items=self.item_ids[items_idx],
            scores=scores,
            fallback=~known,
            users=user_ids,
        )

    def recommend_all(
        self, k: int = 50, exclude_seen: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (scores, internal item indices) of every user of the artifact."""
        return self.topk_internal(torch.arange(self.n_users), k, exclude_seen)
