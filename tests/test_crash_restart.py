"""Issue 7 crash tests: SIGKILL the real itermask_train / itermask_predict part-way (subprocess, tiny phantoms), then
restart with --c / --continue: the run finishes, nothing is lost or done twice, and no file is half-written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")
trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import make_phantom  # noqa: E402

EPOCHS, ITERATIONS = 4, 2
N_CASES = 5
TIMEOUT_S = 240


def _env(root: Path) -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({f"ITERMASK_{sub}": str(root / sub) for sub in ("raw", "preprocessed", "results")})
    return env


def _run(module: str, args: List[str], root: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=_env(root), stdout=f, stderr=f,
                                cwd=root)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path) -> None:
    """SIGKILL `proc` as soon as `ready()`; fail if it ends (or times out) first."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before it could be killed:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the first output")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _finish(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"restart did not finish:\n{log.read_text()[-2000:]}")


def _temporaries(folder: Path) -> List[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    dataset, _ = trainer_fixtures.make_cheap_phantom_dataset(root, n_cases=4)
    return root, dataset


@pytest.fixture(scope="module")
def crashed_training(data):
    """itermask_train killed after its first checkpoint, then continued with --c."""
    root, dataset = data
    fold = root / "results" / dataset / "itermask3d__itermaskPlans__3d" / "fold_0"
    log = root / "train.log"
    args = ["-d", dataset, "-c", "3d", "-f", "0", "--epochs", str(EPOCHS), "--iterations", str(ITERATIONS),
            "--threads", "1"]
    proc = _run("itermask_auto.training.cli", args, root, log)
    _kill_when(proc, lambda: (fold / "checkpoint_latest.pth").is_file(), log)
    after_kill = {p.name: torch.load(p, weights_only=True)["epoch"] for p in fold.glob("checkpoint_*.pth")}
    temporaries = _temporaries(fold)
    rc = _finish(_run("itermask_auto.training.cli", args + ["--c"], root, log), log)
    return fold, after_kill, temporaries, rc, log


def test_killed_training_continues_to_the_same_model(crashed_training, data, tmp_path, monkeypatch):
    fold, after_kill, temporaries, rc, log = crashed_training
    # after the kill: only whole checkpoints under their final names, none of them final
    assert "checkpoint_latest.pth" in after_kill and "checkpoint_final.pth" not in after_kill
    assert all(1 <= e < EPOCHS for e in after_kill.values()), after_kill
    assert all(p.name.startswith(".") for p in temporaries)  # never under an output name
    # after --c: finished, every epoch once, every checkpoint loads, leftovers of the killed run removed
    assert rc == 0, log.read_text()[-2000:]
    assert "continuing from" in log.read_text()
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert final["epoch"] == EPOCHS and final["history"]["epoch"] == list(range(EPOCHS))
    for p in fold.glob("*.pth"):
        assert torch.load(p, weights_only=True)["epoch"] >= 1
    assert (fold / "calibration.json").is_file() and _temporaries(fold) == []
    # nothing was lost: the same weights as one uninterrupted run (CPU, 1 thread, seeded, RNG in checkpoints)
    root, dataset = data
    for sub in ("raw", "preprocessed"):
        monkeypatch.setenv(f"ITERMASK_{sub}", str(root / sub))
    monkeypatch.setenv("ITERMASK_results", str(tmp_path))
    from itermask_auto.training.api import run_training
    ref_fold = run_training(dataset, "3d", 0, epochs=EPOCHS, iterations=ITERATIONS, run_calibration=False,
                            num_threads=1)
    reference = torch.load(ref_fold / "checkpoint_final.pth", weights_only=True)
    for key, value in reference["network"].items():
        assert torch.equal(value, final["network"][key]), key
    assert reference["history"]["train_loss"] == final["history"]["train_loss"]


def test_killed_prediction_continues_without_redoing_cases(crashed_training, tmp_path):
    fold = crashed_training[0]
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    for i in range(N_CASES):
        ph = make_phantom(90 + i, size=(26, 28, 24), spacing=(2.0, 2.1, 2.2), skull=False, n_lesions=i % 2)
        sitk.WriteImage(ph.image, str(images / f"case{i}_0000.nii.gz"))
        sitk.WriteImage(ph.brain_mask, str(masks / f"case{i}.nii.gz"))
    log = tmp_path / "predict.log"
    args = ["-i", str(images), "-o", str(out), "-model_dir", str(fold), "-masks", str(masks), "--quiet"]
    proc = _run("itermask_auto.inference.cli", args, tmp_path, log)
    _kill_when(proc, lambda: any(out.glob("case*.json")), log)

    done = sorted(p.stem for p in out.glob("case*.json"))
    assert 1 <= len(done) < N_CASES and not (out / "predictions.json").exists()
    stamps = {}
    for case in done:  # a case with CASE.json is whole: every file reads
        for name in (f"{case}_anomaly.nii.gz", f"{case}_seg.nii.gz", f"{case}.json"):
            stamps[name] = (out / name).stat().st_mtime_ns
        assert sitk.ReadImage(str(out / f"{case}_anomaly.nii.gz")).GetSize() == (26, 28, 24)
        json.loads((out / f"{case}.json").read_text())
    assert all(p.name.startswith(".") for p in _temporaries(out))

    assert _finish(_run("itermask_auto.inference.cli", args + ["--continue"], tmp_path, log), log) == 0
    summary = json.loads((out / "predictions.json").read_text())
    assert sorted(c["case"] for c in summary["cases"]) == [f"case{i}" for i in range(N_CASES)]
    assert summary["failures"] == {}
    for name, stamp in stamps.items():  # predicted exactly once: the killed run's cases were not redone
        assert (out / name).stat().st_mtime_ns == stamp, name
    assert _temporaries(out) == []
    # a case finished before the kill and one finished after it equal a fresh in-process prediction
    from itermask_auto.inference.predictor import Predictor
    predictor = Predictor.from_model_folder(fold)
    for case in (done[0], f"case{N_CASES - 1}"):
        fresh = predictor.predict_files([images / f"{case}_0000.nii.gz"], masks / f"{case}.nii.gz")
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}_anomaly.nii.gz")))
        assert np.array_equal(written, fresh.anomaly), case
