"""Bring a label, brain mask or image onto the prediction's grid, or refuse.

A file on another grid is resampled only when it covers the same world extent as the prediction (every face of
its field of view within one voxel of the prediction's): the same scan at another resolution. A label that
covers another extent (transposed axes, another crop, a wrong header) would be scored against the wrong voxels
and give a plausible-looking but meaningless Dice, so it is an error naming the file. Every resampling is
logged and recorded (`Resampled`), so summary.json says which labels were not scored on their own grid."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class Resampled:
    case: str
    kind: str          # "label" | "brain mask" | "image" | "segmentation"
    file: str
    size: List[int]
    spacing: List[float]
    prediction_size: List[int]
    prediction_spacing: List[float]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3) and
            np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def world_box(image: sitk.Image) -> np.ndarray:
    """(2, 3) min/max world corner of the image's field of view (voxel edges, any direction)."""
    size = np.asarray(image.GetSize(), float)
    corners = [image.TransformContinuousIndexToPhysicalPoint([(-0.5 if b else s - 0.5) for b, s in zip(bits, size)])
               for bits in np.ndindex(2, 2, 2)]
    return np.stack([np.min(corners, axis=0), np.max(corners, axis=0)])


def _mm(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{lo:.1f}..{hi:.1f}" for lo, hi in zip(box[0], box[1])) + "] mm"


def on_grid(image: sitk.Image, reference: sitk.Image, path: Path, kind: str, case: str,
            record: Optional[List[Resampled]] = None) -> sitk.Image:
    """`image` on the reference's grid: as it is, or resampled (nearest neighbour; linear for kind "image")
    when both cover the same world extent. InputError naming `path` otherwise, or when a non-empty mask loses
    every voxel on the way."""
    if same_grid(image, reference):
        return image
    box, ref = world_box(image), world_box(reference)
    overlap = np.minimum(box[1], ref[1]) - np.maximum(box[0], ref[0])
    if np.any(overlap <= 0):
        raise InputError(path, f"grid does not overlap the prediction's grid (world box {box.round(1).tolist()} mm "
                               f"vs {ref.round(1).tolist()} mm): wrong file or wrong header?")
    voxel = max(max(image.GetSpacing()), max(reference.GetSpacing()))
    if np.abs(box - ref).max() > voxel:
        raise InputError(path, f"{kind} covers another field of view than the prediction (size {image.GetSize()} vs "
                               f"{reference.GetSize()}, world extent {_mm(box)} vs {_mm(ref)}): not resampled; "
                               f"transposed axes, another crop or a wrong header?")
    linear = kind == "image"
    logger.warning("%s: grid differs from the prediction's (size %s vs %s); resampled %s to it", path,
                   image.GetSize(), reference.GetSize(), "linearly" if linear else "with nearest neighbour")
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear if linear else sitk.sitkNearestNeighbor,
                        0.0, image.GetPixelID())
    if not linear and sitk.GetArrayViewFromImage(image).any() and not sitk.GetArrayViewFromImage(out).any():
        raise InputError(path, "no labelled voxel lies inside the prediction's grid after resampling")
    if record is not None:
        record.append(Resampled(case, kind, str(path), list(image.GetSize()), list(image.GetSpacing()),
                                list(reference.GetSize()), list(reference.GetSpacing())))
    return out
