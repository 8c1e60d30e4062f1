"""IterMask3D training masks: Gaussian blobs drawn on a coarse block grid, sizes in mm.

Reference (1 mm data): choose a scale, pick a random brain voxel on the coarse grid, draw n_points from a
Gaussian with covariance R·diag(λ)·Rᵀ (λᵢ ~ U(lo, hi) in coarse-voxel² units), mark the hit coarse voxels,
upsample by block repetition, keep inside the brain. Here the block edge is given in mm and converted per axis
(max(1, round(mm / spacing))), so a blob covers the same physical extent at any spacing."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from itermask_auto.experiment_planning.plans import TrainingMaskPlan


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def block_edges(block_mm: float, spacing: Sequence[float]) -> list[int]:
    return [max(1, int(round(block_mm / float(s)))) for s in spacing]


def blob_mask(brain_mask_patch: np.ndarray, spacing: Sequence[float], mask_plan: TrainingMaskPlan,
              rng: np.random.Generator) -> np.ndarray:
    """One blob mask (bool, same shape as the patch) inside `brain_mask_patch`; 2d or 3d.

    The blob is centred at a uniformly chosen brain voxel of the patch; an empty brain gives an empty mask."""
    brain = np.asarray(brain_mask_patch, dtype=bool)
    dim = brain.ndim
    if len(spacing) != dim:
        raise ValueError(f"spacing {list(spacing)} does not match a {dim}d patch")
    brain_idx = np.flatnonzero(brain)
    if brain_idx.size == 0:
        return np.zeros_like(brain)
    probs = np.asarray(mask_plan.block_probabilities, dtype=np.float64)
    k = rng.choice(len(mask_plan.block_sizes_mm), p=probs / probs.sum())
    blocks = np.array(block_edges(mask_plan.block_sizes_mm[k], spacing))
    centre = np.array(np.unravel_index(brain_idx[rng.integers(brain_idx.size)], brain.shape)) // blocks
    coarse_shape = -(-np.array(brain.shape) // blocks)  # ceil division

    lo, hi = mask_plan.variance_range_blocks
    lam = rng.uniform(lo, hi, size=dim)
    transform = random_rotation(dim, rng) * np.sqrt(lam)  # A with A·Aᵀ = R·diag(λ)·Rᵀ
    points = rng.standard_normal((int(mask_plan.n_points), dim)) @ transform.T + centre
    ijk = np.rint(points).astype(np.int64)
    ijk = ijk[np.all((ijk >= 0) & (ijk < coarse_shape), axis=1)]
    coarse = np.zeros(coarse_shape, dtype=bool)
    coarse[tuple(ijk.T)] = True

    full = coarse
    for axis, b in enumerate(blocks):
        full = np.repeat(full, b, axis=axis)
    full = full[tuple(slice(0, n) for n in brain.shape)]
    return full & brain


def training_mask(brain_mask_patch: np.ndarray, spacing: Sequence[float], mask_plan: TrainingMaskPlan,
                  rng: np.random.Generator, kind: str) -> np.ndarray:
    """Dispatch on MethodSpec.training_mask: "blobs" (IterMask3D) or "none" (plain autoencoder: nothing masked)."""
    if kind == "blobs":
        return blob_mask(brain_mask_patch, spacing, mask_plan, rng)
    if kind == "none":
        return np.zeros(np.shape(brain_mask_patch), dtype=bool)
    raise ValueError(f"unknown training mask kind '{kind}' (blobs|none)")
