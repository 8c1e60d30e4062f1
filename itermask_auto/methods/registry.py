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
    #                      | "itermask2" (first-iteration net + shrink)
    network: str = "unet"  # "unet" (skip connections) | "autoencoder" (no skips: training/network.py)


METHODS: Dict[str, MethodSpec] = {
    "itermask3d": MethodSpec("itermask3d", "IterMask3D: masked reconstruction with iterative mask shrinking",
                             training_mask="blobs", inference="iterative"),
    # ablation: the same masked-reconstruction training, but one pass with the whole brain masked
    "oneshot": MethodSpec("oneshot", "one-shot masked reconstruction (whole brain masked, one pass)",
                          training_mask="blobs", inference="oneshot"),
    # baseline: plain reconstruction autoencoder, same stages/features, no skips (a U-Net would copy its input);
    # it gets [x, hf] like the others, so input and capacity match; nothing is masked in training or inference
    "ae": MethodSpec("ae", "plain reconstruction autoencoder (no mask, no skip connections, one pass)",
                     training_mask="none", inference="plain", network="autoencoder"),
    # IterMask2: a second network (first_iter, input = the hf channels only) chooses the first mask (top 60 % of
    # its error), then the masked autoencoder shrinks it with τ from healthy validation (inference/itermask2.py)
    "itermask2": MethodSpec("itermask2", "IterMask2: first-iteration network on the high-frequency channels, then "
                            "masked reconstruction with a shrinking mask (tau from healthy validation)",
                            training_mask="blobs", inference="itermask2"),
}

DEFAULT_METHOD = "itermask3d"


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}' (registered: {sorted(METHODS)})")
    return METHODS[name]
