"""itermask_plan_and_preprocess end to end on phantoms, and its answers to bad input."""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
from itermask_auto.experiment_planning.cli import main as plan_main
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.preprocessing.provenance import (PREPROCESSING_INPUTS_FILE, check_arrays_match_plan,
                                                    preprocessing_inputs, recorded_inputs)
from itermask_auto.preprocessing.storage import list_preprocessed_cases, load_case


@pytest.fixture
def phantom_raw(data_roots):
    return write_phantom_dataset(data_roots["raw"], dataset_id=990, n_train=4, n_test_healthy=1, n_test_lesion=1,
                                 size=(48, 56, 48), spacing=(2.5, 2.5, 2.5), with_masks=False)


def _run(*args) -> int:
    return plan_main(["-d", "990", "-np", "1", "--profile", "cpu", *args])


def test_plan_and_preprocess_phantom(phantom_raw, data_roots):
    assert _run("--verify_dataset_integrity") == 0
    out = data_roots["preprocessed"] / phantom_raw.name
    plans = Plans.load(out / "itermask_plans.json")
    fingerprint = json.loads((out / "dataset_fingerprint.json").read_text())
    assert plans.default_configuration == "3d"
    assert fingerprint["aggregate"]["num_cases"] == 4
    case0 = fingerprint["cases"][0]
    assert case0["skull_stripped"] and case0["brain_mask_source"] == "skull_stripped_input"
    assert set(case0["channels"][0]["percentiles"]) == {"0.5", "50.0", "99.5"}
    for name in ("3d", "2d"):
        config = plans.configuration(name)
        folder = out / config.data_identifier
        assert len(list_preprocessed_cases(folder)) == 4
        data, hf, brain, props = load_case(folder, list_preprocessed_cases(folder)[0])
        assert data.shape[0] == hf.shape[0] == 1 and brain.any()
        assert abs(float(data[0][brain].mean())) < 0.1 and abs(float(data[0][brain].std()) - 1) < 0.1
        assert np.all(data[0][~brain] == plans.normalization.background_value)
        assert np.allclose(props["target_spacing"], config.spacing)
    for key in ("spacing_3d", "patch_size_3d", "network", "training", "inference", "hf_radius_cycles_per_mm"):
        assert key in plans.rules


def test_deterministic_plan_and_arrays(phantom_raw, data_roots, tmp_path):
    assert _run("-c", "3d") == 0
    out = data_roots["preprocessed"] / phantom_raw.name
    first_plan = (out / "itermask_plans.json").read_text()
    folder = out / Plans.load(out / "itermask_plans.json").configuration("3d").data_identifier
    case = list_preprocessed_cases(folder)[0]
    first = load_case(folder, case)
    assert _run("-c", "3d", "--clean") == 0
    assert (out / "itermask_plans.json").read_text() == first_plan
    second = load_case(folder, case)
    for a, b in zip(first[:3], second[:3]):
        assert np.array_equal(a, b)


def _corrupt(path: Path):
    path.write_bytes(gzip.compress(b"not a nifti")[:20])


def _four_d(path: Path):
    im = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(im)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([arr, arr])[None].squeeze(0)[..., None].repeat(2, -1),
                                           isVector=False), str(path))


def _nan(path: Path):
    im = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(im)
    arr[arr.shape[0] // 2, arr.shape[1] // 2, arr.shape[2] // 2] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(im)
    sitk.WriteImage(out, str(path))


def _empty(path: Path):
    im = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(im).shape, np.float32))
    out.CopyInformation(im)
    sitk.WriteImage(out, str(path))


def _missing(path: Path):
    """Two channels declared; every case but the victim has its second channel."""
    meta_path = path.parents[1] / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    meta_path.write_text(json.dumps(meta))
    for p in sorted(path.parent.glob("*_0000.nii.gz")):
        if p != path:
            shutil.copyfile(p, str(p).replace("_0000", "_0001"))


def _bad_json(path: Path):
    meta_path = path.parents[1] / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["numTraining"] = 99
    meta_path.write_text(json.dumps(meta))


def _extra_channel_geometry(path: Path):
    """Turn the case into 2 channels with different grids while dataset.json says 2 channels."""
    meta_path = path.parents[1] / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    meta_path.write_text(json.dumps(meta))
    for p in sorted(path.parent.glob("*_0000.nii.gz")):
        im = sitk.ReadImage(str(p))
        if p == path:
            im = sitk.Resample(im, [s - 2 for s in im.GetSize()], sitk.Transform(), sitk.sitkLinear, im.GetOrigin(),
                               im.GetSpacing(), im.GetDirection())
        sitk.WriteImage(im, str(p).replace("_0000", "_0001"))


@pytest.mark.parametrize("breaker, words", [
    (_corrupt, "corrupt"), (_four_d, "3-D"), (_nan, "NaN"), (_empty, "constant"), (_missing, "missing channel"),
    (_bad_json, "numTraining"), (_extra_channel_geometry, "geometry differs"),
])
def test_bad_input_one_line_and_no_output(phantom_raw, data_roots, caplog, breaker, words):
    victim = sorted((phantom_raw / "imagesTr").glob("*_0000.nii.gz"))[1]
    breaker(victim)
    assert _run() == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(words in m and ("_000" in m or "dataset.json" in m) for m in errors), errors
    assert all("\n" not in m for m in errors[:-1])
    leftovers = list(data_roots["preprocessed"].iterdir())
    assert leftovers == [], f"partial output left: {leftovers}"


def test_existing_output_survives_a_failed_rerun(phantom_raw, data_roots):
    assert _run("-c", "3d") == 0
    out = data_roots["preprocessed"] / phantom_raw.name
    before = sorted(p.name for p in out.rglob("*"))
    _nan(sorted((phantom_raw / "imagesTr").glob("*_0000.nii.gz"))[0])
    assert _run("-c", "3d") == 1
    assert sorted(p.name for p in out.rglob("*")) == before


def test_missing_environment_variable(monkeypatch, caplog):
    monkeypatch.delenv("ITERMASK_raw", raising=False)
    assert plan_main(["-d", "1"]) == 1
    assert any("ITERMASK_raw" in r.getMessage() for r in caplog.records)


def test_stale_staging_folder_of_a_killed_run_is_removed(phantom_raw, data_roots):
    stale = data_roots["preprocessed"] / f".{phantom_raw.name}.partial-99999"
    (stale / "half").mkdir(parents=True)
    assert _run("-c", "3d", "--plan_only") == 0
    assert not stale.exists()
    assert (data_roots["preprocessed"] / phantom_raw.name / "itermask_plans.json").is_file()


def test_replanning_keeps_valid_preprocessed_data_and_drops_stale(phantom_raw, data_roots, caplog):
    """--plan_only, or preprocessing another configuration, must not delete arrays the new plan would make the same
    way (it used to wipe them); arrays the new plan would make differently are dropped with a warning."""
    out = data_roots["preprocessed"] / phantom_raw.name
    assert _run("-c", "3d") == 0
    folder_3d = out / Plans.load(out / "itermask_plans.json").configuration("3d").data_identifier
    before = {p.name: p.stat().st_mtime_ns for p in folder_3d.glob("*.npz")}
    assert len(before) == 4
    assert _run("-c", "3d", "--plan_only") == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder_3d.glob("*.npz")} == before   # kept, untouched
    assert _run("-c", "2d") == 0                                                          # the other configuration
    plans = Plans.load(out / "itermask_plans.json")
    assert {p.name: p.stat().st_mtime_ns for p in folder_3d.glob("*.npz")} == before
    assert len(list_preprocessed_cases(out / plans.configuration("2d").data_identifier)) == 4
    # the arrays record what made them: a hand edit of the plan file alone does not make them stale for a re-plan
    # that plans them as they were made
    raw_plan = json.loads((out / "itermask_plans.json").read_text())
    raw_plan["hf_radius_cycles_per_mm"] = raw_plan["hf_radius_cycles_per_mm"] * 2
    (out / "itermask_plans.json").write_text(json.dumps(raw_plan))
    assert _run("-c", "2d") == 0
    assert {p.name: p.stat().st_mtime_ns for p in folder_3d.glob("*.npz")} == before
    # arrays made before the record, by an old plan that normalised differently: stale, must not survive a re-plan
    (folder_3d / PREPROCESSING_INPUTS_FILE).unlink()
    (out / "itermask_plans.json").write_text(json.dumps(raw_plan))
    caplog.clear()
    assert _run("-c", "3d", "--plan_only") == 0
    assert not folder_3d.exists()
    assert any("dropped the preprocessed 3d data" in r.getMessage() for r in caplog.records)


def test_a_hand_edited_plan_is_preprocessed_with_use_existing_plan_and_training_refuses_stale_arrays(
        phantom_raw, data_roots, capsys):
    from itermask_auto.training.cli import main as train_main
    out = data_roots["preprocessed"] / phantom_raw.name
    assert _run("-c", "3d", "2d") == 0
    plans = Plans.load(out / "itermask_plans.json")
    folder_3d, folder_2d = (out / plans.configuration(c).data_identifier for c in ("3d", "2d"))
    assert recorded_inputs(folder_3d) == preprocessing_inputs(plans, "3d")
    assert PREPROCESSING_INPUTS_FILE not in {f"{c}.json" for c in list_preprocessed_cases(folder_3d)}
    shape_before = load_case(folder_3d, list_preprocessed_cases(folder_3d)[0])[0].shape
    raw_plan = json.loads((out / "itermask_plans.json").read_text())   # a person coarsens the 3d grid
    raw_plan["configurations"]["3d"]["spacing"] = [5.0, 5.0, 5.0]
    (out / "itermask_plans.json").write_text(json.dumps(raw_plan))
    capsys.readouterr()
    assert train_main(["-d", "990", "-c", "3d", "--epochs", "1", "--threads", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "spacing" in err[0] and "--use_existing_plan" in err[0] and str(folder_3d) in err[0]
    assert not (data_roots["results"] / phantom_raw.name).exists()
    # preprocessing the other configuration with the edited plan: the 3d arrays no longer match it, dropped
    assert _run("-c", "2d", "--use_existing_plan") == 0
    assert not folder_3d.exists() and len(list_preprocessed_cases(folder_2d)) == 4
    assert _run("-c", "3d", "--use_existing_plan") == 0
    kept = Plans.load(out / "itermask_plans.json")
    assert kept.configuration("3d").spacing == [5.0, 5.0, 5.0]   # not re-planned
    shape_after = load_case(folder_3d, list_preprocessed_cases(folder_3d)[0])[0].shape
    assert all(a < b for a, b in zip(shape_after[1:], shape_before[1:]))   # made on the coarser grid
    check_arrays_match_plan(folder_3d, kept, "3d", phantom_raw.name)   # training takes them now
    # without a plan there is nothing to use: one line naming the file
    shutil.rmtree(out)
    assert _run("-c", "3d", "--use_existing_plan") == 1
    assert not out.exists()


def test_a_dataset_left_aside_by_a_killed_swap_is_restored(phantom_raw, data_roots):
    """A run killed between its two renames leaves the previous dataset as .NAME.replaced-PID and no NAME: the
    next run puts it back before working (and deletes such leftovers when NAME exists)."""
    out = data_roots["preprocessed"] / phantom_raw.name
    assert _run("-c", "3d") == 0
    aside = out.with_name(f".{out.name}.replaced-99999")
    out.rename(aside)
    assert _run("-c", "3d", "--plan_only") == 0
    assert not aside.exists()
    plans = Plans.load(out / "itermask_plans.json")
    assert len(list_preprocessed_cases(out / plans.configuration("3d").data_identifier)) == 4
    (aside / "x").mkdir(parents=True)             # a leftover next to a live dataset is just removed
    assert _run("-c", "3d", "--plan_only") == 0
    assert not aside.exists()


def test_a_failed_swap_keeps_the_old_dataset_whole(phantom_raw, data_roots, monkeypatch):
    """If putting the new folder in place fails, the old dataset (arrays included) is back where it was."""
    import itermask_auto.experiment_planning.api as api
    out = data_roots["preprocessed"] / phantom_raw.name
    assert _run("-c", "3d") == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*.npz"))
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.startswith(f".{out.name}.partial-"):
            raise OSError("disk gone")
        return real_replace(src, dst)
    monkeypatch.setattr(api.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        api.plan_and_preprocess(990, ("3d",), num_processes=1, plan_only=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*.npz")) == before and len(before) == 4
    assert not list(out.parent.glob(f".{out.name}.*"))


def test_the_gpu_memory_target_plans_for_the_gpu_and_is_refused_with_the_cpu_profile(
        phantom_raw, data_roots, capsys, caplog):
    with pytest.raises(SystemExit) as stop:
        plan_main(["-d", "990", "--profile", "cpu", "-gpu_memory_target", "8", "--plan_only"])
    assert stop.value.code == 2 and "-gpu_memory_target" in capsys.readouterr().err
    caplog.set_level("INFO")
    assert plan_main(["-d", "990", "-gpu_memory_target", "4", "--plan_only", "-np", "1"]) == 0
    plans = Plans.load(data_roots["preprocessed"] / phantom_raw.name / "itermask_plans.json")
    assert plans.profile == "gpu"
    assert any("planning for the gpu profile (-gpu_memory_target given)" in r.getMessage() for r in caplog.records)
