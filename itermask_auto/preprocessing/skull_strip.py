"""Skull stripping: decide whether a scan is already stripped, and strip it offline when it is not.

The stripper is deepbet (MIT licence, TorchScript models shipped inside the wheel, no download at run time);
see docs/skullstrip.md for the measurement that chose it.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)

MIN_BRAIN_ML = 300.0
MAX_BRAIN_ML = 3000.0
# Intracranial volume stays below ~2.1 l even in large adults; a head with scalp and skull is > 2.5 l.
MAX_STRIPPED_ML = 2300.0
MAX_ENCLOSED_HOLES = 0.05  # background enclosed by the object: a zero-valued skull layer, not a stripped brain
_RAS = np.array([[0, 1], [1, 1], [2, 1]])


def _border_values(array: np.ndarray) -> np.ndarray:
    faces = [np.take(array, i, axis=ax).ravel() for ax in range(array.ndim) for i in (0, -1)]
    return np.concatenate(faces)


def _background_value(array: np.ndarray) -> float:
    """Most frequent value on the volume border: 0 for most stripped scans, the minimum for z-scored ones
    (BraTS), and still 0 when N4/interpolation left a few negative voxels inside the brain (MSLUB, ISLES)."""
    values, counts = np.unique(_border_values(array), return_counts=True)
    return float(values[counts.argmax()]) + 0.0  # + 0.0 turns -0.0 into 0.0 for the log


def looks_skull_stripped(array: np.ndarray, spacing: Optional[Sequence[float]] = None) -> Tuple[bool, str]:
    """Heuristic: a stripped scan is one compact non-background blob inside a border-touching background of
    one exact value. A raw scan has noisy air (not one value), a head cut by the field of view at the neck,
    a skull/scalp shell separated from the brain, or a zero-valued skull layer enclosed by the scalp.
    `spacing` (same axis order as `array`) adds a volume check: a whole head is bigger than any brain."""
    array = np.asarray(array)
    if array.ndim != 3 or array.size == 0:
        return False, f"not a 3-D array (shape {array.shape})"
    bg_value = _background_value(array)
    border_bg = float(np.mean(_border_values(array) == bg_value))
    if border_bg < 0.98:
        return False, (f"volume border is only {border_bg:.1%} background (value {bg_value:g}): "
                       "head or noisy air reaches the edge")
    background = array == bg_value
    bg_fraction = float(background.mean())
    if bg_fraction < 0.15:
        return False, f"only {bg_fraction:.1%} of voxels equal the background value {bg_value:g}"
    # background connected to the border = outside; the rest (foreground + enclosed holes) is the object
    labels, _ = ndi.label(background)
    outside_labels = np.unique(_border_values(labels))
    outside = np.isin(labels, outside_labels[outside_labels > 0])
    obj = ~outside
    obj_labels, n_obj = ndi.label(obj)
    if n_obj == 0:
        return False, "no foreground"
    sizes = np.bincount(obj_labels.ravel())[1:]
    largest = float(sizes.max() / sizes.sum())
    if largest < 0.995:
        return False, (f"foreground is {n_obj} pieces (largest {largest:.1%}): skull/scalp shell or noise, "
                       "not one brain")
    holes = float(obj.sum() / max(1, (~background).sum())) - 1.0
    if holes > MAX_ENCLOSED_HOLES:
        return False, (f"{holes:.1%} of the object is enclosed background: a shell (scalp) around a gap (skull), "
                       "not a stripped brain")
    if spacing is not None:
        ml = float(sizes.max() * np.prod(spacing) / 1000.0)
        if ml > MAX_STRIPPED_ML:
            return False, f"foreground is {ml:.0f} ml, more than a brain ({MAX_STRIPPED_ML:.0f} ml): a whole head"
    return True, (f"{bg_fraction:.1%} of voxels = background {bg_value:g} around one compact blob "
                  f"(border {border_bg:.1%} background, {n_obj} piece(s), {holes:.1%} enclosed holes)")


def brain_mask_from_stripped(array: np.ndarray) -> np.ndarray:
    """Brain mask of an already stripped scan: non-background voxels, holes filled, largest component."""
    array = np.asarray(array)
    foreground = array != _background_value(array)
    labels, n = ndi.label(foreground)
    if n == 0:
        return np.zeros(array.shape, dtype=bool)
    largest = np.bincount(labels.ravel())[1:].argmax() + 1
    return ndi.binary_fill_holes(labels == largest)


def _ras_affine(image: sitk.Image) -> np.ndarray:
    """nibabel-style (RAS) affine of a SimpleITK (LPS) image indexed (x, y, z)."""
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    return affine


class SkullStripper:
    """deepbet brain extraction on a SimpleITK image; the mask comes back on the input's exact grid.

    deepbet expects RAS voxel order (it calls nib.as_closest_canonical); we flip/permute the array ourselves
    and undo it, so no resampling ever happens and any input orientation works."""

    backend = "deepbet"

    def __init__(self, device: str = "cpu", threads: Optional[int] = None, threshold: float = 0.5,
                 n_dilate: int = 0):
        import torch  # heavy imports only when a stripper is actually built
        from deepbet.bet import BrainExtraction  # imports torch/nibabel/cc3d/fill_voids/pandas only: no GUI, no network

        self.device = torch.device(device)
        self.threads = threads
        self.threshold = threshold
        self.n_dilate = n_dilate
        with warnings.catch_warnings():  # torch warns that torch.jit.load is deprecated: deepbet's business
            warnings.simplefilter("ignore", DeprecationWarning)
            self._bet = BrainExtraction(no_gpu=True)  # loads the packaged TorchScript models onto the CPU
        self._bet.model.to(self.device)
        self._bet.bbox_model.to(self.device)
        logger.info("skull stripper %s loaded (device %s, threshold %.2f, dilate %d)", self.backend,
                    self.device, threshold, n_dilate)

    def _mask_ras(self, volume: np.ndarray) -> np.ndarray:
        import torch

        old_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            prob = self._bet.run_model(volume.copy())
            mask = prob > self.threshold
            if not mask.any():
                return mask
            return self._bet.postprocess(mask, self.n_dilate).astype(bool)
        finally:
            torch.set_num_threads(old_threads)

    def brain_mask(self, image: sitk.Image, source_path: Optional[str | os.PathLike] = None) -> sitk.Image:
        """uint8 brain mask (1 = brain) on `image`'s grid; InputError naming `source_path` if stripping fails."""
        import nibabel as nib

        where = str(source_path) if source_path is not None else "<image in memory>"
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(where, f"skull-stripping needs a 3-D scalar image, got {image.GetDimension()}-D")
        volume = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)  # (x, y, z) voxel order
        ornt = nib.io_orientation(_ras_affine(image))
        try:
            mask_ras = self._mask_ras(np.ascontiguousarray(nib.apply_orientation(volume, ornt)))
        except (AssertionError, ValueError, IndexError, RuntimeError) as e:
            raise InputError(where, f"skull-stripping failed ({type(e).__name__}: {str(e)[:120]})") from None
        back = nib.orientations.ornt_transform(_RAS, ornt)
        mask_zyx = np.asarray(nib.apply_orientation(mask_ras, back)).transpose(2, 1, 0).astype(np.uint8)
        ml = float(mask_zyx.sum()) * float(np.prod(image.GetSpacing())) / 1000.0
        if not MIN_BRAIN_ML <= ml <= MAX_BRAIN_ML:
            raise InputError(where, f"empty brain after skull-stripping ({ml:.0f} ml, expected "
                                    f"{MIN_BRAIN_ML:.0f}-{MAX_BRAIN_ML:.0f} ml): not a head scan?")
        out = sitk.GetImageFromArray(np.ascontiguousarray(mask_zyx))
        out.CopyInformation(image)
        logger.info("skull-stripped %s: brain %.0f ml", where, ml)
        return out


_default: Optional[SkullStripper] = None


def skull_strip(image: sitk.Image, stripper: Optional[SkullStripper] = None,
                source_path: Optional[str | os.PathLike] = None) -> sitk.Image:
    """Brain mask (uint8, image's grid) of an unstripped scan; builds and caches a CPU deepbet stripper once."""
    global _default
    if stripper is None:
        if _default is None:
            _default = SkullStripper()
        stripper = _default
    return stripper.brain_mask(image, source_path=source_path)
