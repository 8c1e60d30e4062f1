"""The BraTS healthy-slice protocol: the slab converter on a tiny synthetic BraTS-like folder (labels only choose
slices, test patients keep their labels, folds are patient-level, any axis order) and benchmarks/brats_slices.py
end to end on phantoms (--smoke)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from benchmark_scripts import load_benchmark

from itermask_auto.dataset_conversion import convert_brats_slabs as cbs
from itermask_auto.dataset_conversion.convert_brats2015 import FILES

REPO = Path(__file__).resolve().parents[1]
SIZE_ZYX = (60, 64, 64)        # 1 mm source grid; a 16 mm slab of the 60 x 60 mm brain holds > 50 ml


def _write_patient(folder: Path, tumour_z: tuple, direction=None) -> None:
    """A box brain over z 2..57 with a tumour in slices tumour_z (canonical z), written in `direction`."""
    folder.mkdir(parents=True)
    z = np.arange(SIZE_ZYX[0])[:, None, None]
    brain = np.zeros(SIZE_ZYX, bool)
    brain[2:58, 2:62, 2:62] = True
    tumour = brain & (z >= tumour_z[0]) & (z < tumour_z[1])
    arrays = {FILES["FLAIR"]: np.where(brain, 1.0 + tumour, -2.0), FILES["T1c"]: np.where(brain, 0.5, -1.5),
              "brainmask.nii.gz": brain.astype(np.uint8), "OTMultiClass.nii.gz": tumour.astype(np.uint8) * 2}
    for name, array in arrays.items():
        image = sitk.GetImageFromArray(array.astype(np.float32 if array.dtype != np.uint8 else np.uint8))
        image.SetSpacing((1.0, 1.0, 1.0))
        if direction is not None:   # the same physical image, stored with permuted and flipped index axes
            image = sitk.DICOMOrient(image, direction)
        sitk.WriteImage(image, str(folder / name))


def _z_range_mm(image: sitk.Image) -> tuple:
    corners = [image.TransformIndexToPhysicalPoint([i * (n - 1) for i, n in zip(c, image.GetSize())])
               for c in np.ndindex(2, 2, 2)]
    zs = [p[2] for p in corners]
    return min(zs), max(zs)


def test_slab_converter_uses_labels_only_to_choose_slices(tmp_path):
    source = tmp_path / "brats"
    tumours = {"p1": (24, 30), "p2": (10, 16), "p3": (40, 48), "p4": (26, 30)}
    for i, (patient, tz) in enumerate(tumours.items()):
        _write_patient(source / ("train", "test")[i % 2] / patient, tz, direction="PIL" if patient == "p2" else None)
    out = cbs.convert(source, tmp_path / "raw", 42, spacing_mm=2.0, num_folds=2)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "FLAIR", "1": "T1c"}
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"{p}.nii.gz" for p in sorted(tumours)]
    assert not (out / "labelsTr").exists()                  # training slabs carry no label of any kind
    for patient, (t0, t1) in tumours.items():
        label = sitk.ReadImage(str(out / "labelsTs" / f"{patient}.nii.gz"))
        assert sitk.GetArrayViewFromImage(label).sum() > 0  # test patients keep their (whole-tumour) labels
        tumour_mm = (t0 - 0.5, t1 - 0.5)                     # physical z of the tumour (1 mm slices centred on z)
        for slab in meta["slabs"][patient]:
            image = sitk.ReadImage(str(out / "imagesTr" / f"{slab['case']}_0000.nii.gz"))
            lo, hi = _z_range_mm(image)
            assert hi + 1.0 + cbs.MARGIN_MM <= tumour_mm[0] + 1e-6 or lo - 1.0 - cbs.MARGIN_MM >= tumour_mm[1] - 1e-6
            assert slab["thickness_mm"] >= cbs.MIN_SLAB_MM
            assert image.GetSpacing() == (2.0, 2.0, 2.0)
            assert (out / "masksTr" / f"{slab['case']}.nii.gz").is_file()
    counts = {p: len(v) for p, v in meta["slabs"].items()}
    assert counts == {"p1": 2, "p2": 1, "p3": 1, "p4": 2}   # thin runs (< 16 mm) next to the brain's ends dropped
    folds = json.loads((out / "folds.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    assert [{"train": f["train"], "val": f["val"]} for f in folds] == splits
    assert sorted(p for f in folds for p in f["test_patients"]) == sorted(tumours)   # every patient tested once
    for f in folds:
        owners = {s.rsplit("_slab", 1)[0] for s in f["train"] + f["val"]}
        assert owners.isdisjoint(f["test_patients"])                     # patient-level: no test patient's slab
        assert {s.rsplit("_slab", 1)[0] for s in f["val"]}.isdisjoint(s.rsplit("_slab", 1)[0] for s in f["train"])
        assert f["val"] and f["train"]
    installed = cbs.install_splits(out, tmp_path / "pre")
    assert json.loads(installed.read_text()) == splits and installed.parent.name == out.name
    runs = cbs.tumour_free_slabs(np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], bool), np.ones(11, bool), 1, 3)
    assert runs == [(0, 3), (6, 11)]


@pytest.mark.slow
def test_brats_slices_benchmark_smoke(tmp_path, monkeypatch):
    for var in ("ITERMASK_raw", "ITERMASK_preprocessed", "ITERMASK_results"):
        monkeypatch.setenv(var, "unset")   # set_roots overwrites them; monkeypatch then restores them
    module = load_benchmark("brats_slices")
    docs_before = (REPO / "docs" / "benchmarks.md").read_text()
    work = tmp_path / "work"
    assert module.main(["--smoke", "--methods", "mmccd", "no_such_method", "--folds", "0", "--threads", "1",
                        "--work_dir", str(work)]) == 0
    results = json.loads((work / "brats_slices_results.json").read_text())
    assert set(results) == {"mmccd"} and results["mmccd"]["dataset"] == module.PAIR
    metrics = results["mmccd"]["metrics"]
    assert metrics["n"] == 2 and metrics["n_slabs"] >= 1 and 0 <= metrics["auprc"] <= 1
    assert 0 <= metrics["dice_alpha"] <= 1 and 0 <= metrics["slab_fpr_alpha"] <= 1   # the map at the healthy α cut
    table = (work / "benchmarks_smoke.md").read_text()
    assert module.BEGIN in table and "| mmccd | FLAIR + T1c | 0 | 2 |" in table and "SMOKE" in table
    assert (REPO / "docs" / "benchmarks.md").read_text() == docs_before
    splits = json.loads(next((work / "preprocessed").glob("Dataset042_*/splits.json")).read_text())
    assert splits == json.loads(next((work / "raw").glob("Dataset042_*/splits.json")).read_text())


def test_a_reused_fold_keeps_the_timing_measured_when_it_ran():
    module = load_benchmark("brats_slices")
    earlier_test = {"wall_s": 700.0, "predicted_now": 2, "failures": [], "passes": 220.0}
    previous = {"mmccd": {"train_s": {"0": 4560.0}, "timing": {"0": {"test": earlier_test}}}}
    reused = {"test": {"wall_s": 1.0, "predicted_now": 0, "failures": [], "passes": 220.0}, "slabs": {}}
    train_s, timing = module.carry_measurements(previous, "mmccd", 0, 0.0, reused)
    assert train_s == 4560.0 and timing["test"] == earlier_test and timing["slabs"] == {}
    fresh = {"test": {"wall_s": 600.0, "predicted_now": 2, "failures": [], "passes": 220.0}}
    assert module.carry_measurements(previous, "mmccd", 0, 10.0, fresh) == (10.0, fresh)   # new figures win
    assert module.carry_measurements({}, "ae", 1, 0.0, reused) == (0.0, reused)


def test_mmccd_schedule_finds_the_raw_dataset_of_a_brats_work_folder(tmp_path, monkeypatch):
    module = load_benchmark("mmccd_schedule")
    fold = tmp_path / "work" / "results" / "Dataset042_X" / "mmccd__itermaskPlans_cpu__2d" / "fold_0"
    fold.mkdir(parents=True)
    monkeypatch.delenv("ITERMASK_raw", raising=False)
    with pytest.raises(SystemExit, match="no folds.json"):   # one line naming the folder, not a KeyError
        module.default_raw(fold, "Dataset042_X")
    raw = tmp_path / "work" / "raw" / "Dataset042_X"
    raw.mkdir(parents=True)
    (raw / "folds.json").write_text("[]")
    assert module.default_raw(fold, "Dataset042_X") == raw.resolve()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "Dataset042_X").mkdir(parents=True)
    (elsewhere / "Dataset042_X" / "folds.json").write_text("[]")
    monkeypatch.setenv("ITERMASK_raw", str(elsewhere))
    assert module.default_raw(fold, "Dataset042_X") == elsewhere / "Dataset042_X"
    monkeypatch.setenv("ITERMASK_raw", str(tmp_path / "a_users_raw_root"))   # set, but without this dataset
    assert module.default_raw(fold, "Dataset042_X") == raw.resolve()
