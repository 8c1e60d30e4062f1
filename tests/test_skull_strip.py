"""Skull-strip heuristics on synthetic heads, grid handling of the stripper, and deepbet on two real IXI scans."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from itermask_auto.imageio.errors import InputError
from itermask_auto.preprocessing.skull_strip import (SkullStripper, brain_mask_from_stripped,
                                                     looks_skull_stripped)

SHARED = Path(os.environ.get("ITERMASK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
IXI = SHARED / "ixi_t1_2mm"


def _head(skull: bool, noise: bool, skull_value: float = 0.06, n: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid brain (2 mm voxels, 1.1 l) with texture; optional skull + scalp shells (head 3 l), Rician air noise."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(n) - n / 2] * 3, indexing="ij")
    r = np.sqrt((x / 36) ** 2 + (y / 42) ** 2 + (z / 30) ** 2)
    brain = r < 0.9
    img = np.where(r < 0.6, 1.0, 0.62) * brain + 0.05 * np.sin(x / 3) * brain
    if skull:
        img[(r >= 0.9) & (r < 1.05)] = skull_value
        img[(r >= 1.05) & (r < 1.25)] = 0.85
    img = img * 1000
    if noise:
        img = np.hypot(img + 20 * rng.standard_normal(img.shape), 20 * rng.standard_normal(img.shape))
    return img.astype(np.float32), brain


def test_stripped_vs_head():
    stripped, _ = _head(skull=False, noise=False)
    ok, reason = looks_skull_stripped(stripped)
    assert ok, reason
    head, _ = _head(skull=True, noise=True)
    ok, reason = looks_skull_stripped(head)
    assert not ok and "border" in reason
    # no noise and a zero skull: the scalp shell encloses background
    ok, reason = looks_skull_stripped(_head(skull=True, noise=False, skull_value=0.0)[0])
    assert not ok, reason
    # no noise, visible skull: one blob, only its volume gives it away
    clean_head, _ = _head(skull=True, noise=False)
    assert looks_skull_stripped(clean_head)[0]
    ok, reason = looks_skull_stripped(clean_head, spacing=(2.0, 2.0, 2.0))
    assert not ok and "ml" in reason
    assert looks_skull_stripped(stripped, spacing=(2.0, 2.0, 2.0))[0]


def test_background_not_zero():
    stripped, brain = _head(skull=False, noise=False)
    z = (stripped - stripped[brain].mean()) / stripped[brain].std()
    z[~brain] = z[brain].min() - 0.5  # BraTS style: background is the minimum, not 0
    ok, reason = looks_skull_stripped(z)
    assert ok and "background -" in reason
    mslub_like = stripped.copy()
    mslub_like[brain & (np.arange(stripped.size).reshape(stripped.shape) % 97 == 0)] = -5.0  # a few negatives
    assert looks_skull_stripped(mslub_like)[0]
    assert brain_mask_from_stripped(z).sum() == brain.sum()


def test_brain_mask_from_stripped():
    stripped, brain = _head(skull=False, noise=False)
    stripped[56, 54:58, 54:58] = 0  # a zero-valued hole inside the brain
    stripped[2, 2, 2] = 500  # a stray speck in the background
    mask = brain_mask_from_stripped(stripped)
    assert mask.dtype == bool
    assert np.array_equal(mask, brain)


def test_phantoms():
    phantom = pytest.importorskip("itermask_auto.dataset_conversion.phantom")
    with_skull = phantom.make_phantom(0, skull=True)
    without = phantom.make_phantom(0, skull=False)
    assert not looks_skull_stripped(sitk.GetArrayViewFromImage(with_skull.image))[0]
    ok, reason = looks_skull_stripped(sitk.GetArrayViewFromImage(without.image))
    assert ok, reason
    mask = brain_mask_from_stripped(sitk.GetArrayViewFromImage(without.image))
    ref = sitk.GetArrayViewFromImage(without.brain_mask) > 0
    assert 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) > 0.99


STRIPPED_REAL = ["mslub_mni/patient07/T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz",
                 "brats2015_flair_t1c/test/brats_2013_pat0001_1/T1c_subtrMeanDivStd.nii.gz",
                 "isles22_case0009/sub-strokecase0009_ses-0001_dwi.nii.gz",
                 "ixi002_t1_t2/hd_bet_IXI002-Guys-0828-T1.nii.gz"]


@pytest.mark.parametrize("relative", STRIPPED_REAL + ["ixi_t1_2mm/images/IXI012-HH-1211_T1.nii.gz",
                                                      "ixi_t1_2mm/images/IXI013-HH-1212_T1.nii.gz"])
def test_real_scans(relative):
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} absent")
    image = sitk.ReadImage(str(path))
    ok, reason = looks_skull_stripped(sitk.GetArrayFromImage(image), image.GetSpacing()[::-1])
    assert ok == (relative in STRIPPED_REAL), reason


def _reoriented(image: sitk.Image) -> sitk.Image:
    """Same physical content on a permuted and flipped voxel grid."""
    return sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])


class _LeftHalfStripper(SkullStripper):
    """Model stand-in: 'brain' = left half of the RAS array (low first index), so the mapping can be checked."""

    def __init__(self, empty: bool = False):  # no model needed
        self.empty = empty

    def _mask_ras(self, volume: np.ndarray) -> np.ndarray:
        mask = np.zeros(volume.shape, bool)
        if not self.empty:
            mask[: volume.shape[0] // 2] = True
        return mask


def test_mask_follows_any_orientation():
    image = sitk.GetImageFromArray(np.random.default_rng(1).random((50, 60, 40), dtype=np.float32))
    image.SetSpacing((3.0, 3.0, 3.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    for im in (image, _reoriented(image)):
        mask = _LeftHalfStripper().brain_mask(im)
        assert mask.GetSize() == im.GetSize() and mask.GetSpacing() == im.GetSpacing()
        assert mask.GetOrigin() == im.GetOrigin() and mask.GetDirection() == im.GetDirection()
        assert mask.GetPixelID() == sitk.sitkUInt8
        # left = larger LPS x: every voxel left of the centre is in the mask, every one right of it is not
        arr = sitk.GetArrayFromImage(mask)
        centre = im.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in im.GetSize()])[0]
        for idx in [(0, 0, 0), tuple(s - 1 for s in im.GetSize()), (3, 7, 11)]:
            x = im.TransformIndexToPhysicalPoint(idx)[0]
            assert arr[idx[::-1]] == (1 if x > centre else 0)


def test_empty_mask_is_input_error():
    image = sitk.GetImageFromArray(np.ones((20, 20, 20), np.float32))
    with pytest.raises(InputError, match=r"scan\.nii\.gz: empty brain after skull-stripping"):
        _LeftHalfStripper(empty=True).brain_mask(image, source_path="scan.nii.gz")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.skipif(not (IXI / "images").is_dir(), reason="shared IXI data absent")
def test_deepbet_on_ixi():
    from itermask_auto.imageio.reader import read_image, read_mask

    stripper = SkullStripper(threads=2)
    for case in sorted(p.name[: -len("_T1.nii.gz")] for p in (IXI / "images").glob("*_T1.nii.gz"))[:2]:
        image = read_image(IXI / "images" / f"{case}_T1.nii.gz")
        ref = read_mask(IXI / "brainmasks" / f"{case}_brainmask.nii.gz", image)
        assert not looks_skull_stripped(sitk.GetArrayViewFromImage(image))[0]
        mask = stripper.brain_mask(image)
        assert mask.GetSize() == image.GetSize() and mask.GetDirection() == image.GetDirection()
        assert mask.GetOrigin() == image.GetOrigin() and mask.GetSpacing() == image.GetSpacing()
        m, r = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(ref) > 0
        assert _dice(m, r) > 0.9
    # the last case again on a permuted, flipped grid: the mask must follow the anatomy
    turned = _reoriented(image)
    mask_t = stripper.brain_mask(turned)
    assert mask_t.GetSize() == turned.GetSize() and mask_t.GetDirection() == turned.GetDirection()
    assert mask_t.GetOrigin() == turned.GetOrigin()
    ref_t = sitk.GetArrayFromImage(_reoriented(ref)) > 0
    assert _dice(sitk.GetArrayFromImage(mask_t) > 0, ref_t) > 0.9
    back = sitk.GetArrayFromImage(sitk.Resample(mask_t, image, sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
    assert _dice(back, m) > 0.99
