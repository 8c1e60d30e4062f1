"""itermask_train on tiny phantoms (CPU, num_workers=0): learning, resuming, outputs, errors, no label access."""
from __future__ import annotations

import builtins
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.imageio.errors import InputError
from itermask_auto.methods.registry import get_method
from itermask_auto.training import api
from itermask_auto.training.cli import main as cli_main
from itermask_auto.training.data import CaseStore, PatchSampler, crop_padded
from itermask_auto.training.checkpoint import load_checkpoint, load_trained_model, model_folder
from itermask_auto.training.splits import load_or_create_splits, make_splits
from itermask_auto.training.trainer import Trainer
from trainer_fixtures import make_preprocessed_phantom_dataset

FAST = dict(num_threads=1, run_calibration=False)  # 1 thread: robust on a shared 2-core machine


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_phantoms")
    name, plans = make_preprocessed_phantom_dataset(root, n_cases=6, patch=(32, 32, 32), features=(8, 16, 32))
    return root, name, plans


@pytest.fixture
def roots(phantom_root, tmp_path, monkeypatch):
    root, name, plans = phantom_root
    monkeypatch.setenv("ITERMASK_raw", str(root / "raw"))
    monkeypatch.setenv("ITERMASK_preprocessed", str(root / "preprocessed"))
    monkeypatch.setenv("ITERMASK_results", str(tmp_path / "results"))
    return root, name, plans


def test_training_lowers_loss_and_writes_model_folder(roots):
    root, name, plans = roots
    fold_dir = api.run_training(990, "3d", 0, epochs=3, iterations=6, **FAST)
    assert fold_dir == root.parent / fold_dir.relative_to(root.parent)  # under the results root
    assert fold_dir.parts[-3:] == (name, "itermask3d__itermaskPlans__3d", "fold_0")
    for f in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth", "progress.png",
              "training_log.txt", "plans.json", "splits.json"):
        assert (fold_dir / f).is_file() and (fold_dir / f).stat().st_size > 0, f
    assert "epoch 3/3" in (fold_dir / "training_log.txt").read_text()
    hist = load_checkpoint(fold_dir / "checkpoint_final.pth")["history"]
    assert len(hist["train_loss"]) == 3 and hist["lr"][0] > hist["lr"][-1]
    assert hist["train_loss"][-1] < 0.8 * hist["train_loss"][0], hist["train_loss"]
    assert hist["val_loss"][-1] < hist["val_loss"][0], hist["val_loss"]
    # the fold's split is recorded; the dataset-level split exists and holds this fold
    used = Plans.load(fold_dir / "plans.json")
    assert used.to_dict() == Plans.load(root / "preprocessed" / name / "itermask_plans.json").to_dict()
    split = json.loads((fold_dir / "splits.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"]) and len(split["train"]) + len(split["val"]) == 6

    net, plans2, config, method = load_trained_model(fold_dir)
    assert not net.training and config == "3d" and method == "itermask3d" and plans2.plans_name == "itermaskPlans"
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 32, 32, 32)).shape == (1, 1, 32, 32, 32)
    with pytest.raises(FileNotFoundError):
        load_trained_model(fold_dir, checkpoint="checkpoint_missing.pth")
    used.plans_name = "otherPlans"
    used.save(fold_dir / "plans.json")
    with pytest.raises(InputError, match="another plan"):
        load_trained_model(fold_dir)


def _weights(path: Path):
    return load_checkpoint(path)["network"]


class _Stop(Exception):
    pass


def test_continue_resumes_epoch_optimizer_and_rng(roots, tmp_path, monkeypatch):
    # a 3-epoch run killed after epoch 2 (checkpoint_latest written), then `--c`
    record = Trainer._record

    def record_then_stop(self, *args):
        record(self, *args)
        if self.epoch == 2:
            raise _Stop

    monkeypatch.setattr(Trainer, "_record", record_then_stop)
    with pytest.raises(_Stop):
        api.run_training(990, "3d", 1, epochs=3, iterations=3, **FAST)
    monkeypatch.setattr(Trainer, "_record", record)
    fold_dir = model_folder(roots[1], "itermask3d", "itermaskPlans", "3d", 1)
    assert not (fold_dir / "checkpoint_final.pth").exists()
    saved = load_checkpoint(fold_dir / "checkpoint_latest.pth")
    assert saved["epoch"] == 2

    # loading restores the optimiser exactly (Adam moments and step)
    _, name, plans = roots
    data_folder = Path(roots[0]) / "preprocessed" / name / "itermask_3d"
    split = json.loads((fold_dir / "splits.json").read_text())
    trainer = Trainer(plans, "3d", get_method("itermask3d"), 1, fold_dir, name, data_folder, split["train"],
                      split["val"], torch.device("cpu"), num_epochs=3, iterations=3)
    trainer.load(fold_dir / "checkpoint_latest.pth")
    assert trainer.epoch == 2
    loaded, ref = trainer.optimizer.state_dict()["state"], saved["optimizer"]["state"]
    assert loaded.keys() == ref.keys()
    for k in ref:
        assert torch.equal(loaded[k]["exp_avg"], ref[k]["exp_avg"])
        assert float(loaded[k]["step"]) == float(ref[k]["step"]) == 6

    api.run_training(990, "3d", 1, epochs=3, iterations=3, continue_training=True, **FAST)
    final = load_checkpoint(fold_dir / "checkpoint_final.pth")
    assert final["epoch"] == 3 and len(final["history"]["train_loss"]) == 3  # only epoch 3 ran
    assert final["history"]["train_loss"][:2] == saved["history"]["train_loss"]
    assert all(float(s["step"]) == 9 for s in final["optimizer"]["state"].values())  # 6 restored + 3 new steps

    # stop + --c gives the same network as training straight through (CPU, num_workers=0)
    monkeypatch.setenv("ITERMASK_results", str(tmp_path / "straight"))
    straight_dir = api.run_training(990, "3d", 1, epochs=3, iterations=3, **FAST)
    a, b = _weights(fold_dir / "checkpoint_final.pth"), _weights(straight_dir / "checkpoint_final.pth")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_no_lesion_label_or_raw_file_is_opened(roots, monkeypatch):
    root, name, _ = roots
    raw = str(root / "raw")
    assert any((root / "raw" / name / "labelsTs").iterdir())

    def guard(path):
        if "labelsTs" in str(path) or str(path).startswith(raw):
            raise AssertionError(f"training opened {path}")

    def wrap(fn):
        def guarded(path, *args, **kwargs):
            guard(path)
            return fn(path, *args, **kwargs)
        return guarded

    import nibabel
    import SimpleITK as sitk
    for module, attr in ((builtins, "open"), (io, "open"), (np, "load"), (sitk, "ReadImage"), (nibabel, "load")):
        monkeypatch.setattr(module, attr, wrap(getattr(module, attr)))
    calls = []
    monkeypatch.setattr(api, "calibrate", lambda fold_dir, device, **kw: calls.append((fold_dir, device)))
    fold_dir = api.run_training(990, "3d", 2, epochs=1, iterations=2, num_threads=1)
    assert calls == [(fold_dir, "cpu")]  # calibration is wired after training
    api.run_training(990, "3d", 2, calibrate_only=True, num_threads=1)
    assert len(calls) == 2


def test_2d_configuration_trains(roots):
    fold_dir = api.run_training("TrainPhantom", "2d", "all", epochs=1, iterations=2, **FAST)
    assert fold_dir.name == "fold_all"
    net, _, config, _ = load_trained_model(fold_dir)
    assert config == "2d" and isinstance(net.encoder.stages[0][0].convs[0].conv, torch.nn.Conv2d)


def test_clear_errors(roots, capsys):
    root, name, plans = roots
    with pytest.raises(FileNotFoundError, match="no dataset"):
        api.run_training(123)
    with pytest.raises(ValueError, match="configuration '3d_lowres' is not planned"):
        api.run_training(990, "3d_lowres")
    with pytest.raises(FileNotFoundError, match="train this fold"):
        api.run_training(990, "3d", 4, calibrate_only=True)
    one = root / "preprocessed" / "Dataset991_One"
    (one / "itermask_3d").mkdir(parents=True, exist_ok=True)
    plans.save(one / "itermask_plans.json")
    src = root / "preprocessed" / name / "itermask_3d"
    for f in ("phantom_000.npz", "phantom_000.json"):
        shutil.copy(src / f, one / "itermask_3d" / f)
    with pytest.raises(ValueError, match="at least 2"):
        api.run_training(991)
    (root / "preprocessed" / "Dataset992_Raw").mkdir(exist_ok=True)
    assert cli_main(["-d", "992"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("itermask_train: error:") and "not preprocessed" in err and "\n" not in err
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "--calibrate_only" in capsys.readouterr().out


def test_splits_are_seeded_complete_and_reused(tmp_path):
    cases = [f"c{i}" for i in range(11)]
    splits = make_splits(cases, 5, seed=1)
    assert len(splits) == 5 and splits == make_splits(cases, 5, seed=1)
    assert sorted(c for s in splits for c in s["val"]) == sorted(cases)
    assert all(set(s["train"]) | set(s["val"]) == set(cases) for s in splits)
    assert len(make_splits(cases[:3], 5, seed=1)) == 3
    with pytest.raises(ValueError):
        make_splits(["only"], 5, seed=1)
    first = load_or_create_splits(tmp_path, cases, 5, seed=1)
    again = load_or_create_splits(tmp_path, cases, 5, seed=999)  # reused, not recreated
    assert first == again == splits


def test_sampler_patches_masks_and_consistent_augmentation(roots, monkeypatch):
    root, name, plans = roots
    folder = root / "preprocessed" / name / "itermask_3d"
    cases = sorted(p.stem for p in folder.glob("*.npz"))
    store = CaseStore(folder, cases)
    bg = plans.normalization.background_value
    batch = PatchSampler(store, cases, plans, "3d", "blobs", 2, augment=False, seed=0).next_batch()
    assert batch["image"].shape == batch["hf"].shape == (2, 1, 32, 32, 32) and batch["mask"].dtype == torch.bool
    assert not (batch["mask"] & ~batch["brain"]).any() and batch["mask"].any()
    assert torch.all(batch["image"][:, 0][~batch["brain"]] == bg)
    none = PatchSampler(store, cases, plans, "3d", "none", 2, augment=False, seed=0).next_batch()
    assert not none["mask"].any()
    padded = crop_padded(np.ones((1, 4, 4, 4), np.float32), (0, 0, 0), (4, 4, 4), -3.0)
    assert padded[0, 0, 0, 0] == -3.0 and padded[0, 3, 3, 3] == 1.0

    # make hf a copy of the image (shifted so both pad with their own background): any spatial transform that
    # moved hf differently from the image would break hf == image - bg inside the brain
    for c in cases:
        arr = store.get(c)
        arr.hf[:] = arr.data - bg
    import itermask_auto.training.data as data_module
    monkeypatch.setattr(data_module, "P_ROTATION", 1.0)
    monkeypatch.setattr(data_module, "P_SCALING", 1.0)
    monkeypatch.setattr(data_module, "P_INTENSITY", 0.0)
    aug = PatchSampler(store, cases, plans, "3d", "blobs", 4, augment=True, seed=3).next_batch()
    brain = aug["brain"]
    assert brain.any() and not (aug["mask"] & ~brain).any()
    assert torch.all(aug["image"][:, 0][~brain] == bg)
    assert torch.allclose(aug["hf"][:, 0][brain], aug["image"][:, 0][brain] - bg, atol=1e-4)


def test_worker_loader_yields_batches(roots):
    from itermask_auto.training.data import make_loader
    root, name, plans = roots
    folder = root / "preprocessed" / name / "itermask_3d"
    cases = sorted(p.stem for p in folder.glob("*.npz"))
    sampler = PatchSampler(CaseStore(folder, cases), cases, plans, "3d", "blobs", 2, augment=True, seed=0)
    loader = make_loader(sampler, num_workers=1)
    a, b = next(loader), next(loader)
    assert a["image"].shape == (2, 1, 32, 32, 32) and not torch.equal(a["image"], b["image"])
    del loader


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, None), (True, False, torch.bfloat16),
                                                        (False, True, torch.bfloat16)])
def test_auto_precision_takes_bf16_only_with_native_cpu_bf16(monkeypatch, avx512_bf16, amx, expected):
    """oneDNN reports bf16 'supported' on plain AVX-512 (emulated, 2.3x slower than fp32 there): auto needs the
    CPU's own bf16 instructions."""
    from itermask_auto.training.schedule import CPU_BF16_ENV, autocast_dtype
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)   # the suite pins fp32 (conftest.py); here the CPU's flags
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert autocast_dtype(torch.device("cpu"), "auto") == expected
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16


NATIVE = torch.bfloat16 if torch.backends.mkldnn.is_available() else None   # what a CPU with bf16 gets from auto


@pytest.mark.parametrize("value, with_native_bf16, without", [("0", None, None), ("1", torch.bfloat16, torch.bfloat16),
                                                              ("", NATIVE, None)])
def test_cpu_bf16_environment_override(monkeypatch, value, with_native_bf16, without):
    """ITERMASK_CPU_BF16 decides `auto` on a CPU whatever its flags; empty = the flags; other values refused."""
    from itermask_auto.training.schedule import CPU_BF16_ENV, autocast_dtype
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setenv(CPU_BF16_ENV, value)
    for native, expected in ((True, with_native_bf16), (False, without)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        assert autocast_dtype(torch.device("cpu"), "auto") == expected
        assert autocast_dtype(torch.device("cpu"), "fp32") is None
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="ITERMASK_CPU_BF16='yes'"):
        autocast_dtype(torch.device("cpu"), "auto")


def test_calibrate_only_names_the_keys_in_which_the_dataset_plan_differs(tmp_path, caplog):
    """--calibrate_only reads the fold's plans.json: an edit made in the dataset's plan instead is named, not
    silently ignored (and nothing is said when the two agree)."""
    plans = Plans.load(Path(__file__).parents[1] / "plans" / "Dataset001_IXI_T1" / "itermask_plans.json")
    assert api.warn_plan_drift(plans, tmp_path, "sadm") == []       # no plans.json: calibration reports it
    plans.save(tmp_path / "plans.json")
    assert api.warn_plan_drift(plans, tmp_path, "sadm") == []
    older = json.loads((tmp_path / "plans.json").read_text())
    del older["inference"]["map_median_mm"]                         # written before the key existed
    (tmp_path / "plans.json").write_text(json.dumps(older))
    assert api.warn_plan_drift(plans, tmp_path, "sadm") == []       # its default is the dataset plan's value
    plans.inference.tau_scale = "hf_median_error"
    plans.method_plans["sadm"]["anomaly_map"] = "sum"
    plans.method_plans["constrained"]["alpha_drop"] = 0.5   # another method's plan: not this fold's business
    plans.training.num_epochs += 1     # a training key: calibration does not read it
    with caplog.at_level("WARNING"):
        keys = api.warn_plan_drift(plans, tmp_path, "sadm")
    assert keys == ["inference.tau_scale", "method_plans.sadm.anomaly_map"]
    assert "inference.tau_scale, method_plans.sadm.anomaly_map" in caplog.text and "fold's copy" in caplog.text
