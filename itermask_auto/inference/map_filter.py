"""The planned median filter of every method's anomaly map (inference.map_median_mm).

Reconstruction errors of healthy tissue are thin (one-voxel lines along the falx, ventricle walls, the brain's
rim) or isolated specks, while lesions are blobs of a few mm at least; a median over a ~5 mm window removes the
former and keeps the latter (the residual post-processing of the unsupervised brain-MRI benchmarks, e.g. Baur
et al. 2021, Behrendt et al. 2024). The method's own segmentation (final mask) gets the binary form of the same
filter, a majority vote over the window: for a mask {map > τ} that is exactly {median(map) > τ}, so the mask stays
the thresholded map it was. The engine applies it
to prediction and to the healthy validation cases alike, so the engine's calibrated voxel thresholds are those of
the filtered maps, and IterMask3D's τ search counts the majority-filtered final masks (`majority_mask`); thresholds
a method takes from its own unfiltered maps (IterMask3D's γ from its sweep, `constrained`'s label-free percentile of
its training maps) are not, and a filtered mask may hold fewer voxels than those rules promise."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from itermask_auto.inference.result import InferenceResult, volume_scores


def median_kernel(width_mm: float, spacing: Sequence[float]) -> Tuple[int, ...]:
    """Odd voxel counts per axis whose extent is the largest not over width_mm + one voxel (1 = no filtering
    along that axis): 5 mm -> 3 voxels at 1.5-2 mm, 5 voxels at 1 mm, 1 along a 5 mm slice axis."""
    return tuple(2 * int(np.floor(width_mm / (2.0 * float(s)) + 1e-9)) + 1 if width_mm > 0 else 1 for s in spacing)


def filter_result(result: InferenceResult, region: np.ndarray, width_mm: float,
                  spacing: Sequence[float]) -> InferenceResult:
    """Median-filter result.anomaly_map (and majority-filter result.final_mask) over width_mm, inside `region`;
    the volume scores the engine computes are recomputed (a method's own scores are kept as it set them)."""
    kernel = median_kernel(width_mm, spacing)
    region = np.asarray(region, bool)
    if all(k == 1 for k in kernel) or not region.any():
        return result
    # only the region's bounding box (plus half a window) can change: filter that, not the whole volume
    where = np.argwhere(region)
    box = tuple(slice(max(0, lo - k // 2), hi + k // 2 + 1)
                for lo, hi, k in zip(where.min(axis=0), where.max(axis=0), kernel))
    # outside the region the map is 0: a voxel on the region's edge is kept only when most of its window agrees
    smoothed = np.zeros_like(result.anomaly_map, dtype=np.float32)
    smoothed[box] = ndimage.median_filter(result.anomaly_map[box].astype(np.float32), size=kernel, mode="constant")
    result.anomaly_map = np.where(region, smoothed, np.float32(0)).astype(np.float32)
    result.final_mask = majority_mask(result.final_mask, region, width_mm, spacing)
    result.scores.update(volume_scores(result.anomaly_map, result.final_mask, region))
    return result


def majority_mask(mask: np.ndarray, region: np.ndarray, width_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """The binary form of the filter (a majority vote over the median_kernel window, inside `region`): what
    filter_result makes of a final mask. A calibration that counts final masks (IterMask3D's τ search) counts
    these, so its τ is that of the masks prediction writes."""
    kernel = median_kernel(width_mm, spacing)
    region = np.asarray(region, bool)
    if all(k == 1 for k in kernel) or not region.any():
        return np.asarray(mask, bool) & region
    where = np.argwhere(region)
    box = tuple(slice(max(0, lo - k // 2), hi + k // 2 + 1)
                for lo, hi, k in zip(where.min(axis=0), where.max(axis=0), kernel))
    # majority vote as a count (a binary median; uniform_filter is ~20x faster than median_filter on a mask)
    n = int(np.prod(kernel))
    votes = np.zeros(region.shape, np.float32)
    votes[box] = ndimage.uniform_filter(np.asarray(mask[box], np.float32), size=kernel, mode="constant")
    return (votes * n > n // 2 + 0.5) & region
