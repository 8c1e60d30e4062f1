"""Predictions land on the input's exact grid whatever its orientation, and a lesion placed at a known world
coordinate is where the anomaly map peaks.

The network here outputs zeros, so the reconstruction error is x² (normalised intensity squared) and a strongly
hyperintense lesion is the brightest thing in the map: this isolates the geometry chain (read → canonical →
crop → resample → iterate → back) from how well a network has been trained."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.experiment_planning.fingerprint import aggregate
from itermask_auto.experiment_planning.planner import plan_experiment
from itermask_auto.inference.predictor import Predictor


class ZeroNetwork(torch.nn.Module):
    def __init__(self, channels: int = 1):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((x.shape[0], self.channels) + tuple(x.shape[2:]), dtype=x.dtype)


def _rot(deg_x, deg_y, deg_z):
    rx, ry, rz = map(math.radians, (deg_x, deg_y, deg_z))
    Rx = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    Ry = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    Rz = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "PSR": np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0]], float),
    "oblique": _rot(12, -8, 20),
}
LESION_WORLD = (9.0, -6.0, 5.0)


@pytest.fixture(scope="module")
def predictor():
    case = {"spacing": [2.0, 2.0, 2.0], "shape_after_crop": [40, 48, 40], "brain_volume_ml": 500.0,
            "skull_stripped": True, "brain_mask_source": "given", "orientation": "LPS",
            "channels": [{"percentiles": {"0.5": 0, "50.0": 1, "99.5": 2}, "mean": 1.0, "std": 1.0}]}
    plans = plan_experiment({"cases": [case], "aggregate": aggregate([case])},
                            {"channel_names": {"0": "T1"}, "file_ending": ".nii.gz"}, "Dataset998_Geo")
    plans.inference.sweep_steps, plans.inference.max_shrink_passes = 3, 2
    return Predictor(ZeroNetwork(), plans, "3d", "itermask3d")


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_output_header_and_lesion_peak(tmp_path, predictor, name):
    size, spacing = (56, 60, 34), (1.5, 1.5, 3.0)  # anisotropic, odd-ish sizes; resampled to 2 mm
    ph = make_phantom(11, size=size, spacing=spacing, direction=tuple(DIRECTIONS[name].ravel()),
                      origin=None, skull=False, anatomy_scale=0.55, lesion_centers_world=[LESION_WORLD],
                      lesion_radius_mm=(5.0, 6.0), lesion_contrast=1.5)
    path, mask_path = tmp_path / "case_0000.nii.gz", tmp_path / "case.nii.gz"
    sitk.WriteImage(ph.image, str(path))
    sitk.WriteImage(ph.brain_mask, str(mask_path))
    written = sitk.ReadImage(str(path))

    pred = predictor.predict_files([path], mask_path=mask_path)
    for image in pred.images.values():
        assert image.GetSize() == written.GetSize()
        assert image.GetSpacing() == written.GetSpacing()
        assert image.GetOrigin() == written.GetOrigin()
        assert image.GetDirection() == written.GetDirection()
    anomaly = pred.images["anomaly"]
    peak_index = np.unravel_index(int(np.argmax(sitk.GetArrayFromImage(anomaly))), pred.anomaly.shape)[::-1]
    peak_world = np.array(anomaly.TransformIndexToPhysicalPoint([int(i) for i in peak_index]))
    distance = float(np.linalg.norm(peak_world - np.array(ph.lesion_centers_world[0])))
    assert distance < 8.0, f"{name}: anomaly peaks {distance:.1f} mm from the lesion"
