"""A preprocessed array written back must land on the input's exact grid (affine, direction, spacing, shape)."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.experiment_planning.planner import plan_experiment
from itermask_auto.experiment_planning.fingerprint import aggregate
from itermask_auto.preprocessing.export import to_original_geometry
from itermask_auto.preprocessing.orientation import reorientation_for
from itermask_auto.preprocessing.preprocessor import preprocess_case


def _rotation(axis_angles_deg):
    rx, ry, rz = (math.radians(a) for a in axis_angles_deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


PERMS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "PSR": np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0]], float),   # IXI's native orientation
    "LAS": np.diag([1.0, -1.0, 1.0]),
    "ASL": np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]], float),
    "oblique_15": _rotation((15, -10, 5)),
    "oblique_PSR_20": np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0]], float) @ _rotation((0, 20, 0)),
    "IRP_flipped": np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], float),
}


def _plan_for(spacing_zyx, shape_zyx):
    case = {"spacing": list(spacing_zyx), "shape_after_crop": list(shape_zyx), "brain_volume_ml": 1000.0,
            "skull_stripped": True, "brain_mask_source": "given", "orientation": "LPS",
            "channels": [{"percentiles": {"0.5": 0, "50.0": 1, "99.5": 2}, "mean": 1.0, "std": 1.0}]}
    fp = {"cases": [case], "aggregate": aggregate([case])}
    return plan_experiment(fp, {"channel_names": {"0": "T1"}, "file_ending": ".nii.gz"}, "Dataset999_Geo")


@pytest.mark.parametrize("name", sorted(PERMS))
def test_roundtrip_exact_header_and_voxels(tmp_path, name):
    direction = PERMS[name]
    size, spacing = (41, 47, 37), (2.0, 2.5, 3.0)  # odd sizes, anisotropic (ratio 1.5: resampled to median)
    ph = make_phantom(7, size=size, spacing=spacing, direction=tuple(direction.ravel()), origin=(3.5, -20.0, 11.25),
                      skull=False, anatomy_scale=0.7)
    image_path, mask_path = tmp_path / "c_0000.nii.gz", tmp_path / "c.nii.gz"
    sitk.WriteImage(ph.image, str(image_path))
    sitk.WriteImage(ph.brain_mask, str(mask_path))
    spacing_zyx = reorientation_for(ph.image.GetDirection()).spacing_to_canonical(spacing)
    plans = _plan_for(spacing_zyx, [30, 30, 30])
    plans.configurations["3d"].spacing = list(spacing_zyx)  # no resampling: the voxel round trip must be exact
    data, hf, brain, props = preprocess_case([image_path], plans, "3d", mask_path=mask_path)

    written = sitk.ReadImage(str(image_path))  # the input as stored (NIfTI rounds the direction a little)
    back = to_original_geometry(brain.astype(np.uint8), props, order=0)
    assert back.GetSize() == written.GetSize()
    assert back.GetSpacing() == written.GetSpacing()
    assert back.GetOrigin() == written.GetOrigin()
    assert back.GetDirection() == written.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ph.brain_mask))

    # a float map written back is read identically by SimpleITK and nibabel (same affine, same voxels)
    out = tmp_path / "map.nii.gz"
    sitk.WriteImage(to_original_geometry(data[0], props, order=3), str(out))
    ref = nib.load(str(image_path))
    got = nib.load(str(out))
    assert got.shape == ref.shape
    assert np.allclose(got.affine, ref.affine, atol=1e-4)
    assert np.allclose(np.asarray(got.dataobj).T, sitk.GetArrayFromImage(sitk.ReadImage(str(out))))


def test_roundtrip_with_resampling_keeps_header(tmp_path):
    """Anisotropic input resampled to another spacing: header exact, brain mask nearly identical."""
    size, spacing = (60, 70, 19), (1.5, 1.5, 6.0)
    ph = make_phantom(3, size=size, spacing=spacing, skull=False, anatomy_scale=0.7)
    image_path, mask_path = tmp_path / "c_0000.nii.gz", tmp_path / "c.nii.gz"
    sitk.WriteImage(ph.image, str(image_path))
    sitk.WriteImage(ph.brain_mask, str(mask_path))
    plans = _plan_for([6.0, 1.5, 1.5], [19, 60, 60])
    plans.configurations["3d"].spacing = [6.0, 2.0, 2.0]
    data, hf, brain, props = preprocess_case([image_path], plans, "3d", mask_path=mask_path)
    assert props["lowres_axis"] == 0
    written = sitk.ReadImage(str(image_path))
    back = to_original_geometry(brain.astype(np.uint8), props, order=0)
    assert (back.GetSize(), back.GetSpacing(), back.GetOrigin(), back.GetDirection()) == (
        written.GetSize(), written.GetSpacing(), written.GetOrigin(), written.GetDirection())
    a, b = sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(ph.brain_mask) > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97
