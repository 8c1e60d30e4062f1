"""Methods are registered here by name (`-m NAME`); they share plan, preprocessing, training loop and prediction.

A method says how training inputs are masked and which inference procedure turns a trained network into an
anomaly map. Adding one = one module describing it + one entry in `METHODS`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    training_mask: str   # "blobs" (IterMask3D generator) | "none" (plain autoencoder)
    inference: str       # "iterative" (IterMask3D) | "oneshot" (whole brain masked, one pass) | "plain" (AE)


METHODS: Dict[str, MethodSpec] = {
    "itermask3d": MethodSpec("itermask3d", "IterMask3D: masked reconstruction with iterative mask shrinking",
                             training_mask="blobs", inference="iterative"),
    # ablation: the same masked-reconstruction training, but one pass with the whole brain masked
    "oneshot": MethodSpec("oneshot", "one-shot masked reconstruction (whole brain masked, one pass)",
                          training_mask="blobs", inference="oneshot"),
}

DEFAULT_METHOD = "itermask3d"


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}' (registered: {sorted(METHODS)})")
    return METHODS[name]
