"""Multi-sequence datasets (T1 + T2 + FLAIR phantoms, channels _0000.._0002): each channel normalised on its own,
one high-frequency channel per sequence, all channels reconstructed, errors combined by the channel mean, and a
case missing a channel is a clear one-line error."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import trainer_fixtures

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.imageio.errors import InputError
from itermask_auto.methods.masked_reconstruction.procedures import squared_error
from itermask_auto.methods.masked_reconstruction.reconstruct import reconstructor
from itermask_auto.methods.itermask2.procedure import itermask2
from itermask_auto.utilities.frequency import high_frequency

SEQUENCES = ("T1", "T2", "FLAIR")


@pytest.fixture(scope="module")
def trained_ms(tmp_path_factory):
    """A 3-sequence phantom dataset, planned and preprocessed (2d), and a tiny itermask2 model (fold 0)."""
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.training.api import run_training
    root = tmp_path_factory.mktemp("multiseq")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_fresh_roots(mp, root)
    raw = write_phantom_dataset(root / "raw", 992, "MultiSeq", n_train=4, n_test_healthy=0, n_test_lesion=1,
                                size=(36, 44, 32), spacing=(2.0, 2.0, 2.0), channels=SEQUENCES)
    pre = plan_and_preprocess(992, configurations=("2d",), num_processes=1)
    fold = run_training(992, "2d", 0, method="itermask2", epochs=1, iterations=1, num_threads=1)
    yield root, raw, pre, fold
    mp.undo()


def test_each_sequence_normalised_alone_with_its_own_hf(trained_ms):
    from itermask_auto.experiment_planning.plans import Plans
    from itermask_auto.preprocessing.storage import list_preprocessed_cases, load_case
    _, _, pre, _ = trained_ms
    plans = Plans.load(pre / "itermask_plans.json")
    config = plans.configuration("2d")
    assert list(plans.channel_names.values()) == list(SEQUENCES)
    assert config.network.input_channels == 6 and config.network.output_channels == 3
    folder = pre / config.data_identifier
    data, hf, brain, props = load_case(folder, list_preprocessed_cases(folder)[0])
    assert data.shape[0] == hf.shape[0] == 3 and len(props["normalization"]) == 3
    for c in range(3):
        values = data[c][brain]
        assert abs(values.mean()) < 0.2 and 0.7 < values.std() < 1.3, (c, values.mean(), values.std())
        np.testing.assert_allclose(hf[c], high_frequency(data[c], config.spacing, plans.hf_radius_cycles_per_mm),
                                   atol=1e-4)
    # the sequences carry different contrasts (T1: CSF dark, T2: CSF bright), so no channel is a copy of another
    corr = np.corrcoef(np.stack([data[c][brain] for c in range(3)]))
    assert corr[0, 1] < 0.5 and not np.allclose(hf[0], hf[1])


def test_all_channels_reconstructed_and_predicted(trained_ms):
    from itermask_auto.inference.predictor import Predictor
    _, raw, _, fold = trained_ms
    predictor = Predictor.from_model_folder(fold)
    assert predictor.networks["first_iter"].encoder.stages[0][0].convs[0].conv.in_channels == 3
    assert predictor.network.encoder.stages[0][0].convs[0].conv.in_channels == 6
    files = sorted((raw / "imagesTs").glob("phantom_lesion_000_*.nii.gz"))
    assert [f.name[-11:-7] for f in files] == ["0000", "0001", "0002"]
    pred = predictor.predict_files(files, raw / "masksTs" / "phantom_lesion_000.nii.gz")
    reference = sitk.ReadImage(str(files[0]))
    assert pred.anomaly.shape == sitk.GetArrayFromImage(reference).shape
    assert pred.images["anomaly"].GetSpacing() == reference.GetSpacing()
    assert pred.summary["procedure"] == "itermask2" and np.isfinite(pred.anomaly).all()
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    data, hf, brain, _ = preprocess_case(files, predictor.plans, "2d", raw / "masksTs" / "phantom_lesion_000.nii.gz")
    recon = reconstructor(predictor, data, hf, predictor.plans.inference)(brain)
    assert recon.shape == data.shape and not np.allclose(recon[:, brain], data[:, brain])


def test_missing_channel_is_a_clear_error(trained_ms, tmp_path, caplog):
    from itermask_auto.inference.cli import main as predict_main
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    _, raw, _, fold = trained_ms
    images = tmp_path / "images"
    shutil.copytree(raw / "imagesTs", images)
    (images / "phantom_lesion_000_0001.nii.gz").unlink()
    with caplog.at_level(logging.ERROR):
        rc = predict_main(["-i", str(images), "-o", str(tmp_path / "out"), "-model_dir", str(fold), "--quiet"])
    assert rc in (1, 2)   # 1: the case is listed as failed (others still run); 2: the folder is refused
    assert not (tmp_path / "out" / "phantom_lesion_000_anomaly.nii.gz").exists()
    assert "phantom_lesion_000_0001.nii.gz" in caplog.text and "missing channel" in caplog.text
    plans = Predictor.from_model_folder(fold).plans
    with pytest.raises(InputError, match="expects 3"):
        preprocess_case(sorted(images.glob("*.nii.gz")), plans, "2d")


def test_channel_errors_are_averaged_and_a_single_sequence_lesion_is_found():
    image = np.zeros((3, 2, 2, 2), np.float32)
    image[2] = 1.5                                        # FLAIR differs from its reconstruction by 1.5
    e = squared_error(image, np.zeros_like(image), np.ones((2, 2, 2), bool))
    np.testing.assert_allclose(e, 1.5 ** 2 / 3)            # the mean over channels, not the sum or the max
    # a lesion visible in FLAIR only (channel 2) is still segmented by IterMask2 with oracle reconstructors
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:12, :24, :24]
    brain = ((z - 5.5) / 5) ** 2 + ((y - 11.5) / 10) ** 2 + ((x - 11.5) / 10) ** 2 < 1
    healthy = np.stack([np.cos(x / (3.0 + c)) for c in range(3)]).astype(np.float32)
    healthy += 0.1 * rng.normal(size=healthy.shape).astype(np.float32)   # the oracle restores the scan's noise too
    lesion = ((z - 6) ** 2 + (y - 10) ** 2 + (x - 13) ** 2 <= 6) & brain
    image = healthy.copy()
    image[2][lesion] += 2.5

    def reconstruct(mask, needed=None):
        return healthy + 0.05 * rng.normal(size=healthy.shape).astype(np.float32)

    def first(mask, needed=None):
        return healthy + 0.4 * rng.normal(size=healthy.shape).astype(np.float32)
    healthy_err = squared_error(healthy, reconstruct(brain), brain)[brain]
    tau = float(np.percentile(healthy_err, 80))
    res = itermask2(reconstruct, first, image, brain, InferencePlan(max_shrink_passes=8), tau)
    dice = 2 * np.sum(res.final_mask & lesion) / (res.final_mask.sum() + lesion.sum())
    assert dice > 0.8, dice
