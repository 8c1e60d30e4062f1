"""Shared by the bad-input suites (test_bad_input.py: plan and train; test_bad_input_predict.py;
test_bad_input_evaluate.py): ways to break a NIfTI file, log helpers and a tiny trained model."""
from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path
from typing import Callable, Dict, List

import nibabel as nib
import numpy as np
import SimpleITK as sitk

import trainer_fixtures

NIFTI = ".nii.gz"


# ---- ways to break a NIfTI file (shared by the plan and predict stages) -------------------------------------
def _rewrite(path: Path, array: np.ndarray, spacing=None) -> None:
    ref = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(ref)
    if spacing is not None:
        out.SetSpacing(spacing)
    sitk.WriteImage(out, str(path))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def corrupt_gzip(p: Path) -> None:
    p.write_bytes(gzip.compress(b"not a nifti at all")[:20])


def truncated(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def four_d(p: Path) -> None:
    n = nib.load(str(p))
    d = np.asanyarray(n.dataobj)
    nib.save(nib.Nifti1Image(np.stack([d, d], -1), n.affine), str(p))


def two_d(p: Path) -> None:
    n = nib.load(str(p))
    nib.save(nib.Nifti1Image(np.asanyarray(n.dataobj)[:, :, 10], n.affine), str(p))


def with_nan(p: Path) -> None:
    a = _array(p)
    a[tuple(s // 2 for s in a.shape)] = np.nan
    _rewrite(p, a)


def with_inf(p: Path) -> None:
    a = _array(p)
    a[a > np.percentile(a, 99)] = np.inf
    _rewrite(p, a)


def all_zero(p: Path) -> None:
    _rewrite(p, np.zeros_like(_array(p)))


def tiny_brain(p: Path) -> None:
    """A 'skull-stripped' scan whose brain is a few voxels: the brain mask is empty for any purpose."""
    a = np.zeros_like(_array(p))
    c = [s // 2 for s in a.shape]
    a[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 500.0
    a[tuple(c)] = 600.0
    _rewrite(p, a)


def zero_spacing(p: Path) -> None:
    """pixdim[1] = 0 in the raw header bytes (nibabel/ITK would both silently make it 1 mm)."""
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[80:84] = struct.pack("<f", 0.0)
    p.write_bytes(gzip.compress(bytes(raw)))


def absurd_spacing(p: Path) -> None:
    _rewrite(p, _array(p), spacing=(100.0, 5.0, 5.0))


IMAGE_BREAKERS: Dict[str, tuple[Callable[[Path], None], str]] = {
    "corrupt_gzip": (corrupt_gzip, "corrupt"), "truncated": (truncated, "truncated"),
    "four_d": (four_d, "expected a 3-D image, got 4-D"), "two_d": (two_d, "expected a 3-D image, got 2-D"),
    "nan": (with_nan, "NaN/inf"), "inf": (with_inf, "NaN/inf"), "all_zero": (all_zero, "constant"),
    "empty_brain": (tiny_brain, "empty brain"), "zero_spacing": (zero_spacing, "zero or non-finite voxel spacing"),
    "absurd_spacing": (absurd_spacing, "implausible voxel spacing"),
}


def _errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _temporaries(folder: Path) -> List[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or ".partial" in p.name]


def train_tiny_model(tmp_path_factory):
    """(data root, dataset, fold folder) of a model trained for one iteration on cheap phantoms."""
    return trainer_fixtures.train_tiny_model(tmp_path_factory, "bad_input_model")
