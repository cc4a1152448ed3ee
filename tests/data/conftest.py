"""Fixtures for the data tests: the shared dataset root (RECPRESS_DATA or /work/shared/datasets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_ROOT = "/work/shared/datasets"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding `<name>/` dataset folders; skips the test when absent."""
    root = Path(os.environ.get("RECPRESS_DATA", DEFAULT_ROOT))
    if not root.is_dir():
        pytest.skip(f"dataset root {root} not found; set RECPRESS_DATA")
    return root


@pytest.fixture
def shared_data(data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """RECPRESS_DATA pointed at the shared root and an empty cache, for registry lookups."""
    monkeypatch.setenv("RECPRESS_DATA", str(data_root))
    monkeypatch.setenv("RECPRESS_CACHE", str(tmp_path / "cache"))
    return data_root


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No RECPRESS_DATA, cache in a fresh temp folder."""
    monkeypatch.delenv("RECPRESS_DATA", raising=False)
    monkeypatch.setenv("RECPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
