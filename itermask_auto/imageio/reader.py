"""Read and validate images with SimpleITK. Every failure is an `InputError` naming the file."""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import List, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from itermask_auto.imageio.dicom import is_dicom_file, read_series_of
from itermask_auto.imageio.errors import InputError

MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
GEOMETRY_TOLERANCE = 1e-3
NON_DICOM_ENDINGS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read a 3-D single-component image and check it is usable; raise InputError otherwise.

    Any format SimpleITK reads (.nii(.gz), .mha, .nrrd, ...); a DICOM file stands for its whole series."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.name.endswith((".nii", ".nii.gz")):
        _check_nifti_voxels(path)
    if not path.name.endswith(NON_DICOM_ENDINGS) and is_dicom_file(path):
        return validate_image(read_series_of(path), path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in first if "ERROR" in ln or "error" in ln), first[-1] if first else "")
        raise InputError(path, f"cannot be read as an image ({detail.strip()[:160]})") from None
    return validate_image(image, path)


def validate_image(image: sitk.Image, path: str | os.PathLike) -> sitk.Image:
    """The checks every input image passes, whatever its format (a 4-D singleton becomes 3-D)."""
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    elif dim != 3:
        raise InputError(path, f"expected a 3-D image, got {dim}-D with size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected one component per voxel, got {image.GetNumberOfComponentsPerPixel()}")
    if min(image.GetSize()) < 2:
        raise InputError(path, f"image has a degenerate size {image.GetSize()} (a 2-D slice stored as 3-D?)")
    spacing = image.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) < MIN_SPACING_MM or max(spacing) > MAX_SPACING_MM:
        raise InputError(path, f"implausible voxel spacing {tuple(round(s, 4) for s in spacing)} mm "
                               f"(allowed {MIN_SPACING_MM}..{MAX_SPACING_MM})")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-2:
        raise InputError(path, "direction matrix is not a rotation")
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)):
        n_bad = int((~np.isfinite(array)).sum())
        raise InputError(path, f"contains {n_bad} NaN/inf voxels")
    if float(array.max()) == float(array.min()):
        raise InputError(path, f"image is constant (every voxel = {float(array.min())}): empty scan?")
    return image


def _check_nifti_voxels(path: Path) -> None:
    """SimpleITK's NIfTI reader turns NaN into 0 and reports a bad gzip stream in many lines: read the voxels
    once with nibabel to catch both with a clear message."""
    try:
        nii = nib.load(str(path))
        data = np.asanyarray(nii.dataobj)
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(path, f"corrupt or truncated file ({e})") from None
    except Exception as e:  # noqa: BLE001 - nibabel raises several types for a broken header
        raise InputError(path, f"corrupt or unreadable NIfTI file "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:100]})") from None
    # ITK silently replaces a zero pixdim by 1 mm: a zero or non-finite spacing must be caught here
    zooms = _raw_pixdim(path, nii)[: min(3, data.ndim)]
    if not np.all(np.isfinite(zooms)) or np.any(zooms == 0):
        raise InputError(path, f"zero or non-finite voxel spacing in the header (pixdim {zooms.tolist()} mm)")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError(path, f"contains {int((~np.isfinite(data)).sum())} NaN/inf voxels")


def _raw_pixdim(path: Path, nii) -> np.ndarray:
    """pixdim[1:4] as stored: nibabel's checked header has already turned 0 into 1."""
    from nibabel.openers import ImageOpener
    try:
        with ImageOpener(str(path)) as f:
            header = type(nii.header).from_fileobj(f, check=False)
        return np.asarray(header["pixdim"][1:4], dtype=float)
    except Exception:  # noqa: BLE001 - fall back to the checked header
        return np.asarray(nii.header.get_zooms()[:3], dtype=float)


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = GEOMETRY_TOLERANCE) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 10)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def read_channels(paths: Sequence[str | os.PathLike]) -> List[sitk.Image]:
    """Read the channel files of one case; all must share one geometry."""
    images = [read_image(p) for p in paths]
    for p, im in zip(paths[1:], images[1:]):
        if not same_geometry(images[0], im):
            raise InputError(p, f"geometry differs from channel 0 ({Path(paths[0]).name}): size {im.GetSize()} "
                                f"vs {images[0].GetSize()}, spacing {im.GetSpacing()} vs {images[0].GetSpacing()}")
    return images


def read_mask(path: str | os.PathLike, reference: sitk.Image) -> sitk.Image:
    """Read a brain mask that must be on the reference image's grid."""
    path = Path(path)
    try:
        mask = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(path, "cannot be read as an image") from None
    if mask.GetDimension() != 3 or not same_geometry(mask, reference):
        raise InputError(path, "brain mask is not on the image's grid (size/spacing/origin/direction differ)")
    if not sitk.GetArrayViewFromImage(mask).any():
        raise InputError(path, "brain mask is empty")
    return mask
