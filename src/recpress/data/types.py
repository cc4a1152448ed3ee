"""The two data objects every stage hands forward: `Interactions` and `Split`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch


def to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR matrix (n_users, n_items), float32 ones, sorted column indices, no duplicates."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    mat = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items)
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    mat.sort_indices()
    return mat


@dataclass(frozen=True)
class Interactions:
    """A set of implicit-feedback (user, item) pairs with contiguous 0-based ids.

    Attributes:
        users, items: int64 arrays of shape (n,), internal 0-based ids.
        n_users, n_items: sizes of the id spaces (may exceed the ids that occur).
        ratings, timestamps: optional float64 / int64 arrays of shape (n,).
        user_ids, item_ids: original ids, shape (n_users,) / (n_items,); internal id k maps to
            user_ids[k]. These are the id maps used at the API edge.
        name: dataset name, for messages and fingerprints.
    """

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    name: str = ""

    def __len__(self) -> int:
        return int(len(self.users))

    def to_csr(self) -> sp.csr_matrix:
        """Binary (n_users, n_items) CSR matrix of the pairs."""
        return to_csr(self.users, self.items, self.n_users, self.n_items)


def _csr_digest(h: hashlib._Hash, mat: sp.csr_matrix) -> None:
    h.update(np.asarray(mat.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(mat.indptr, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(mat.indices, dtype=np.int64).tobytes())


@dataclass(frozen=True)
class Split:
    """Train / validation / test partition of one dataset, as binary CSR matrices.

    All three matrices have shape (n_users, n_items), sorted indices and no explicit zeros;
    they are pairwise disjoint. `user_ids` / `item_ids` map internal ids to original ids.

    Attributes:
        train, valid, test: scipy CSR matrices, float32 ones.
        user_ids, item_ids: original ids, shape (n_users,), (n_items,).
        dataset: dataset name; protocol: split protocol name (e.g. "fixed", "loo").
    """

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    dataset: str = ""
    protocol: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.train.shape[1])

    def part(self, name: str) -> sp.csr_matrix:
        """One of "train", "valid", "test" by name."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split part {name!r}; use train, valid or test")
        return getattr(self, name)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) over the shapes and the pairs of all three parts.

        Two splits with the same fingerprint hold the same pairs under the same ids; used to
        check that a teacher and a student, or a run and an artifact, belong together.
        """
        if "fingerprint" not in self._cache:
            h = hashlib.sha256()
            for mat in (self.train, self.valid, self.test):
                _csr_digest(h, mat)
            self._cache["fingerprint"] = h.hexdigest()[:16]
        return self._cache["fingerprint"]

    def train_tensors(
        self, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(indptr, indices) of the training CSR as int64 tensors on `device`."""
        key = ("train_tensors", str(device))
        if key not in self._cache:
            self._cache[key] = (
                torch.as_tensor(self.train.indptr.astype(np.int64), device=device),
                torch.as_tensor(self.train.indices.astype(np.int64), device=device),
            )
        return self._cache[key]

    def check_trainable(self) -> None:
        """Raise DataError unless a model can be trained on this split: some training pairs,
        and no user whose training items cover the whole catalogue (no negative to sample)."""
        from recpress.errors import DataError

        name = self.dataset or "the dataset"
        if self.train.nnz == 0:
            raise DataError(f"{name} has no training interactions; check the data files")
        if self.n_items < 2:
            raise DataError(f"{name} has {self.n_items} item(s); ranking needs at least 2")
        full = np.flatnonzero(np.diff(self.train.indptr) >= self.n_items)
        if len(full):
            raise DataError(
                f"user {self.user_ids[full[0]]!r} of {name} has interacted with every one of "
                f"the {self.n_items} items, so no negative item can be sampled; remove that "
                "user or add items"
            )

    def stats(self) -> dict[str, int]:
        """Counts: users, items, and interactions per part."""
        return {
            "users": self.n_users,
            "items": self.n_items,
            "train": int(self.train.nnz),
            "valid": int(self.valid.nnz),
            "test": int(self.test.nnz),
        }
