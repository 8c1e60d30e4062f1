"""`make demo`: the whole pipeline on a built-in phantom dataset, from nothing, on CPU.

Generates a raw phantom dataset, plans and preprocesses it, trains briefly, calibrates on healthy validation
phantoms, predicts the test phantoms, evaluates against their labels and writes a QC report."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from itermask_auto.utilities.log import setup_logging

logger = logging.getLogger("itermask_auto.demo")
DATASET_ID = 990


def run_demo(work_dir: Path, epochs: int, iterations: int) -> int:
    work_dir = work_dir.resolve()
    for name in ("raw", "preprocessed", "results", "predictions"):  # a demo always starts from nothing
        shutil.rmtree(work_dir / name, ignore_errors=True)
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"ITERMASK_{name}"] = str(work_dir / name)
        (work_dir / name).mkdir(parents=True, exist_ok=True)
    from itermask_auto.dataset_conversion.phantom import write_phantom_dataset
    from itermask_auto.experiment_planning.api import plan_and_preprocess
    from itermask_auto.experiment_planning.plans import PLANS_FILE

    t0 = time.time()
    raw = write_phantom_dataset(work_dir / "raw", dataset_id=DATASET_ID, n_train=10, n_test_healthy=2,
                                n_test_lesion=3, size=(64, 76, 64), spacing=(2.0, 2.0, 2.0), with_masks=False)
    logger.info("[1/5] phantom raw dataset: %s (%.0f s)", raw, time.time() - t0)
    pre = plan_and_preprocess(DATASET_ID, configurations=("3d",), num_processes=2, profile="cpu")
    plan_text = (pre / PLANS_FILE).read_text()
    logger.info("[2/5] plan (%s):\n%s", pre / PLANS_FILE, _plan_digest(json.loads(plan_text)))
    from itermask_auto.training.api import run_training
    fold_dir = run_training(DATASET_ID, "3d", fold=0, device="cpu", epochs=epochs, iterations=iterations)
    logger.info("[3/5] trained and calibrated: %s (%.0f s so far)", fold_dir, time.time() - t0)
    from itermask_auto.inference.predict_folder import predict_folder
    out = work_dir / "predictions"
    predict_folder(raw / "imagesTs", out, DATASET_ID, "3d", 0, device="cpu")
    logger.info("[4/5] predictions: %s (%.0f s so far)", out, time.time() - t0)
    from itermask_auto.evaluation.api import evaluate_folder
    summary = evaluate_folder(out, raw / "labelsTs", images_dir=raw / "imagesTs", report=True)
    seg = summary.get("segmentation", {})
    logger.info("[5/5] evaluation: pooled Dice %s at the calibrated threshold (labels used for scoring only)",
                seg.get("pooled_dice"))
    logger.info("summary: %s", out / "summary.json")
    logger.info("QC report: %s", out / "qc" / "index.html")
    logger.info("demo finished in %.0f s; everything is under %s", time.time() - t0, work_dir)
    return 0


def _plan_digest(plans: dict) -> str:
    lines = [f"  default configuration: {plans['default_configuration']} (profile {plans['profile']})"]
    for name, c in plans["configurations"].items():
        lines.append(f"  {name}: spacing {c['spacing']} mm, patch {c['patch_size']}, batch {c['batch_size']}, "
                     f"features {c['network']['features_per_stage']}")
    t = plans["training"]
    lines.append(f"  training: {t['num_epochs']} epochs x {t['iterations_per_epoch']} iterations, lr {t['initial_lr']}")
    lines.append(f"  hf radius {plans['hf_radius_cycles_per_mm']} cycles/mm; inference {plans['inference']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run the itermask_auto pipeline on a built-in phantom dataset.")
    p.add_argument("--work-dir", type=Path, default=Path("demo_work"))
    p.add_argument("--epochs", type=int, default=8, help="short training for the demo (default 8)")
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default 25)")
    args = p.parse_args(argv)
    setup_logging()
    return run_demo(args.work_dir, args.epochs, args.iterations)


if __name__ == "__main__":
    sys.exit(main())
