"""Issue 4's acceptance on CPU: a short training on healthy phantoms through the real pipeline (plan and preprocess,
train, healthy-only calibration), then the IterMask3D procedure's own final mask, in the planned mode (one τ in units
of each scan's median error, searched so that the healthy validation final masks cover α) and with the per-subject
knee (`-mode itermask3d`, the calibrated γ):
- overlaps an easy inserted lesion (Dice > 0.5),
- the knee shrinks a healthy phantom's final mask to about α (the mean over two new healthy heads < 2 α; single
  heads range 0.4-1.7 % at α = 1 %); the planned τ leaves about α (two validation heads estimate it loosely: the
  mean over two new healthy heads < 3 α).
No label is used anywhere but in the assertions. About 4 minutes on 2 idle CPU cores (the slowest test here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
trainer_fixtures = pytest.importorskip("trainer_fixtures")
pytest.importorskip("itermask_auto.training.api")

from itermask_auto.dataset_conversion.phantom import make_phantom, write_phantom_dataset  # noqa: E402
from itermask_auto.experiment_planning.api import plan_and_preprocess  # noqa: E402
from itermask_auto.inference.predictor import Predictor  # noqa: E402
from itermask_auto.preprocessing.export import to_original_geometry  # noqa: E402
from itermask_auto.preprocessing.preprocessor import preprocess_case  # noqa: E402
from itermask_auto.training.api import run_training  # noqa: E402
from itermask_auto.utilities.atomic import read_json  # noqa: E402

SIZE, SPACING = (36, 42, 33), (4.0, 4.0, 4.0)   # x, y, z: a whole phantom head at 4 mm
EPOCHS, ITERATIONS = 12, 30
SCALE = 0.813                                   # the anatomy scale write_phantom_dataset would fit to this grid


@pytest.fixture(scope="module")
def fold_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained_phantom")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_fresh_roots(mp, root)
    write_phantom_dataset(root / "raw", 980, "EasyPhantom", n_train=10, n_test_healthy=0, n_test_lesion=0,
                          size=SIZE, spacing=SPACING, anatomy_scale=SCALE)
    plan_and_preprocess(980, configurations=("3d",), num_processes=1, profile="cpu")
    folder = run_training(980, "3d", fold=0, device="cpu", epochs=EPOCHS, iterations=ITERATIONS,
                          run_calibration=True)
    yield Path(folder)
    mp.undo()


def _final_mask(fold: Path, tmp: Path, seed: int, n_lesions: int, mode: str | None = None):
    """(final mask in the input geometry, label, brain fraction of the final mask, result) of a new phantom, in the
    plan's inference mode or `mode`."""
    ph = make_phantom(seed, size=SIZE, spacing=SPACING, skull=False, n_lesions=n_lesions,
                      lesion_radius_mm=(8.0, 12.0), lesion_contrast=1.0, anatomy_scale=SCALE)
    image, mask = tmp / f"case{seed}_0000.nii.gz", tmp / f"case{seed}_mask.nii.gz"
    sitk.WriteImage(ph.image, str(image))
    sitk.WriteImage(ph.brain_mask, str(mask))
    predictor = Predictor.from_model_folder(fold)
    predictor.plans.inference.mode = mode or predictor.plans.inference.mode
    data, hf, brain, props = preprocess_case([image], predictor.plans, "3d", mask)
    result, _ = predictor.infer(data, hf, brain)
    final = sitk.GetArrayFromImage(to_original_geometry(result.final_mask.astype(np.uint8), props, order=0)) > 0
    label = sitk.GetArrayFromImage(ph.label) > 0
    return final, label, float(result.final_mask.sum() / brain.sum()), result


def test_calibration_sets_gamma_on_healthy_validation(fold_dir):
    cal = read_json(fold_dir / "calibration.json")
    assert cal["gamma"] > 0 and cal["gamma"] != cal["gamma_reference"]
    assert set(cal["gamma_per_case"]) == set(cal["cases"])
    # the planned mode: the τ searched in median-error units leaves at most α of the healthy validation brains
    assert cal["inference_mode"] == "itermask2" and cal["itermask2_tau_scale"] == "median_error"
    chosen = [row["fraction"] for row in cal["itermask2_tau_search"] if row["tau"] == cal["itermask2_tau"]]
    assert chosen and 0 < chosen[0] <= cal["alpha"] + 1e-9   # pooled voxels of the validation brains


@pytest.mark.parametrize("mode", [None, "itermask3d"])
def test_easy_lesion_is_found_by_the_final_mask(fold_dir, tmp_path, mode):
    final, label, _, result = _final_mask(fold_dir, tmp_path, seed=701, n_lesions=2, mode=mode)
    assert label.sum() > 50
    dice = 2 * (final & label).sum() / (final.sum() + label.sum())
    assert dice > 0.5, f"final-mask Dice {dice:.3f} (tau {result.tau:.3f}, {result.passes} passes)"
    assert result.passes <= 15


def test_the_knee_shrinks_healthy_final_masks_to_about_alpha(fold_dir, tmp_path):
    """Each head's own knee: on six new healthy heads this 12-epoch model leaves 0.39-1.73 % (mean 0.96 %) on one
    2-core machine; the two heads here (0.39 %, 1.65 % there) were each < 1 % on another, so a single head's
    fraction is not the figure to assert: their mean < 2 α (the shrink starts from the whole brain)."""
    fractions = [_final_mask(fold_dir, tmp_path, seed=seed, n_lesions=0, mode="itermask3d")[2] for seed in (501, 502)]
    alpha = read_json(fold_dir / "calibration.json")["alpha"]
    print(f"knee: healthy final masks {[round(100 * f, 2) for f in fractions]} % (alpha {100 * alpha:g} %)")
    assert np.mean(fractions) < 2 * alpha, fractions


def test_the_planned_taus_healthy_final_masks_stay_near_alpha(fold_dir, tmp_path):
    fractions = [_final_mask(fold_dir, tmp_path, seed=seed, n_lesions=0)[2] for seed in (501, 502)]
    alpha = read_json(fold_dir / "calibration.json")["alpha"]
    print(f"planned tau: healthy final masks {[round(100 * f, 2) for f in fractions]} % (alpha {100 * alpha:g} %)")
    assert np.mean(fractions) < 3 * alpha, fractions
