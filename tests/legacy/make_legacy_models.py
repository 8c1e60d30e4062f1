"""Makes tests/legacy/models_v0.tar.gz: tiny models trained by the code BEFORE the method-folder engine (commit
a9f9a18), with one preprocessed input case and the maps that code predicted for it. Kept as the record of what
`test_legacy_models.py` checks; running it on newer code would make a new fixture, not the legacy one.

    PYTHONPATH=tests python tests/legacy/make_legacy_models.py OUT.tar.gz"""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

METHODS = [("itermask3d", "3d"), ("oneshot", "3d"), ("ae", "3d"), ("itermask2", "2d")]
KEEP = ("checkpoint_final.pth", "plans.json", "splits.json", "calibration.json")


def main(out: str) -> None:
    import torch
    torch.set_num_threads(1)
    from trainer_fixtures import DATASET, make_cheap_phantom_dataset
    root = Path(tempfile.mkdtemp())
    for sub in ("raw", "preprocessed", "results"):
        os.environ[f"ITERMASK_{sub}"] = str(root / sub)
    _, plans = make_cheap_phantom_dataset(root, n_cases=4)
    for config in plans.configurations.values():  # tiny networks: a small fixture
        config.network.features_per_stage = [4, 8]
        config.network.kernel_sizes, config.network.strides = (config.network.kernel_sizes[:2],
                                                               config.network.strides[:2])
    plans.save(root / "preprocessed" / DATASET / "itermask_plans.json")
    from itermask_auto.inference.predictor import Predictor
    from itermask_auto.preprocessing.storage import load_case
    from itermask_auto.training.api import run_training
    pack = root / "pack"
    case_dir = root / "preprocessed" / DATASET / "itermask_3d"
    (pack / "case").mkdir(parents=True)
    for ext in (".npz", ".json"):
        shutil.copy(case_dir / f"phantom_003{ext}", pack / "case" / f"phantom_003{ext}")
    data, hf, brain, _ = load_case(case_dir, "phantom_003")
    expected = {}
    for method, config in METHODS:
        fold = run_training(990, config, 0, method=method, epochs=1, iterations=2, num_threads=1)
        rel = fold.relative_to(root / "results")
        for sub in ("", "first_iter"):
            for name in KEEP:
                src = fold / sub / name
                if src.is_file():
                    dst = pack / "results" / rel / sub / name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, dst)
        pred = Predictor.from_model_folder(fold).predict_arrays(data, hf, brain)
        expected[f"{method}_anomaly"] = pred.anomaly
        expected[f"{method}_seg"] = pred.segmentation
        expected[f"{method}_tau"] = np.float64(pred.summary["tau"])
        expected[f"{method}_score"] = np.float64(pred.summary["volume_score"])
    np.savez_compressed(pack / "expected.npz", **expected)
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(pack.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(pack)))
    shutil.rmtree(root)


if __name__ == "__main__":
    main(sys.argv[1])
