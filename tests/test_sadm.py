"""Method sadm (Behrendt et al. 2024) on tiny phantoms: the plan, the noise and the synthetic anomalies; one model
trained under a guard that fails on any read of raw data or test labels, then what it must show: stage 1 heals a
lesion it reconstructs, stage 2 finds a dark blob although it trained on noise blends only, the maps and the
calibrated thresholds; resume per stage (see test_sadm_workflow.py for --labelled and the commands)."""
from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from itermask_auto.evaluation.metrics import auroc
from itermask_auto.evaluation.synthetic_lesions import apply_lesion_intensity
from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.methods.registry import get_method
from itermask_auto.methods.sadm import anomalies
from itermask_auto.methods.sadm.anomalies import synthetic_anomaly
from itermask_auto.methods.sadm.augment import NNUNET_INTENSITY_DEFAULTS
from itermask_auto.methods.sadm.inference import ensemble
from itermask_auto.methods.sadm.noise import field_bank, mask_bank, mask_field, octave_wavelengths, simplex_noise
from itermask_auto.methods.sadm.plan import CPU_ITERATIONS, CPU_VALIDATION_ITERATIONS, default_plan
from itermask_auto.methods.sadm.training import to_model_space
from itermask_auto.training import api
from itermask_auto.training.checkpoint import load_checkpoint
from itermask_auto.training.trainer import Trainer
from sadm_fixtures import SIZE_XYZ, phantom_pair, recipe, set_method_plan, tiny_plan
from trainer_fixtures import make_preprocessed_phantom_dataset

REFERENCE_PLAN = Path(__file__).resolve().parents[1] / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json"


# ---- plan, noise, synthetic anomalies (no training) ---------------------------------------------------------------
def test_plan_records_every_constant_and_fits_the_cpu_budget():
    plans = Plans.load(REFERENCE_PLAN)
    cpu = default_plan(plans)
    assert cpu["slice_size"] == [96, 80] and cpu["ensemble_t"] == [250, 500, 750]
    assert (cpu["schedule"], cpu["prediction"], cpu["loss"], cpu["noise"]) == ("cosine", "sample", "l1", "simplex")
    assert (cpu["noise_octaves"], cpu["noise_persistence"], cpu["noise_start_wavelength_px"]) == (6, 0.8, 64.0)
    assert cpu["intensity_zero"] == plans.normalization.background_value == -cpu["intensity_one"]
    for key in ("slice_size", "intensity", "noise", "ensemble_t", "networks", "anomaly_kinds", "recipes"):
        assert cpu["rules"][key]
    # the cpu recipe fits the 90 minutes at the step times it was sized with (validation included)
    from itermask_auto.methods.sadm import plan as plan_module
    minutes = sum(cpu[f"{s}_recipe"]["num_epochs"] * (CPU_ITERATIONS + CPU_VALIDATION_ITERATIONS * f) * step / 60
                  for s, step, f in (("diffusion", plan_module.CPU_DIFFUSION_STEP_S,
                                      plan_module.CPU_VALIDATION_STEP_FRACTION[0]),
                                     ("delineation", plan_module.CPU_DELINEATION_STEP_S,
                                      plan_module.CPU_VALIDATION_STEP_FRACTION[1])))
    assert 60 < minutes <= 90
    plans.profile = "gpu"
    gpu = default_plan(plans)
    assert gpu["diffusion_channels"] == [128, 256, 256] and gpu["diffusion_res_blocks"] == 3
    assert gpu["siamese_features"] == [64, 128, 256, 512] and gpu["diffusion_batch"] == 32
    assert gpu["diffusion_recipe"]["initial_lr"] == 1e-4 and gpu["delineation_recipe"]["initial_lr"] == 5e-5
    # an edited plan wins over the defaults, and impossible values are refused in one line
    plans.profile = "cpu"
    plans.method_plans["sadm"] = {"slice_size": [90, 80]}
    with pytest.raises(ValueError, match="slice_size"):
        get_method("sadm").check(plans, "2d")
    with pytest.raises(ValueError, match="trains configuration"):
        get_method("sadm").check(plans, "3d")


def test_simplex_noise_is_opensimplex_octaves_drawn_per_seed():
    import opensimplex
    plan = {**tiny_plan(), "slice_size": [32, 32], "noise_octaves": 6, "noise_persistence": 0.8,
            "noise_start_wavelength_px": 21.33, "noise_seed": 5, "noise": "simplex"}
    bank = field_bank(1, 16, octave_wavelengths(8.0, 2), 0.5, 3)
    coords = np.arange(16) / 8.0
    generator = opensimplex.OpenSimplex(seed=3)
    expected = generator.noise2array(coords, coords) + 0.5 * generator.noise2array(2 * coords, 2 * coords)
    np.testing.assert_allclose(bank[0], expected, atol=1e-6)
    draw = lambda seeds: simplex_noise([np.random.default_rng(s) for s in seeds], (2, 32, 24), plan)  # noqa: E731
    a, b = draw([1, 2]), draw([1, 2])
    assert a.shape == (2, 2, 32, 24) and torch.equal(a, b)          # the same seeds, the same noise
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0, 0], a[0, 1])
    assert 0.2 < float(a.std()) < 1.0                                 # not rescaled to unit variance (AnoDDPM)
    # DRAEM masks: more cells across the slice, more (smaller) blobs
    from scipy import ndimage
    counts = [np.mean([ndimage.label(mask_field((64, 64), (c, c), 0.0, np.random.default_rng(s), mask_bank(plan))
                                     > 0.5)[1] for s in range(6)]) for c in (1, 8)]
    assert counts[1] > 2 * max(counts[0], 0.5)


def test_fit_slices_centre_crops_and_pads_to_the_planned_size():
    from itermask_auto.methods.sadm.training import fit_slices
    image = torch.arange(2 * 6 * 4, dtype=torch.float32).reshape(2, 1, 6, 4)
    brain = image[:, 0] > 10
    out, out_brain = fit_slices(image, brain, [4, 8], -3.0)
    assert out.shape == (2, 1, 4, 8) and out_brain.shape == (2, 4, 8)
    assert torch.equal(out[:, :, :, 2:6], image[:, :, 1:5])
    assert (out[..., :2] == -3).all() and (out[..., 6:] == -3).all()
    assert torch.equal(out_brain[:, :, 2:6], brain[:, 1:5]) and not out_brain[..., :2].any()


def _slice(seed: int = 100):
    healthy, _, brain, _ = phantom_pair(seed)
    z = brain.shape[0] // 2
    plan = {**tiny_plan(), "slice_size": [32, 32], "noise_seed": 1}
    full = {**default_plan(Plans.load(REFERENCE_PLAN)), **plan}
    return to_model_space(healthy[:, z], full), brain[z], full


def test_synthetic_anomalies_are_seeded_inside_the_brain_and_kinds_can_be_left_out(monkeypatch):
    image, brain, plan = _slice()
    opened = []
    monkeypatch.setattr(builtins, "open", lambda *a, **k: opened.append(a) or io.StringIO(""))
    for kind in ("noise_blend", "lesion_blobs"):
        only = {**plan, "anomaly_kinds": {kind: 1.0}}
        out, mask, drawn = synthetic_anomaly(image, brain, [2.0, 2.0], ["T1"], np.random.default_rng(3), only)
        again = synthetic_anomaly(image, brain, [2.0, 2.0], ["T1"], np.random.default_rng(3), only)
        assert drawn == kind and mask.any() and not (mask & ~brain).any()
        np.testing.assert_array_equal(out, again[0])
        np.testing.assert_array_equal(out[:, ~brain], image[:, ~brain])     # nothing changes outside the brain
        assert np.abs(out - image)[:, mask].mean() > 0.02
        if kind == "lesion_blobs":                                          # T1: the project's rule makes it darker
            assert out[0][mask].mean() < image[0][mask].mean()
    assert opened == []                                                     # the generator reads no file
    never = {**plan, "anomaly_kinds": {"noise_blend": 1.0}}
    monkeypatch.setattr(anomalies, "lesion_blobs", lambda *a, **k: pytest.fail("lesion blobs drawn"))
    kinds = {synthetic_anomaly(image, brain, [2.0, 2.0], ["T1"], np.random.default_rng(s), never)[2]
             for s in range(20)}
    assert kinds == {"noise_blend"}
    with pytest.raises(ValueError, match="anomaly_kinds"):
        synthetic_anomaly(image, brain, [2.0, 2.0], ["T1"], np.random.default_rng(0),
                          {**plan, "anomaly_kinds": {"perlin": 1.0}})


# ---- one trained model: no raw data or label read; what stage 1 and stage 2 must show ----------------------------
STAGE1_ITERATIONS, STAGE2_ITERATIONS = 300, 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """sadm trained on 6 healthy phantoms with noise blends only (lesion blobs excluded), then calibrated, under a
    guard that fails on opening anything under raw/ (where the poisoned labelsTs live)."""
    root = tmp_path_factory.mktemp("sadm")
    make_preprocessed_phantom_dataset(root, n_cases=6, size_xyz=SIZE_XYZ)
    set_method_plan(root, tiny_plan((1, 1), (STAGE1_ITERATIONS, STAGE2_ITERATIONS), anomaly_kinds={"noise_blend": 1.0},
                                    diffusion_recipe=recipe(1, STAGE1_ITERATIONS, 1e-3)))
    raw = str(root / "raw")
    opened = []

    def guarded(fn):
        def wrapper(path, *args, **kwargs):
            if "labelsTs" in str(path) or str(path).startswith(raw):
                raise AssertionError(f"training opened {path}")
            opened.append(str(path))
            return fn(path, *args, **kwargs)
        return wrapper

    import nibabel
    import SimpleITK as sitk
    with pytest.MonkeyPatch.context() as mp:
        for sub in ("raw", "preprocessed", "results"):
            mp.setenv(f"ITERMASK_{sub}", str(root / sub))
        for module, attr in ((builtins, "open"), (io, "open"), (np, "load"), (sitk, "ReadImage"), (nibabel, "load")):
            mp.setattr(module, attr, guarded(getattr(module, attr)))
        mp.setattr(anomalies, "lesion_blobs", lambda *a, **k: pytest.fail("trained on a lesion blob"))
        fold = api.run_training(990, "2d", 0, method="sadm", num_threads=1)
    return root, fold, opened


@pytest.fixture
def predictor(trained, monkeypatch):
    from itermask_auto.inference.predictor import Predictor
    root, fold, _ = trained
    for sub in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"ITERMASK_{sub}", str(root / sub))
    p = Predictor.from_model_folder(fold)
    return p, p.spec.method_plan(p.plans)


def test_training_reads_only_preprocessed_arrays(trained):
    root, fold, opened = trained
    assert any(p.endswith(".npz") for p in opened) and not any("labelsTs" in p for p in opened)
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "delineation" / "checkpoint_final.pth").is_file()
    note = json.loads((fold / "training_data.json").read_text())["synthetic_anomalies"]
    assert note["kinds"] == {"noise_blend": 1.0} and "none" in note["lesion_masks_read"]
    assert not any("blobs" in source for source in note["draws_from"])
    assert note["photometric_augmentation"] == NNUNET_INTENSITY_DEFAULTS     # the plan's, recorded with the model


def test_stage1_reconstructs_healthy_better_than_lesioned_inside_the_lesion(predictor):
    pred, plan = predictor
    healthy, lesioned, brain, lesion = phantom_pair(100)
    assert lesion.sum() > 50
    u_h, rec_h, _ = ensemble(pred, plan, healthy, brain)
    u_l, rec_l, _ = ensemble(pred, plan, lesioned, brain)
    u_h, rec_h, u_l, rec_l = (a[:, 0] for a in (u_h, rec_h, u_l, rec_l))      # slice axis 0: (Z, Y, X)
    err_healthy, err_lesioned = np.abs(rec_h - u_h)[lesion].mean(), np.abs(rec_l - u_l)[lesion].mean()
    assert err_lesioned > 3 * err_healthy
    # pseudo-healthy: inside the lesion the reconstruction of the lesioned head is close to the healthy head
    assert np.abs(rec_l - u_h)[lesion].mean() < 0.5 * np.abs(u_l - u_h)[lesion].mean()
    # and it reconstructs, rather than paints a mean: better than the brain's mean intensity (t = 250)
    _, rec_250, _ = ensemble(pred, {**plan, "ensemble_t": [250]}, healthy, brain)
    assert np.abs(rec_250[:, 0] - u_h)[brain].mean() < 0.8 * np.abs(u_h - u_h[brain].mean())[brain].mean()


def _dark_blob(healthy: np.ndarray, lesion: np.ndarray, brain: np.ndarray, plan) -> np.ndarray:
    """The healthy head with the project's lesion rule applied DARKER (c = −0.5) on the lesion shapes."""
    u = to_model_space(healthy[0], plan)
    dark, _ = apply_lesion_intensity(u, lesion, brain, (2.0, 2.0, 2.0), [-0.5] * 4)
    zero, one = plan["intensity_zero"], plan["intensity_one"]
    return (dark * (one - zero) + zero)[None].astype(np.float32)


def test_stage2_finds_a_dark_blob_it_never_trained_on(predictor):
    pred, plan = predictor
    healthy, _, brain, lesion = phantom_pair(101)
    result = pred.spec.infer(pred, _dark_blob(healthy, lesion, brain, plan), healthy, brain)
    probability = result.maps["probability"]
    assert auroc(probability[brain], lesion[brain]) > 0.9
    assert probability[lesion].mean() > 1.5 * probability[brain & ~lesion].mean()
    baseline = pred.spec.infer(pred, healthy, healthy, brain).maps["probability"]
    assert probability[lesion].mean() > 1.5 * baseline[lesion].mean()      # the blob, not the place, is found


def test_maps_and_calibrated_thresholds(trained, predictor):
    pred, plan = predictor
    _, fold, _ = trained
    calibration = json.loads((fold / "calibration.json").read_text())
    levels = calibration["voxel_thresholds"]
    assert list(levels) == ["0.01", "0.05", "0.1"] and levels["0.01"] == calibration["voxel_threshold"]
    assert levels["0.01"] >= levels["0.05"] >= levels["0.1"]
    assert calibration["case_source"] == "fold's healthy validation cases"
    healthy, _, brain, _ = phantom_pair(102)
    result = pred.spec.infer(pred, healthy, healthy, brain)
    assert set(result.maps) == {"probability", "ssim", "sum"}
    for values in result.maps.values():
        assert values.shape == brain.shape and not values[~brain].any() and np.isfinite(values).all()
    np.testing.assert_array_equal(result.anomaly_map, result.maps[calibration["anomaly_map"]])   # planned "auto"
    np.testing.assert_allclose(result.maps["sum"], result.maps["probability"] + result.maps["ssim"])
    assert 0 <= result.maps["ssim"].min() and result.maps["ssim"].max() <= 2
    assert result.tau == calibration["voxel_threshold"]
    np.testing.assert_array_equal(result.final_mask, (result.anomaly_map > result.tau) & brain)
    assert np.array_equal(pred.spec.infer(pred, healthy, healthy, brain).anomaly_map, result.anomaly_map)  # seeded
    other = next(m for m in ("ssim", "probability") if m != calibration["anomaly_map"])
    pred.plans.method_plans["sadm"] = {**pred.plans.method_plans["sadm"], "anomaly_map": other}
    with pytest.raises(ValueError, match=f"calibrated for anomaly_map '{calibration['anomaly_map']}' but its plan "
                                         f"now says '{other}': recalibrate"):
        pred.spec.infer(pred, healthy, healthy, brain)   # that threshold belongs to the other map
    pred.calibration = None
    np.testing.assert_array_equal(pred.spec.infer(pred, healthy, healthy, brain).anomaly_map, result.maps[other])


# ---- resume per stage -------------------------------------------------------------------------------------------
class _Stop(Exception):
    pass


def test_resume_between_and_inside_stages_gives_the_straight_model(tmp_path, monkeypatch):
    make_preprocessed_phantom_dataset(tmp_path, n_cases=4, size_xyz=SIZE_XYZ)
    set_method_plan(tmp_path, tiny_plan((2, 2), (2, 2)))
    for sub in ("raw", "preprocessed"):
        monkeypatch.setenv(f"ITERMASK_{sub}", str(tmp_path / sub))
    run = dict(method="sadm", num_threads=1, run_calibration=False)
    record, trainer_run = Trainer._record, Trainer.run

    def stop_in_delineation(self, *args):
        record(self, *args)
        if self.stage.name == "delineation" and self.epoch == 1:
            raise _Stop

    def stop_before_delineation(self, *args, **kwargs):
        if self.stage.name == "delineation":
            raise _Stop
        return trainer_run(self, *args, **kwargs)

    monkeypatch.setenv("ITERMASK_results", str(tmp_path / "stopped"))
    monkeypatch.setattr(Trainer, "run", stop_before_delineation)
    with pytest.raises(_Stop):
        api.run_training(990, "2d", 0, **run)                     # killed between the stages
    monkeypatch.setattr(Trainer, "run", trainer_run)
    monkeypatch.setattr(Trainer, "_record", stop_in_delineation)
    with pytest.raises(_Stop):
        fold = api.run_training(990, "2d", 0, continue_training=True, **run)   # ... and inside stage 2
    monkeypatch.setattr(Trainer, "_record", record)
    fold = api.run_training(990, "2d", 0, continue_training=True, **run)
    first = load_checkpoint(fold / "checkpoint_final.pth")
    second = load_checkpoint(fold / "delineation" / "checkpoint_final.pth")
    assert len(first["history"]["train_loss"]) == 2 and len(second["history"]["train_loss"]) == 2

    monkeypatch.setenv("ITERMASK_results", str(tmp_path / "straight"))
    straight = api.run_training(990, "2d", 0, **run)
    for name in ("checkpoint_final.pth", "delineation/checkpoint_final.pth"):
        a, b = load_checkpoint(fold / name)["network"], load_checkpoint(straight / name)["network"]
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a), name
