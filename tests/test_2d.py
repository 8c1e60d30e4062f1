"""Configuration 2d and method itermask2: slice-wise reconstruction, the IterMask2 procedure with oracle
reconstructors, training masks for τ, and the CLI end to end on an anisotropic phantom (2d planned by default)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from itermask_auto.experiment_planning.plans import InferencePlan, Plans
from itermask_auto.methods.itermask2.procedure import initial_mask, itermask2
from itermask_auto.methods.itermask2.calibration import random_training_mask
from itermask_auto.inference.sliding_window import reconstruct_volume
from itermask_auto.inference.slicewise import reconstruct_slicewise
from itermask_auto.methods.itermask2.first_iter import HFOnly
import trainer_fixtures
from trainer_fixtures import make_plans


class ReturnHF(torch.nn.Module):
    """Stub 2-D network: outputs the hf channels of its [masked image, hf] input (so the result is known)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, x.shape[1] // 2:] * 1.0


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_slicewise_matches_per_slice_window_and_skips_empty_slices(slice_axis):
    rng = np.random.default_rng(slice_axis)
    image = rng.normal(size=(2, 6, 20, 18)).astype(np.float32)
    hf = rng.normal(size=image.shape).astype(np.float32)
    mask = np.zeros(image.shape[1:], bool)
    index = [slice(None)] * 3
    index[slice_axis] = slice(2, 4)                     # only two slices hold masked voxels
    mask[tuple(index)] = rng.random(mask[tuple(index)].shape) > 0.7
    patch = [6, 8]
    recon, windows = reconstruct_slicewise(ReturnHF(), image, hf, mask, patch, slice_axis, step=0.5, batch_size=3)
    assert recon.shape == image.shape and recon.dtype == np.float32
    np.testing.assert_allclose(recon[:, mask], hf[:, mask], atol=1e-5)        # reconstructed where masked
    untouched = np.ones(mask.shape, bool)
    untouched[tuple(index)] = False
    np.testing.assert_array_equal(recon[:, untouched], image[:, untouched])   # slices without mask skipped
    # same windows and values as the 3-D sliding window run on each slice on its own
    ref, ref_windows = image.copy(), 0
    for z in range(mask.shape[slice_axis]):
        sl = [slice(None)] * 3
        sl[slice_axis] = z
        if mask[tuple(sl)].any():
            out, n = reconstruct_volume(ReturnHF(), image[(slice(None),) + tuple(sl)],
                                        hf[(slice(None),) + tuple(sl)], mask[tuple(sl)], patch, 0.5)
            ref[(slice(None),) + tuple(sl)], ref_windows = out, ref_windows + n
    assert windows == ref_windows > 0
    np.testing.assert_allclose(recon, ref, atol=1e-5)


def test_hf_only_wrapper_feeds_only_hf():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen["channels"] = x.shape[1]
            return x
    out = HFOnly(Spy(), 3)(torch.arange(6.0).reshape(1, 6, 1, 1))
    assert seen["channels"] == 3 and out.flatten().tolist() == [3.0, 4.0, 5.0]


def _synthetic_case(seed: int = 0, lesion_channels=(0,), n_channels: int = 1):
    """Smooth 'healthy' volume in an ellipsoidal brain, plus a bright spherical lesion in some channels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:16, :32, :32]
    brain = ((z - 7.5) / 7) ** 2 + ((y - 15.5) / 14) ** 2 + ((x - 15.5) / 14) ** 2 < 1
    healthy = np.stack([np.sin(x / 4.0 + c) + np.cos(y / 5.0) + 0.1 * rng.normal(size=brain.shape)
                        for c in range(n_channels)]).astype(np.float32)
    lesion = ((z - 8) ** 2 + (y - 12) ** 2 + (x - 18) ** 2 <= 9) & brain
    image = healthy.copy()
    for c in lesion_channels:
        image[c][lesion] += 2.5
    image[:, ~brain] = -3.0
    healthy[:, ~brain] = -3.0
    return image, healthy, brain, lesion


def _oracles(healthy: np.ndarray, sigma_first: float = 0.5, sigma: float = 0.1):
    """The masked AE restores healthy tissue (fresh small noise per pass); first_iter is a coarser restorer."""
    rng = np.random.default_rng(7)
    calls = {"ae": 0, "first": 0}

    def reconstruct(mask, needed=None):
        calls["ae"] += 1
        return healthy + sigma * rng.normal(size=healthy.shape).astype(np.float32)

    def first(mask, needed=None):
        calls["first"] += 1
        return healthy + sigma_first * rng.normal(size=healthy.shape).astype(np.float32)
    return reconstruct, first, calls


def _dice(a, b):
    return 2 * np.sum(a & b) / max(a.sum() + b.sum(), 1)


def test_itermask2_oracle_finds_lesion_with_shrinking_masks():
    image, healthy, brain, lesion = _synthetic_case()
    reconstruct, first, calls = _oracles(healthy)
    # τ as calibrated: 80th percentile of the masked error under random 2d training masks on a HEALTHY case
    plans = make_plans(patch=(16, 32, 32))
    config = plans.configuration("2d")
    mask = random_training_mask(brain, config, plans.training_masks, np.random.default_rng(0))
    healthy_case = healthy + 0.1 * np.random.default_rng(3).normal(size=healthy.shape).astype(np.float32)
    err = np.mean((healthy_case - reconstruct(mask)) ** 2, axis=0)[mask]
    tau = float(np.percentile(err, 80))
    plan = InferencePlan(max_shrink_passes=8)
    res = itermask2(reconstruct, first, image, brain, plan, tau, keep_masks=True)

    assert res.procedure == "itermask2" and calls["first"] == 1 and res.passes == 1 + calls["ae"] - 1
    m1 = res.masks[1]
    assert abs(m1.sum() - 0.6 * brain.sum()) <= 1 and lesion[brain].sum() and np.all(m1[lesion])
    for prev, cur in zip(res.masks[1:], res.masks[2:]):            # nested, shrinking masks
        assert not np.any(cur & ~prev) and cur.sum() <= prev.sum()
    assert res.masks[-1].sum() < 0.1 * m1.sum()
    assert _dice(res.final_mask, lesion) > 0.9, _dice(res.final_mask, lesion)
    np.testing.assert_array_equal(res.final_mask, (res.anomaly_map > tau) & brain)   # the map explains the mask
    assert np.all(res.anomaly_map[~brain] == 0) and res.scores["mask_fraction"] < 0.05


def test_itermask2_without_tau_uses_the_case_and_initial_mask_is_exact():
    image, healthy, brain, lesion = _synthetic_case(seed=1)
    reconstruct, first, calls = _oracles(healthy)
    res = itermask2(reconstruct, first, image, brain, InferencePlan(), tau=None)
    assert res.fit["calibrated"] is False and res.tau > 0 and np.all(res.final_mask[lesion])
    e = np.arange(10.0).reshape(1, 10)
    assert initial_mask(e, np.ones((1, 10), bool), 0.6).sum() == 6
    assert initial_mask(e, np.ones((1, 10), bool), 0.6)[0, 4:].all()
    with pytest.raises(ValueError):
        initial_mask(e, np.ones((1, 10), bool), 0.0)


def test_random_training_masks_stay_in_the_brain():
    _, _, brain, _ = _synthetic_case()
    plans = make_plans(patch=(16, 32, 32))
    m2 = random_training_mask(brain, plans.configuration("2d"), plans.training_masks, np.random.default_rng(1))
    m3 = random_training_mask(brain, plans.configuration("3d"), plans.training_masks, np.random.default_rng(1))
    for m in (m2, m3):
        assert m.shape == brain.shape and m.any() and not np.any(m & ~brain)
    per_slice = m2.reshape(m2.shape[0], -1).any(1)
    assert per_slice.sum() >= 0.8 * brain.reshape(brain.shape[0], -1).any(1).sum()   # one blob per brain slice


# ---- end to end through the three CLIs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def aniso_dataset(tmp_path_factory):
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    root = tmp_path_factory.mktemp("aniso")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_fresh_roots(mp, root)
    # 1.5 x 1.5 x 5 mm: anisotropy 3.3 > 3, so the planner makes 2d the default
    raw = write_phantom_dataset(root / "raw", 991, "Aniso", n_train=4, n_test_healthy=1, n_test_lesion=1,
                                size=(40, 48, 12), spacing=(1.5, 1.5, 5.0))
    yield root, raw
    mp.undo()


def test_cli_2d_itermask2_end_to_end(aniso_dataset, tmp_path):
    from itermask_auto.experiment_planning.cli import main as plan_main
    from itermask_auto.inference.cli import main as predict_main
    from itermask_auto.training.cli import main as train_main
    root, raw = aniso_dataset
    assert plan_main(["-d", "991", "-c", "2d", "-np", "1"]) in (0, None)
    plans = Plans.load(root / "preprocessed" / raw.name / "itermask_plans.json")
    assert plans.default_configuration == "2d" and plans.configuration("2d").slice_axis == 0
    assert len(plans.configuration("2d").patch_size) == 2

    assert train_main(["-d", "991", "-c", "2d", "-f", "0", "-m", "itermask2", "--epochs", "1", "--iterations", "1",
                       "--threads", "1"]) == 0
    fold = root / "results" / raw.name / f"itermask2__{plans.plans_name}__2d" / "fold_0"
    for f in ("checkpoint_final.pth", "first_iter/checkpoint_final.pth", "calibration.json"):
        assert (fold / f).is_file(), f
    cal = json.loads((fold / "calibration.json").read_text())
    masked = cal["masked_error_summary"]
    assert cal["inference_mode"] == "itermask2" and masked["q0.5"] <= cal["itermask2_tau"] <= masked["q0.9"]

    out = tmp_path / "out"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "991", "-c", "2d", "-m", "itermask2",
                         "-masks", str(raw / "masksTs"), "--quiet"]) == 0
    for case in ("phantom_healthy_000", "phantom_lesion_000"):
        ref = sitk.ReadImage(str(raw / "imagesTs" / f"{case}_0000.nii.gz"))
        for kind in ("anomaly", "seg"):
            im = sitk.ReadImage(str(out / f"{case}_{kind}.nii.gz"))
            assert im.GetSize() == ref.GetSize() and im.GetDirection() == ref.GetDirection()
            np.testing.assert_allclose(im.GetSpacing(), ref.GetSpacing())
            np.testing.assert_allclose(im.GetOrigin(), ref.GetOrigin())
        summary = json.loads((out / f"{case}.json").read_text())
        assert summary["procedure"] == "itermask2" and summary["configuration"] == "2d" and summary["calibrated"]
        assert summary["tau"] == pytest.approx(cal["itermask2_tau"])
        anomaly = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_anomaly.nii.gz")))
        brain = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "masksTs" / f"{case}.nii.gz"))) > 0
        assert np.isfinite(anomaly).all() and anomaly[brain].max() > 0 and np.all(anomaly[~brain] == 0)

    # the same 2-D masked autoencoder also runs the IterMask3D procedure slice-wise (-c 2d -m itermask3d)
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.storage import list_preprocessed_cases, load_case
    from itermask_auto.training.checkpoint import load_trained_model
    network, plans, configuration, _ = load_trained_model(fold)
    data_dir = root / "preprocessed" / raw.name / plans.configuration("2d").data_identifier
    data, hf, brain, _ = load_case(data_dir, list_preprocessed_cases(data_dir)[0])
    pred = Predictor(network, plans, configuration, "itermask3d").predict_arrays(data, hf, brain)
    assert pred.anomaly.shape == brain.shape and pred.summary["procedure"] == "itermask3d"
    assert pred.summary["network_passes"] >= 2 and np.all(pred.anomaly[~brain] == 0)


def test_itermask2_predictor_runs_in_3d_too():
    """-c 3d -m itermask2: the same two-network procedure with 3-D sliding windows (untrained tiny networks)."""
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.methods.itermask2.first_iter import first_iter_configuration
    from itermask_auto.training.network import build_network
    plans = make_plans(patch=(16, 32, 32), features=(4, 8))
    torch.manual_seed(0)
    config = plans.configuration("3d")
    ae, first = build_network(config).eval(), build_network(first_iter_configuration(config)).eval()
    assert first_iter_configuration(config).network.input_channels == 1 and config.network.input_channels == 2
    image, _, brain, _ = _synthetic_case()
    hf = image - image.mean()
    predictor = Predictor({"reconstruction": ae, "first_iter": first}, plans, "3d", "itermask2",
                          calibration={"itermask2_tau": 0.5})
    result, stats = predictor.infer(image, hf, brain, keep_masks=True)
    assert result.procedure == "itermask2" and result.tau == 0.5 and stats["network_passes"] == result.passes >= 2
    assert abs(result.masks[1].sum() - 0.6 * brain.sum()) <= 1 and result.anomaly_map.shape == brain.shape
    with pytest.raises(ValueError, match="first-iteration"):
        Predictor(ae, plans, "3d", "itermask2").infer(image, hf, brain)


class _OneCase:
    """A CaseStore stand-in: one case whose intensity is the index along one axis."""

    def __init__(self, shape, axis):
        from itermask_auto.training.data import CaseArrays
        coord = np.indices(shape)[axis].astype(np.float32)
        brain = np.ones(shape, bool)
        self.case = CaseArrays(coord[None], np.zeros((1, *shape), np.float32), brain, np.flatnonzero(brain))

    def get(self, _):
        return self.case


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_2d_patches_are_cut_across_the_planned_slice_axis(slice_axis):
    """Training slices must lie across the plan's slice axis (inference cuts there too): along that axis the
    intensity (= the index along it) is then constant within every patch, and the patch has the other two axes."""
    from itermask_auto.training.data import PatchSampler
    shape = (10, 14, 18)
    plans = make_plans()
    config = plans.configurations["2d"]
    config.slice_axis = slice_axis
    config.patch_size = [n for a, n in enumerate(shape) if a != slice_axis]
    sampler = PatchSampler(_OneCase(shape, slice_axis), ["c"], plans, "2d", "blobs", batch_size=6, augment=False,
                           seed=slice_axis)
    batch = sampler.next_batch()
    assert tuple(batch["image"].shape) == (6, 1, *config.patch_size)
    background = plans.normalization.background_value   # the crop around a random centre pads with it
    levels = []
    for image in batch["image"][:, 0].numpy():
        inside = np.unique(image[image != background])
        assert inside.size == 1                    # one slice across the slice axis
        levels.append(inside[0])
    assert len(set(levels)) > 1                    # and different slices are drawn


def test_2d_training_along_another_slice_axis_runs(tmp_path, monkeypatch):
    from itermask_auto.training.api import run_training
    from trainer_fixtures import make_preprocessed_phantom_dataset, set_roots
    set_roots(monkeypatch, tmp_path)
    name, plans = make_preprocessed_phantom_dataset(tmp_path, n_cases=2)
    plans.configurations["2d"].slice_axis = 2
    plans.save(tmp_path / "preprocessed" / name / "itermask_plans.json")
    fold = run_training(name, "2d", 0, method="itermask3d", epochs=1, iterations=2, num_threads=1,
                        run_calibration=False)
    assert (fold / "checkpoint_final.pth").is_file()
