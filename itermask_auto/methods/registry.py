"""Methods by name (`-m NAME`). A method is one folder `methods/<name>/` (see `methods/base.py` for what it
provides); registering it is one line in `_METHODS`. The engine (training, calibration, prediction, export) is
shared and knows no method by name."""
from __future__ import annotations

from typing import Dict

from itermask_auto.methods.ae.method import PlainAutoencoder
from itermask_auto.methods.base import Method
from itermask_auto.methods.constrained.method import ConstrainedAttention, ConstrainedEntropy
from itermask_auto.methods.itermask2.method import IterMask2
from itermask_auto.methods.itermask3d.method import IterMask3D
from itermask_auto.methods.mmccd.method import MMCCD
from itermask_auto.methods.oneshot.method import OneShot
from itermask_auto.methods.sadm.method import SADM

_METHODS = (
    IterMask3D(),
    OneShot(),
    PlainAutoencoder(),
    IterMask2(),
    SADM(),
    ConstrainedAttention(),
    ConstrainedEntropy(),
    MMCCD(),
)
METHODS: Dict[str, Method] = {m.name: m for m in _METHODS}
DEFAULT_METHOD = "itermask3d"


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}' (registered: {sorted(METHODS)})")
    return METHODS[name]
