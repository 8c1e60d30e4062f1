"""itermask_evaluate: score an itermask_predict output folder against lesion labels and write a QC report."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from itermask_auto.imageio.errors import InputError
from itermask_auto.utilities.log import setup_logging

logger = logging.getLogger("itermask_evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="itermask_evaluate",
        description="Evaluate itermask_predict output (CASE_anomaly/CASE_seg/CASE.json) against labels "
                    "(LABELS/CASE.nii.gz): Dice/precision/recall of the calibrated segmentation, voxel AUROC/AUPRC "
                    "of the anomaly map, lesion-size tertiles, detection metrics with healthy cases. Writes "
                    "summary.json, metrics_per_case.csv and qc/index.html into the prediction folder.")
    p.add_argument("-pred", required=True, help="itermask_predict output folder")
    p.add_argument("-ref", required=True, help="label folder (e.g. labelsTs) with CASE.nii.gz")
    p.add_argument("-healthy", default=None, help="itermask_predict output folder of healthy (lesion-free) scans")
    p.add_argument("-brain", default=None, help="brain mask folder (CASE.nii.gz); default: anomaly map > 0")
    p.add_argument("-images", default=None, help="image folder (CASE_0000.nii.gz) shown under the QC overlay")
    p.add_argument("--alpha", type=float, default=None,
                   help="healthy voxel false-positive target when the prediction does not record it (default 0.01)")
    p.add_argument("--no_report", action="store_true", help="skip the QC figures and index.html")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from itermask_auto.evaluation.evaluate import evaluate_folder
    try:
        s = evaluate_folder(args.pred, args.ref, args.healthy, args.brain, args.images, report=not args.no_report,
                            alpha=args.alpha)
    except (InputError, OSError, ValueError) as e:
        logger.error("%s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return 1
    seg, vox, det = s["segmentation"], s["voxel_ranking"], s["detection"]
    f = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731 - null in JSON = undefined
    logger.info("%d cases: pooled Dice %s (oracle upper bound %s), voxel AUROC %s AUPRC %s, detection AUROC %s",
                s["n_cases"], f(seg["pooled_dice"]), f(s["oracle_dice_upper_bound"]["dice"]),
                f(vox["pooled_auroc"]), f(vox["pooled_auprc"]), f(det["auroc"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
