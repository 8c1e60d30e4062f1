"""A BraTS-2015-like source folder made of phantom heads, for tests and `benchmarks/brats_slices.py --smoke`:
{train,validation,test}/<patient>/ with Flair_subtrMeanDivStd.nii.gz, T1c_subtrMeanDivStd.nii.gz (each z-scored in
the brain, background = the minimum, as in the DeepMedic copy), brainmask.nii.gz and OTMultiClass.nii.gz (the
phantom's lesions as label 2). The lesion shows in FLAIR only (T1c lesion contrast 0), as oedema does."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import _fit_scale, make_phantom

SPLIT_OF = ("test", "test", "validation", "validation", "train", "train")


def _zscore(image: sitk.Image, brain: np.ndarray) -> sitk.Image:
    a = sitk.GetArrayFromImage(image).astype(np.float32)
    values = a[brain]
    a = (a - values.mean()) / max(float(values.std()), 1e-6)
    a[~brain] = a[brain].min()
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(image)
    return out


def write_brats_like_phantoms(folder: Path, n_patients: int = 6, seed: int = 0, size: Sequence[int] = (64, 76, 64),
                              spacing: Sequence[float] = (2.0, 2.0, 2.0), lesion_radius_mm=(6.0, 9.0)) -> List[Path]:
    """Write `n_patients` phantom patients (1-2 lesions each, in the white matter) under `folder`; returns them."""
    folder = Path(folder)
    scale = _fit_scale(size, spacing, skull=False)   # the largest head that fits: slabs keep > 50 ml of brain
    patients = []
    for i in range(n_patients):
        patient = folder / SPLIT_OF[i % len(SPLIT_OF)] / f"brats_phantom_pat{i + 1:04d}_1"
        patient.mkdir(parents=True, exist_ok=True)
        phantoms = {seq: make_phantom(1000 * seed + i, size=size, spacing=spacing, skull=False, n_lesions=1 + i % 2,
                                      lesion_radius_mm=lesion_radius_mm, sequence=seq,
                                      lesion_contrast=None if seq == "FLAIR" else 0.0, anatomy_scale=scale)
                    for seq in ("FLAIR", "T1")}
        brain = sitk.GetArrayFromImage(phantoms["FLAIR"].brain_mask) > 0
        sitk.WriteImage(_zscore(phantoms["FLAIR"].image, brain), str(patient / "Flair_subtrMeanDivStd.nii.gz"))
        sitk.WriteImage(_zscore(phantoms["T1"].image, brain), str(patient / "T1c_subtrMeanDivStd.nii.gz"))
        sitk.WriteImage(phantoms["FLAIR"].brain_mask, str(patient / "brainmask.nii.gz"))
        sitk.WriteImage(sitk.Cast(phantoms["FLAIR"].label, sitk.sitkUInt8) * 2, str(patient / "OTMultiClass.nii.gz"))
        patients.append(patient)
    return patients
