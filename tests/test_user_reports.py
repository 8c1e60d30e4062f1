"""Issue 18: what a new user hit with itermask_predict / itermask_evaluate, one test (or a few) per point: exit
codes and non-inputs, the best global threshold, concurrent runs and --continue, Ctrl-C and devices, the per-pass
progress display, --help. Input formats and the comparison with the training data: test_user_inputs.py; the
bad-input cases of the issue-7 suite: test_bad_input.py."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")
trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.evaluation.cli import main as evaluate_main  # noqa: E402
from itermask_auto.inference.cli import main as predict_main  # noqa: E402
from itermask_auto.inference.predict_folder import predict_folder  # noqa: E402
from itermask_auto.methods.registry import METHODS  # noqa: E402
import user_report_fixtures  # noqa: E402
from user_report_fixtures import NIFTI, errors, predict, summary_of, write_case  # noqa: E402

model, roots = user_report_fixtures.model, user_report_fixtures.roots   # the shared fixtures


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


def _default_sigint() -> None:
    """The child meets Ctrl-C as a user's terminal delivers it: SIGINT neither ignored nor blocked. A disposition or
    mask inherited from the test process (a run started in the background of a non-interactive shell ignores
    SIGINT, POSIX; in the full suite under `make test` the child once ignored it) would otherwise be the test's."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
                                stdout=f, stderr=f, start_new_session=True, preexec_fn=_default_sigint,
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


def test_workers_ignore_ctrl_c_from_their_start():
    """Ctrl-C can land while a worker still imports torch, before its initializer runs (the full suite on a loaded
    machine once showed a worker's KeyboardInterrupt traceback): workers started by _worker_pool ignore SIGINT
    from exec on, survive it, and still work."""
    import multiprocessing

    from itermask_auto.inference.predict_folder import _worker_pool
    pool = _worker_pool(2, multiprocessing.get_context("spawn"))
    try:
        workers = list(pool._processes.values())
        assert len(workers) == 2
        for worker in workers:   # right after start: still inside Python's start-up / imports
            os.kill(worker.pid, signal.SIGINT)
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
    finally:
        pool.shutdown()


def test_cuda_without_gpu_says_so_and_leaves_no_folder(roots, tmp_path, monkeypatch, caplog):
    _, fold_dir = roots
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    write_case(images, masks, "c1", 1)
    assert predict(fold_dir, images, out, masks, "--quiet", "-device", "cuda") == 2
    assert errors(caplog) == ["device 'cuda' requested but torch sees no CUDA GPU (use -device cpu)"]
    assert not out.exists()


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
                  "(default: checkpoint_final.pth)", "-device {cpu,cuda,cuda:N[,M...]}",
                  "{" + ",".join(sorted(METHODS)) + "}"):
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
