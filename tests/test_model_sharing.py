"""itermask_export_model / itermask_install_model: another site predicts with no retraining, byte for byte."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

trainer_fixtures = pytest.importorskip("trainer_fixtures")

from itermask_auto.dataset_conversion.phantom import make_phantom  # noqa: E402
from itermask_auto.model_sharing.cli import export_main, install_main  # noqa: E402
from itermask_auto.training.api import run_training  # noqa: E402

OUTPUTS = ("{}_anomaly.nii.gz", "{}_seg.nii.gz")
TIMING_AND_PATHS = ("seconds", "model_folder", "input_files")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    mp = pytest.MonkeyPatch()
    trainer_fixtures.set_fresh_roots(mp, root)
    dataset, _ = trainer_fixtures.make_cheap_phantom_dataset(root, n_cases=4)
    fold = run_training(dataset, "3d", 0, epochs=1, iterations=2, num_threads=1)
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    import SimpleITK as sitk
    phantom = make_phantom(7, size=(26, 28, 24), spacing=(2.0, 2.0, 2.0), skull=False, n_lesions=1)
    sitk.WriteImage(phantom.image, str(images / "case_0000.nii.gz"))
    sitk.WriteImage(phantom.brain_mask, str(masks / "case.nii.gz"))
    zip_path = root / "model.zip"
    assert export_main(["-d", dataset, "-o", str(zip_path)]) == 0
    yield root, dataset, fold, images, zip_path
    mp.undo()


def _predict(images: Path, out: Path, dataset: str) -> int:
    from itermask_auto.inference.cli import main as predict_main
    return predict_main(["-i", str(images), "-o", str(out), "-d", dataset, "-masks", str(images.parent / "masks"),
                         "--quiet"])


def test_install_into_fresh_results_predicts_identical_outputs(exported, tmp_path, monkeypatch):
    root, dataset, fold, images, zip_path = exported
    with zipfile.ZipFile(zip_path) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("itermask_model.json"))
        card = json.loads(z.read(f"{dataset}/itermask3d__itermaskPlans__3d/fold_0/model_card.json"))
    rel = f"{dataset}/itermask3d__itermaskPlans__3d/fold_0"
    for f in ("plans.json", "splits.json", "checkpoint_final.pth", "calibration.json", "MODEL_CARD.md"):
        assert f"{rel}/{f}" in names, f
    assert f"{rel}/checkpoint_latest.pth" not in names and manifest["format_version"] == 1
    assert card["method"] == "itermask3d" and card["training_data"]["training_cases"] == 3
    assert card["calibration"]["alpha"] == 0.01 and card["recipe"]["stages"]["reconstruction"]["epochs"] == 1
    assert "anomaly_map" not in card["calibration"]    # a key of the methods with several maps only (sadm)

    assert _predict(images, tmp_path / "here", dataset) == 0
    fresh = tmp_path / "fresh_results"
    fresh.mkdir()
    monkeypatch.setenv("ITERMASK_results", str(fresh))
    monkeypatch.setenv("ITERMASK_preprocessed", str(tmp_path / "no_preprocessed"))  # another site: none
    assert install_main([str(zip_path)]) == 0
    assert (fresh / rel / "checkpoint_final.pth").is_file()
    assert _predict(images, tmp_path / "there", dataset) == 0
    for pattern in OUTPUTS:
        a, b = (tmp_path / d / pattern.format("case") for d in ("here", "there"))
        assert a.read_bytes() == b.read_bytes(), pattern
    here, there = (json.loads((tmp_path / d / "case.json").read_text()) for d in ("here", "there"))
    for key in TIMING_AND_PATHS:
        here.pop(key, None), there.pop(key, None)
    assert here == there
    assert install_main([str(zip_path)]) == 0       # the same model again: nothing to do


def test_install_refuses_damaged_newer_or_conflicting(exported, tmp_path, monkeypatch, capsys):
    root, dataset, fold, images, zip_path = exported
    monkeypatch.setenv("ITERMASK_results", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    capsys.readouterr()

    def refused(path: Path, *extra: str) -> str:
        assert install_main([str(path), *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("itermask_install_model: error:") and "\n" not in err, err
        return err

    corrupt = tmp_path / "corrupt.zip"
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    corrupt.write_bytes(bytes(data))
    assert "damaged" in refused(corrupt) or "not a readable zip" in refused(corrupt)
    assert "not a readable zip" in refused(_write(tmp_path / "text.zip", b"hello"))

    newer = tmp_path / "newer.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            payload = src.read(item)
            if item.filename == "itermask_model.json":
                manifest = json.loads(payload)
                manifest["format_version"] = 99
                payload = json.dumps(manifest).encode()
            dst.writestr(item, payload)
    assert "newer" in refused(newer)

    assert install_main([str(zip_path)]) == 0
    installed = tmp_path / "results" / dataset / "itermask3d__itermaskPlans__3d" / "fold_0" / "calibration.json"
    installed.write_text(installed.read_text().replace('"alpha": 0.01', '"alpha": 0.02'))
    assert "different model" in refused(zip_path)
    assert installed.read_text().count('"alpha": 0.02') == 1          # nothing overwritten
    assert install_main([str(zip_path), "--overwrite"]) == 0
    assert '"alpha": 0.01' in installed.read_text()
    (tmp_path / "results" / dataset.replace("TrainPhantom", "Other")).mkdir()
    assert "already uses" in refused(zip_path)
    assert not list((tmp_path / "results").glob(".install-*"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
