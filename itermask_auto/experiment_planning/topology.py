"""U-Net topology and memory estimate for a patch (nnU-Net's rules, simplified and named)."""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

MIN_FEATURE_MAP = 4        # an axis is pooled while it stays >= this many voxels after pooling
MAX_POOLS = 5
ANISO_KERNEL_RATIO = 2.0   # an axis this much coarser than the finest gets kernel 1 and no pooling


def unet_topology(patch_size: Sequence[int], spacing: Sequence[float], base_features: int = 16,
                  max_features: int = 256, require_even: bool = True
                  ) -> Tuple[List[List[int]], List[List[int]], List[int]]:
    """(strides, kernel_sizes, features_per_stage). Pool an axis while its feature map stays >= MIN_FEATURE_MAP
    and its current spacing is within ANISO_KERNEL_RATIO of the finest one (so thick slices are not pooled early)."""
    size = list(patch_size)
    current = list(spacing)
    strides: List[List[int]] = [[1] * len(size)]
    kernels: List[List[int]] = [[3 if s <= ANISO_KERNEL_RATIO * min(current) else 1 for s in current]]
    while len(strides) <= MAX_POOLS:
        finest = min(current)
        stride = [2 if (n // 2 >= MIN_FEATURE_MAP and (n % 2 == 0 or not require_even)
                        and s <= ANISO_KERNEL_RATIO * finest) else 1
                  for n, s in zip(size, current)]
        if not any(v == 2 for v in stride):
            break
        size = [n // v for n, v in zip(size, stride)]
        current = [s * v for s, v in zip(current, stride)]
        strides.append(stride)
        kernels.append([3 if s <= ANISO_KERNEL_RATIO * min(current) else 1 for s in current])
    features = [min(base_features * 2 ** i, max_features) for i in range(len(strides))]
    return strides, kernels, features


def divisibility(strides: Sequence[Sequence[int]]) -> List[int]:
    return [int(math.prod(s[a] for s in strides)) for a in range(len(strides[0]))]


def round_patch(patch: Sequence[float], spacing: Sequence[float]) -> List[int]:
    """Round a patch up so each axis is divisible by its total pooling factor."""
    patch = [max(8, int(math.ceil(p))) for p in patch]
    strides, _, _ = unet_topology(patch, spacing, require_even=False)
    return [int(math.ceil(p / d) * d) for p, d in zip(patch, divisibility(strides))]


def activation_memory_gb(patch_size: Sequence[int], strides: Sequence[Sequence[int]], features: Sequence[int],
                         batch_size: int, n_conv: int = 2, bytes_per_value: int = 2) -> float:
    """Rough training memory of the activations kept for backward: per stage, voxels × features × (encoder and
    decoder convolutions, each storing conv output, norm and nonlinearity) × batch. bf16/fp16 = 2 bytes."""
    voxels = float(math.prod(patch_size))
    total = 0.0
    for stride, f in zip(strides, features):
        voxels /= math.prod(stride)
        total += voxels * f * n_conv * 2 * 3
    return total * batch_size * bytes_per_value / 1024 ** 3
