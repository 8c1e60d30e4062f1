"""Issue 18: what a new user hit with itermask_predict / itermask_evaluate, one test (or a few) per point:
exit codes, misaligned labels, concurrent runs and --continue, input formats (.nii, .mha, .nrrd, DICOM),
Ctrl-C and devices, inputs unlike the training data, the per-pass progress display, --help.

Everything runs on a tiny model trained for one iteration on the project's phantoms (tests/trainer_fixtures.py);
the bad-input cases that belong to the issue-7 suite are in test_bad_input.py."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")
trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import make_phantom  # noqa: E402
from itermask_auto.evaluation.cli import main as evaluate_main  # noqa: E402
from itermask_auto.inference.cli import main as predict_main  # noqa: E402
from itermask_auto.inference.predict_folder import predict_folder  # noqa: E402

NIFTI = ".nii.gz"
SIZE, SPACING = (26, 28, 24), (2.0, 2.1, 2.2)
ROTATED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # in-plane rotation: the header must survive


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_reports_model")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_roots(mp, root)
    dataset, _ = trainer_fixtures.make_cheap_phantom_dataset(root, n_cases=4)
    from itermask_auto.training.api import run_training
    fold_dir = run_training(dataset, "3d", fold=0, device="cpu", epochs=1, iterations=1, run_calibration=False,
                            num_threads=1)
    mp.undo()
    torch.set_num_threads(1)
    yield root, Path(fold_dir)


@pytest.fixture
def roots(model, monkeypatch):
    trainer_fixtures.set_roots(monkeypatch, model[0])
    return model


def phantom(seed: int, spacing=SPACING, direction=None, n_lesions: int = 0, size=SIZE):
    return make_phantom(seed, size=size, spacing=spacing, direction=direction, skull=False, n_lesions=n_lesions)


def write_case(images: Path, masks: Path, case: str, seed: int, ending: str = NIFTI, **kw) -> sitk.Image:
    """CASE_0000<ending> in images/, its brain mask CASE.nii.gz in masks/ (given: no skull-stripper runs)."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    ph = phantom(seed, **kw)
    sitk.WriteImage(ph.image, str(images / f"{case}_0000{ending}"))
    sitk.WriteImage(ph.brain_mask, str(masks / f"{case}{NIFTI}"))
    return ph.image


def predict(fold_dir: Path, images: Path, out: Path, masks: Path, *extra: str) -> int:
    return predict_main(["-i", str(images), "-o", str(out), "-model_dir", str(fold_dir), "-masks", str(masks),
                         *extra])


def errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def summary_of(out: Path) -> Dict:
    return json.loads((out / "predictions.json").read_text())


# ---- 1. exit codes tell the truth ------------------------------------------------------------------------------
def test_output_folder_inside_the_input_folder_is_no_case(roots, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    _, fold_dir = roots
    images, masks = tmp_path / "in", tmp_path / "masks"
    write_case(images, masks, "case", 1)
    rc = predict(fold_dir, images, images / "preds", masks)
    assert rc == 0, errors(caplog)
    assert summary_of(images / "preds")["failures"] == {}
    assert not [r for r in caplog.records if "preds" in r.getMessage() and r.levelno >= logging.WARNING]
    # no training fingerprint anywhere: one info line says the inputs are not compared with the training data
    assert len([r for r in caplog.records if "dataset_fingerprint.json" in r.getMessage()]) == 1


def test_output_folder_is_the_input_folder_and_continue(roots, tmp_path, caplog):
    _, fold_dir = roots
    images, masks = tmp_path / "in", tmp_path / "masks"
    write_case(images, masks, "case", 1)
    assert predict(fold_dir, images, images, masks, "--quiet") == 0, errors(caplog)
    caplog.clear()
    assert predict(fold_dir, images, images, masks, "--quiet", "--continue") == 0, errors(caplog)
    assert summary_of(images)["failures"] == {} and [c["case"] for c in summary_of(images)["cases"]] == ["case"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "the run's own outputs are silent"


# ---- 2. evaluation: the best global threshold is no upper bound ------------------------------------------------
def _hand_made_case(pred: Path, labels: Path, case: str, background: float, lesion: float) -> None:
    """A case whose segmentation is exactly its label, with its own map scale (as per-subject tau makes it)."""
    label = np.zeros((12, 14, 12), np.uint8)
    label[4:8, 5:9, 4:8] = 1
    amap = np.where(label > 0, lesion, background).astype(np.float32)
    amap[0] = 0  # outside the brain
    for array, name in ((amap, f"{case}_anomaly{NIFTI}"), (label, f"{case}_seg{NIFTI}")):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(image, str(pred / name))
    image = sitk.GetImageFromArray(label)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(labels / f"{case}{NIFTI}"))
    (pred / f"{case}.json").write_text(json.dumps({"case": case, "volume_score": lesion, "anomalous": True}))


def test_best_global_threshold_is_not_called_an_upper_bound(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pred, labels = tmp_path / "pred", tmp_path / "labels"
    pred.mkdir()
    labels.mkdir()
    _hand_made_case(pred, labels, "a", background=1.0, lesion=2.0)
    _hand_made_case(pred, labels, "b", background=0.2, lesion=0.5)  # b's lesion is below a's normal tissue
    assert evaluate_main(["-pred", str(pred), "-ref", str(labels)]) == 0
    summary = json.loads((pred / "summary.json").read_text())
    best = summary["best_global_threshold_on_labels"]
    assert summary["segmentation"]["pooled_dice"] == 1.0 and best["dice"] < 1.0  # per-subject beats global
    everything = (pred / "summary.json").read_text() + (pred / "qc" / "index.html").read_text() + caplog.text
    assert "upper bound" not in everything.replace("not an upper bound", "").lower()
    assert "upper_bound" not in everything
    assert "best single global threshold on these labels" in (pred / "qc" / "index.html").read_text()


# ---- 3. concurrent runs into one folder; --continue checks the input -------------------------------------------
def test_two_runs_into_one_folder_are_both_listed(roots, tmp_path):
    """Each run's summary used to list only its own cases: the last finisher's two of four."""
    _, fold_dir = roots
    masks, out = tmp_path / "masks", tmp_path / "out"
    for part, seeds in (("a", (1, 2)), ("b", (3, 4))):
        for seed in seeds:
            write_case(tmp_path / part, masks, f"{part}{seed}", seed)
    for part in ("a", "b"):
        predict_folder(tmp_path / part, out, model_dir=fold_dir, masks_dir=masks, progress=False)
    summary = summary_of(out)
    assert [c["case"] for c in summary["cases"]] == ["a1", "a2", "b3", "b4"] and summary["n_cases"] == 4


def test_continue_redoes_a_case_whose_input_changed(roots, tmp_path, caplog):
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    write_case(images, masks, "same", 1)
    write_case(images, masks, "changed", 2)
    assert predict(fold_dir, images, out, masks, "--quiet") == 0
    before = {c: json.loads((out / f"{c}.json").read_text()) for c in ("same", "changed")}
    mtime = (out / "same.json").stat().st_mtime_ns
    write_case(images, masks, "changed", 3)  # another scan under the same name
    assert predict(fold_dir, images, out, masks, "--quiet", "--continue") == 0
    after = {c: json.loads((out / f"{c}.json").read_text()) for c in ("same", "changed")}
    assert (out / "same.json").stat().st_mtime_ns == mtime and after["same"] == before["same"]
    assert after["changed"]["input_sha256"] != before["changed"]["input_sha256"]
    assert any("changed" in m and "input files changed" in m for m in caplog.messages)


# ---- 4. the formats users have ----------------------------------------------------------------------------------
def write_dicom_series(image: sitk.Image, folder: Path, description: str, uid: str, prefix: str = "IM") -> None:
    """One file per slice with the tags a series reader needs (SimpleITK's DicomSeriesFromArray recipe)."""
    folder.mkdir(parents=True, exist_ok=True)
    scaled = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkInt16)
    d = scaled.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    tags = {"0008|0060": "MR", "0008|0021": "20260101", "0008|0031": "120000", "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": uid,
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))}
    for k in range(scaled.GetDepth()):
        sl = scaled[:, :, k]
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in scaled.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0018|0050", f"{scaled.GetSpacing()[2]:.6f}")
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(sl)


def read_series(folder: Path, uid: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def _mask_on(image: sitk.Image, seed: int) -> sitk.Image:
    mask = sitk.Image(phantom(seed).brain_mask)
    mask.CopyInformation(image)
    return mask


def assert_same_geometry(written: sitk.Image, reference: sitk.Image) -> None:
    assert written.GetSize() == reference.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-7)


def test_nii_mha_nrrd_and_dicom_inputs(roots, tmp_path, caplog):
    """Each format is read whatever the model's file ending (.nii.gz); outputs are NIfTI on the input's exact grid;
    what cannot be read is one failure naming the file (or DICOM folder) and the reason."""
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs = {"plain": write_case(images, masks, "plain", 1, ".nii"),
              "meta": write_case(images, masks, "meta", 2, ".mha", direction=ROTATED),
              "nrrd": write_case(images, masks, "nrrd", 3, ".nrrd")}
    write_dicom_series(phantom(4).image, images / "dicom", "T1 MPRAGE", "1.2.3.4.1")
    write_dicom_series(phantom(4).image, images / "dicom", "localizer", "1.2.3.4.2", prefix="LOC")
    inputs["dicom"] = read_series(images / "dicom", "1.2.3.4.1")
    sitk.WriteImage(_mask_on(inputs["dicom"], 4), str(masks / f"dicom{NIFTI}"))
    write_dicom_series(phantom(5).image, images / "no_t1", "FLAIR", "1.2.3.5.1")
    write_dicom_series(phantom(5).image, images / "no_t1", "DWI", "1.2.3.5.2", prefix="DW")
    (images / "broken_0000.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nElementDataFile = LOCAL\n\x00\x01")
    rc = predict(fold_dir, images, out, masks, "--quiet")
    failures = summary_of(out)["failures"]
    assert rc == 1 and set(failures) == {"broken", "no_t1"}, failures
    assert "broken_0000.mha" in failures["broken"] and "cannot be read" in failures["broken"]
    assert "no_t1" in failures["no_t1"] and "'FLAIR'" in failures["no_t1"] and "-dicom_channels" in failures["no_t1"]
    for case, reference in inputs.items():
        for kind in ("anomaly", "seg"):
            assert_same_geometry(sitk.ReadImage(str(out / f"{case}_{kind}{NIFTI}")), reference)
    assert "T1 MPRAGE" in json.loads((out / "dicom.json").read_text())["input_files"][0]


def test_output_in_the_input_format_on_request(roots, tmp_path):
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    reference = write_case(images, masks, "meta", 2, ".mha", direction=ROTATED)
    assert predict(fold_dir, images, out, masks, "--quiet", "--output_format", "input") == 0
    for kind in ("anomaly", "seg"):
        assert_same_geometry(sitk.ReadImage(str(out / f"meta_{kind}.mha")), reference)
    files = json.loads((out / "meta.json").read_text())["files"]
    assert files == {"anomaly": "meta_anomaly.mha", "seg": "meta_seg.mha"}
    (tmp_path / "labels").mkdir()
    shutil.copyfile(out / "meta_seg.mha", tmp_path / "labels" / "meta.mha")  # evaluation reads .mha as well
    assert evaluate_main(["-pred", str(out), "-ref", str(tmp_path / "labels"), "--no_report"]) == 0


# ---- 5. interrupts and devices ---------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_and_exit_130(roots, tmp_path, monkeypatch, caplog, capsys):
    from itermask_auto.inference.predictor import Predictor
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    for i, case in enumerate(("c1", "c2", "c3")):
        write_case(images, masks, case, i + 1)
    real, calls = Predictor.infer, []

    def interrupted_on_second_case(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(Predictor, "infer", interrupted_on_second_case)
    try:
        rc = predict(fold_dir, images, out, masks, "--quiet")
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped itermask_predict")
    assert rc == 130
    assert errors(caplog) == ["interrupted after 1 of 3 cases; rerun with --continue"]
    assert "Traceback" not in capsys.readouterr().err
    assert (out / "c1.json").is_file() and not list(out.glob("c2*")) and not list(out.glob(".*tmp*"))
    monkeypatch.setattr(Predictor, "infer", real)
    assert predict(fold_dir, images, out, masks, "--quiet", "--continue") == 0
    assert [c["case"] for c in summary_of(out)["cases"]] == ["c1", "c2", "c3"]


def _text(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")  # progress bars may hold non-ASCII characters


def test_ctrl_c_with_worker_processes(roots, tmp_path):
    """A real SIGINT to the whole process group (what Ctrl-C sends) of itermask_predict -npp 2, as soon as the
    first case is finished: one line, exit 130, no traceback from the main process or the workers."""
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    for i in range(8):  # far more than can finish between the first CASE.json and the signal
        write_case(images, masks, f"c{i}", i + 1)
    log = tmp_path / "predict.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "itermask_auto.inference.cli", "-i", str(images), "-o",
                                 str(out), "-model_dir", str(fold_dir), "-masks", str(masks), "-npp", "2"],
                                stdout=f, stderr=f, start_new_session=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 240
    while not [p for p in out.glob("c*.json")]:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no case finished (rc {proc.returncode}):\n{_text(log)[-3000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(120)
    text = _text(log)
    assert rc == 130 and "Traceback" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and re.search(r"interrupted after \d of 8 cases; rerun with --continue$", lines[0]), text


def test_cuda_without_gpu_says_so_and_leaves_no_folder(roots, tmp_path, monkeypatch, caplog):
    _, fold_dir = roots
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    write_case(images, masks, "c1", 1)
    assert predict(fold_dir, images, out, masks, "--quiet", "-device", "cuda") == 2
    assert errors(caplog) == ["device 'cuda' requested but torch sees no CUDA GPU (use -device cpu)"]
    assert not out.exists()


# ---- 6. inputs unlike the training data are flagged -------------------------------------------------------------
def _fold_with_fingerprint(fold_dir: Path, tmp_path: Path) -> Path:
    """A copy of the fold with dataset_fingerprint.json of three phantoms like the in-distribution inputs."""
    from itermask_auto.experiment_planning.fingerprint import aggregate, case_fingerprint
    train, masks, cache = tmp_path / "train", tmp_path / "train_masks", tmp_path / "cache"
    cache.mkdir()
    cases = []
    for seed in (11, 12, 13):
        write_case(train, masks, f"t{seed}", seed)
        cases.append(case_fingerprint(f"t{seed}", [train / f"t{seed}_0000{NIFTI}"], masks / f"t{seed}{NIFTI}", cache))
    fold = tmp_path / "fold_0"
    shutil.copytree(fold_dir, fold)
    (fold / "dataset_fingerprint.json").write_text(json.dumps({"cases": cases, "aggregate": aggregate(cases)}))
    return fold


def test_input_unlike_the_training_data_is_flagged(roots, tmp_path, caplog):
    _, fold_dir = roots
    fold = _fold_with_fingerprint(fold_dir, tmp_path)
    images, masks, out, labels = tmp_path / "in", tmp_path / "masks", tmp_path / "out", tmp_path / "labels"
    write_case(images, masks, "alike", 1)
    write_case(images, masks, "coarse", 2, spacing=(3.0, 3.15, 3.3), size=(18, 19, 16))  # same view, coarser
    assert predict(fold, images, out, masks, "--quiet") == 0
    alike, coarse = (json.loads((out / f"{c}.json").read_text())["input_check"] for c in ("alike", "coarse"))
    assert alike["in_training_range"] is True and alike["warnings"] == []
    assert coarse["in_training_range"] is False and any("voxel spacing" in w for w in coarse["warnings"])
    assert coarse["fingerprint"].endswith("fold_0/dataset_fingerprint.json")
    lines = [m for m in caplog.messages if "training data" in m]
    assert len(lines) == 1 and lines[0].startswith("coarse: outside the training data (voxel spacing")
    table = {c["case"]: c["in_training_range"] for c in summary_of(out)["cases"]}
    assert table == {"alike": True, "coarse": False}
    labels.mkdir()
    for case in ("alike", "coarse"):
        empty = sitk.Image(sitk.ReadImage(str(out / f"{case}_seg{NIFTI}")))
        sitk.WriteImage(empty * 0, str(labels / f"{case}{NIFTI}"))
    assert evaluate_main(["-pred", str(out), "-ref", str(labels)]) == 0
    report = (out / "qc" / "index.html").read_text()
    assert report.count("input outside the training data") == 1
    assert re.search(r"id='coarse'.*input outside the training data: voxel spacing", report)


@pytest.mark.shared_data
def test_real_ixi_scan_is_flagged_against_phantom_training_data(tmp_path):
    """The issue's case: a healthy IXI T1 scan against the fingerprint of phantom heads (the demo's data)."""
    from conftest import shared_data_or_skip

    from itermask_auto.experiment_planning.fingerprint import case_fingerprint
    from itermask_auto.inference.input_check import TrainingRanges
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    ixi = shared_data_or_skip("ixi_t1_2mm")
    image = sorted((ixi / "images").glob(f"*{NIFTI}"))[0]
    mask = ixi / "brainmasks" / image.name.replace("_T1", "_brainmask")
    cache = tmp_path / "cache"
    cache.mkdir()
    cases = []
    for seed in (1, 2, 3):  # demo-sized phantom heads
        ph = make_phantom(seed, size=(64, 76, 64), spacing=(2.0, 2.0, 2.0), skull=False, anatomy_scale=0.8)
        sitk.WriteImage(ph.image, str(tmp_path / f"p{seed}{NIFTI}"))
        sitk.WriteImage(ph.brain_mask, str(tmp_path / f"m{seed}{NIFTI}"))
        cases.append(case_fingerprint(f"p{seed}", [tmp_path / f"p{seed}{NIFTI}"], tmp_path / f"m{seed}{NIFTI}", cache))
    ranges = TrainingRanges({"cases": cases}, tmp_path / "fingerprint.json")
    data, _, brain, props = preprocess_case([image], trainer_fixtures.make_plans(), "3d", mask)
    reasons = ranges.check(props, data, brain)
    assert any("brain volume" in r for r in reasons) and any("intensity" in r for r in reasons), reasons


# ---- 7. progress where the wait is --------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "not_a_terminal"])
def test_pass_counter_only_on_a_terminal(roots, tmp_path, monkeypatch, tty):
    _, fold_dir = roots
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    write_case(images, masks, "c1", 1)
    stream = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    predict_folder(images, out, model_dir=fold_dir, masks_dir=masks, progress=True)
    drawn = stream.getvalue()
    if tty:
        counts = [int(n) for n in re.findall(r"c1: (\d+) network passes", drawn)]
        passes = json.loads((out / "c1.json").read_text())["network_passes"]
        assert passes >= 2 and counts and max(counts) == passes and sorted(set(counts)) == list(range(passes + 1))
    else:  # (a warning would still reach stderr: only the bars must stay away)
        assert "itermask_predict:" not in drawn and "network passes" not in drawn, drawn


# ---- 8. --help -------------------------------------------------------------------------------------------------
def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width


def test_help_states_formats_exit_codes_defaults_and_choices(capsys):
    from itermask_auto.evaluation.synthetic import main as synthetic_main
    from itermask_auto.experiment_planning.cli import main as plan_main
    predict = _help(predict_main, capsys)
    for words in (".nii", ".mha", ".nrrd", "DICOM", "1 some cases failed", "2 set-up error", "130 interrupted",
                  "(default: checkpoint_final.pth)", "-device {cpu,cuda}", "{ae,itermask2,itermask3d,oneshot}"):
        assert words in predict, words
    evaluate, plan = _help(evaluate_main, capsys), _help(plan_main, capsys)
    assert "exit codes" in evaluate and "exit codes" in plan
    synthetic = _help(synthetic_main, capsys)
    for option in (r"--kinds \S+ \[\S+ \.\.\.\]", r"--seed SEED", r"--n_lesions MIN MAX"):
        assert re.search(option + r" (?!-)\S", synthetic), f"{option} has no help text"
    assert "(default: 0)" in synthetic and "exit codes" in synthetic
    for text in (predict, evaluate, plan, synthetic):
        assert "`" not in text


def test_unknown_method_fails_at_parsing_with_the_registered_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        predict_main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "-d", "990", "-m", "foo"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "invalid choice: 'foo'" in err and "itermask3d" in err
    assert "itermask_train" not in err and not (tmp_path / "out").exists()
