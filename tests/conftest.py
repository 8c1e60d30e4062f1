"""Shared fixtures: temporary data roots, and where the optional real data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("ITERMASK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def data_roots(tmp_path, monkeypatch):
    """Point ITERMASK_raw/_preprocessed/_results at fresh temporary folders."""
    roots = {name: tmp_path / name for name in ("raw", "preprocessed", "results")}
    for name, path in roots.items():
        path.mkdir()
        monkeypatch.setenv(f"ITERMASK_{name}", str(path))
    return roots


def shared_data_or_skip(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path
