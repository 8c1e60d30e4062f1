"""The three data roots, read from the environment each time (no import-time global state)."""
from __future__ import annotations

import os
from pathlib import Path

ENV_RAW = "ITERMASK_raw"
ENV_PREPROCESSED = "ITERMASK_preprocessed"
ENV_RESULTS = "ITERMASK_results"


class MissingEnvironmentVariable(RuntimeError):
    pass


def _root(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise MissingEnvironmentVariable(
            f"environment variable {var} is not set: export {var}=/path/to/folder "
            f"(see README, 'Data folders')")
    return Path(value)


def raw_root() -> Path:
    return _root(ENV_RAW)


def preprocessed_root() -> Path:
    return _root(ENV_PREPROCESSED)


def results_root() -> Path:
    return _root(ENV_RESULTS)
