"""Canonical orientation by exact axis permutation and flips (no interpolation).

The canonical array is the one SimpleITK gives for an image whose direction is the identity in LPS: array axes
(z, y, x), each index increasing towards S, P, L. For an oblique image the closest such axis assignment is used
(the residual rotation stays in the header we keep), so the round trip back to the input grid is exact."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Reorientation:
    """How a SimpleITK array (k, j, i) maps to the canonical array (z, y, x)."""
    transpose: List[int]   # canonical axis c takes array axis transpose[c]
    flip: List[bool]       # flip canonical axis c after transposing

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3  # allow a leading channel axis
        out = np.transpose(array, list(range(lead)) + [lead + a for a in self.transpose])
        flip_axes = tuple(lead + c for c, f in enumerate(self.flip) if f)
        return np.ascontiguousarray(np.flip(out, flip_axes) if flip_axes else out)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3
        flip_axes = tuple(lead + c for c, f in enumerate(self.flip) if f)
        out = np.flip(array, flip_axes) if flip_axes else array
        inverse = np.argsort(self.transpose)
        return np.ascontiguousarray(np.transpose(out, list(range(lead)) + [lead + a for a in inverse]))

    def spacing_to_canonical(self, spacing_xyz: Sequence[float]) -> List[float]:
        spacing_kji = list(spacing_xyz)[::-1]
        return [float(spacing_kji[a]) for a in self.transpose]


def reorientation_for(direction: Sequence[float]) -> Reorientation:
    """Pick, for each physical axis, the index axis most aligned with it (greedy on |cos|, so obliques work)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)  # column i = physical direction of index axis i
    assigned_index_for_phys = {}
    used = set()
    for flat in np.argsort(-np.abs(d), axis=None):
        phys, idx = divmod(int(flat), 3)
        if phys in assigned_index_for_phys or idx in used:
            continue
        assigned_index_for_phys[phys] = idx
        used.add(idx)
    transpose, flip = [], []
    for phys in (2, 1, 0):  # canonical axes z, y, x
        idx = assigned_index_for_phys[phys]
        transpose.append(2 - idx)  # SimpleITK array axis of index axis idx
        flip.append(bool(d[phys, idx] < 0))
    return Reorientation(transpose=transpose, flip=flip)


def canonical_array(image: sitk.Image) -> tuple[np.ndarray, Reorientation, List[float]]:
    """(array in canonical z,y,x order, the reorientation used, canonical spacing z,y,x)."""
    reo = reorientation_for(image.GetDirection())
    array = reo.to_canonical(sitk.GetArrayFromImage(image))
    return array, reo, reo.spacing_to_canonical(image.GetSpacing())


def orientation_code(direction: Sequence[float]) -> str:
    """Three-letter code (DICOM/LPS convention, as SimpleITK's DICOMOrient) of the closest orientation."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(list(map(float, direction)))
