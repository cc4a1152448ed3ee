"""Small file helpers shared across packages: atomic writes and sha256 digests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def atomic_write_bytes(path: Path, writer: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`.

    `writer(tmp_path)` writes the content; a failure leaves `path` untouched and no temp file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
