"""Conversion scripts: layout, dataset.json, file counts, binary labels. Real data when ../shared/data is present."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from itermask_auto.dataset_conversion import convert_brats2015, convert_isles22, convert_ixi_t1, convert_mslub
from itermask_auto.dataset_conversion.phantom import make_phantom
from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_channels, read_mask
from itermask_auto.utilities.dataset import find_dataset, list_cases, load_dataset_json

SHARED = Path(os.environ.get("ITERMASK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def needs(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return path


def check_dataset(folder: Path, channels: list, n_train: int, n_test: int, masks_tr: bool = False,
                  sources: dict | None = None) -> dict:
    """Layout + dataset.json + counts; labels binary uint8 on the image grid; returns the dataset.json."""
    meta = load_dataset_json(folder)
    assert list(meta["channel_names"].values()) == channels
    assert meta["numTraining"] == n_train and meta["licence"] and meta["reference"]
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no temp folders left
    if n_train:
        cases = list_cases(folder / "imagesTr", len(channels), ".nii.gz")
        assert len(cases) == n_train
        assert (len(list((folder / "masksTr").glob("*.nii.gz"))) == n_train) if masks_tr \
            else not (folder / "masksTr").exists()
    if n_test:
        cases = list_cases(folder / "imagesTs", len(channels), ".nii.gz")
        assert len(cases) == n_test
        for i, (case, files) in enumerate(sorted(cases.items())):
            # full validation (slow: reads each gzip twice) on the first case, plain reads on the others
            images = read_channels(files) if i == 0 else [sitk.ReadImage(str(f)) for f in files[:1]]
            label = read_mask(folder / "labelsTs" / f"{case}.nii.gz", images[0])
            mask = read_mask(folder / "masksTs" / f"{case}.nii.gz", images[0])
            for im in (label, mask):
                assert im.GetPixelID() == sitk.sitkUInt8
                assert set(np.unique(sitk.GetArrayViewFromImage(im))) <= {0, 1}
    for dst, src in (sources or {}).items():  # byte-for-byte copies
        assert (folder / dst).read_bytes() == Path(src).read_bytes()
    return meta


def fake_ixi(root: Path, n: int = 3, bad_mask: bool = False) -> Path:
    for i in range(n):
        case = f"IXI9{i:02d}-HH-0001"
        ph = make_phantom(i, size=(24, 28, 24), spacing=(6.0, 6.0, 6.0))
        mask = ph.brain_mask
        if bad_mask and i == n - 1:
            mask = sitk.Image(mask)
            mask.SetOrigin((1.0, 2.0, 3.0))
        for sub, name, im in (("images", f"{case}_T1.nii.gz", ph.image),
                              ("brainmasks", f"{case}_brainmask.nii.gz", mask)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(im, str(root / sub / name), useCompression=True)
    return root


def test_ixi_converter_on_fake_source(tmp_path, monkeypatch):
    src = fake_ixi(tmp_path / "src")
    monkeypatch.setenv("ITERMASK_raw", str(tmp_path / "raw"))
    folder = convert_ixi_t1.convert(src)  # raw_root from the environment
    assert folder == find_dataset(tmp_path / "raw", 1)
    check_dataset(folder, ["T1"], 3, 0, masks_tr=True,
                  sources={"imagesTr/IXI900-HH-0001_0000.nii.gz": src / "images" / "IXI900-HH-0001_T1.nii.gz"})
    # idempotent re-run, here without masks and with a limit
    convert_ixi_t1.convert(src, tmp_path / "raw", with_masks=False, limit=2)
    check_dataset(folder, ["T1"], 2, 0, masks_tr=False)


def test_ixi_converter_rejects_mask_off_grid(tmp_path):
    src = fake_ixi(tmp_path / "src", bad_mask=True)
    with pytest.raises(InputError, match="brainmask"):
        convert_ixi_t1.convert(src, tmp_path / "raw")
    assert not list((tmp_path / "raw").iterdir())  # nothing half-written
    with pytest.raises(InputError):
        convert_ixi_t1.convert(tmp_path / "nowhere", tmp_path / "raw")


def test_ixi_real_subset(tmp_path):
    real = needs("ixi_t1_2mm")
    src = tmp_path / "ixi"
    for sub in ("images", "brainmasks"):
        (src / sub).mkdir(parents=True)
    for img in sorted((real / "images").glob("*_T1.nii.gz"))[:3]:
        case = img.name[: -len("_T1.nii.gz")]
        (src / "images" / img.name).symlink_to(img)
        (src / "brainmasks" / f"{case}_brainmask.nii.gz").symlink_to(real / "brainmasks" / f"{case}_brainmask.nii.gz")
    folder = convert_ixi_t1.main([str(src), "--raw", str(tmp_path / "raw"), "-d", "5"]) or tmp_path / "raw" / \
        "Dataset005_IXI_T1"
    meta = check_dataset(folder, ["T1"], 3, 0, masks_tr=True)
    assert meta["licence"] == "CC BY-SA 3.0"
    for case, files in list_cases(folder / "imagesTr", 1, ".nii.gz").items():
        image = read_channels(files)[0]
        assert image.GetSize() == (120, 120, 90)
        read_mask(folder / "masksTr" / f"{case}.nii.gz", image)
    assert convert_ixi_t1.convert(real, tmp_path / "raw2", limit=2).joinpath("imagesTr").is_dir()


def test_mslub(tmp_path):
    src = needs("mslub_mni")
    t1 = convert_mslub.convert(src, tmp_path, 11)
    check_dataset(t1, ["T1"], 0, 3, sources={"imagesTs/patient07_0000.nii.gz": next(
        (src / "patient07").glob("T1_*.nii.gz"))})
    multi = convert_mslub.convert(src, tmp_path, 14)
    check_dataset(multi, ["T1", "T2", "FLAIR"], 0, 3)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(multi / "labelsTs" / "patient07.nii.gz")))
    gold = sitk.GetArrayFromImage(sitk.ReadImage(str(next((src / "patient07").glob("GOLD_STANDARD*")))))
    assert np.array_equal(label, gold > 0) and label.sum() > 100
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(multi / "masksTs" / "patient07.nii.gz")))
    assert 1.0e6 < mask.sum() < 1.8e6  # 1 mm voxels: an adult brain


def test_brats(tmp_path):
    src = needs("brats2015_flair_t1c")
    folder = convert_brats2015.convert(src, tmp_path, 23)
    meta = check_dataset(folder, ["FLAIR", "T1c"], 0, 6)
    assert sorted(set(meta["source_split"].values())) == ["test", "train", "validation"]
    case = "brats_2013_pat0001_1"
    orig = next(src.glob(f"*/{case}"))
    assert ((folder / "imagesTs" / f"{case}_0001.nii.gz").read_bytes()
            == (orig / "T1c_subtrMeanDivStd.nii.gz").read_bytes())
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTs" / f"{case}.nii.gz")))
    ot = sitk.GetArrayFromImage(sitk.ReadImage(str(orig / "OTMultiClass.nii.gz")))
    assert np.array_equal(label, ot > 0)


def test_isles(tmp_path):
    src = needs("isles22_case0009")
    dwi = convert_isles22.convert(src, tmp_path, 31)
    check_dataset(dwi, ["DWI", "ADC"], 0, 1)
    flair = convert_isles22.convert(src, tmp_path, 32)
    check_dataset(flair, ["FLAIR"], 0, 1)
    label_dwi = sitk.ReadImage(str(dwi / "labelsTs" / "strokecase0009.nii.gz"))
    label_flair = sitk.ReadImage(str(flair / "labelsTs" / "strokecase0009.nii.gz"))
    assert label_flair.GetSize() == (512, 512, 29)

    def volume_mm3(im):
        return sitk.GetArrayViewFromImage(im).sum() * np.prod(im.GetSpacing())
    # nearest-neighbour into FLAIR space keeps the lesion volume roughly (thick slices: within 30 %)
    assert abs(volume_mm3(label_flair) - volume_mm3(label_dwi)) / volume_mm3(label_dwi) < 0.3
