"""Shared set-up of the issue-18 tests (test_user_reports.py, test_user_inputs.py): a tiny model trained for one
iteration on the project's phantoms (tests/trainer_fixtures.py), phantom inputs with given brain masks, a DICOM
series writer, and the itermask_predict call the tests make."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

import trainer_fixtures
from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.inference.cli import main as predict_main

NIFTI = ".nii.gz"
SIZE, SPACING = (26, 28, 24), (2.0, 2.1, 2.2)
ROTATED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # in-plane rotation: the header must survive


def train_tiny_model(tmp_path_factory) -> Tuple[Path, Path]:
    """(data root, fold folder) of a model trained for one iteration: the test modules' module-scoped `model`."""
    root, _, fold_dir = trainer_fixtures.train_tiny_model(tmp_path_factory, "user_reports_model")
    return root, fold_dir


# the module-scoped model of the test modules that import these two fixtures (one model per module)
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_tiny_model(tmp_path_factory)


@pytest.fixture
def roots(model, monkeypatch):
    """The model, with $ITERMASK_* pointing at its data roots (no dataset_fingerprint.json there)."""
    trainer_fixtures.set_roots(monkeypatch, model[0])
    return model


def phantom(seed: int, spacing=SPACING, direction=None, n_lesions: int = 0, size=SIZE):
    return make_phantom(seed, size=size, spacing=spacing, direction=direction, skull=False, n_lesions=n_lesions)


def write_case(images: Path, masks: Path, case: str, seed: int, ending: str = NIFTI, **kw) -> sitk.Image:
    """CASE_0000<ending> in images/, its brain mask CASE.nii.gz in masks/ (given: no skull-stripper runs)."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    ph = phantom(seed, **kw)
    sitk.WriteImage(ph.image, str(images / f"{case}_0000{ending}"))
    sitk.WriteImage(ph.brain_mask, str(masks / f"{case}{NIFTI}"))
    return ph.image


def predict(fold_dir: Path, images: Path, out: Path, masks: Path, *extra: str) -> int:
    return predict_main(["-i", str(images), "-o", str(out), "-model_dir", str(fold_dir), "-masks", str(masks),
                         *extra])


def errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def summary_of(out: Path) -> Dict:
    return json.loads((out / "predictions.json").read_text())


def write_dicom_series(image: sitk.Image, folder: Path, description: str, uid: str, prefix: str = "IM") -> None:
    """One file per slice with the tags a series reader needs (SimpleITK's DicomSeriesFromArray recipe)."""
    folder.mkdir(parents=True, exist_ok=True)
    scaled = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkInt16)
    d = scaled.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    tags = {"0008|0060": "MR", "0008|0021": "20260101", "0008|0031": "120000", "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": uid,
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))}
    for k in range(scaled.GetDepth()):
        sl = scaled[:, :, k]
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in scaled.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0018|0050", f"{scaled.GetSpacing()[2]:.6f}")
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(sl)


def read_series(folder: Path, uid: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def _mask_on(image: sitk.Image, seed: int) -> sitk.Image:
    mask = sitk.Image(phantom(seed).brain_mask)
    mask.CopyInformation(image)
    return mask


def assert_same_geometry(written: sitk.Image, reference: sitk.Image) -> None:
    assert written.GetSize() == reference.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-7)
