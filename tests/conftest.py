"""Shared fixtures: temporary data roots, and where the optional real data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from itermask_auto.experiment_planning.throughput import THROUGHPUT_ENV
from itermask_auto.training.schedule import CPU_BF16_ENV

# One precision for the whole suite, on every CPU: `auto` takes bf16 on CPUs with native bf16 (AVX512-BF16/AMX),
# which changes every trained model and map there; the tests compare maps with stored ones, resumed runs with
# straight ones and trained phantoms with fixed bounds, all measured in fp32. Set here, so the commands the tests
# start as subprocesses inherit it; tests of the bf16 rule itself unset it.
os.environ[CPU_BF16_ENV] = "0"
# Plans made by the tests take the reference CPU's throughput, not a timing of this machine: the same epochs on
# every run (tests/test_planning_throughput.py times the step itself).
os.environ[THROUGHPUT_ENV] = "reference"

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
