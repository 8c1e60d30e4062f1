"""itermask_evaluate: score an itermask_predict output folder against lesion labels and write a QC report."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from itermask_auto.imageio.errors import InputError, SetupError
from itermask_auto.utilities.log import setup_logging

logger = logging.getLogger("itermask_evaluate")

EXIT_OK, EXIT_CASE_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
Evaluate itermask_predict output (CASE_anomaly, CASE_seg, CASE.json) against
lesion labels (LABELS/CASE.nii.gz): Dice/precision/recall of the calibrated
segmentation, voxel AUROC/AUPRC of the anomaly map, lesion-size tertiles,
detection metrics with healthy cases. Writes summary.json,
metrics_per_case.csv and qc/index.html into the prediction folder.

accepted files: .nii.gz, .nii, .mha, .nrrd. A label (or brain mask, image) on
another grid is resampled to the prediction's only when it covers the same
world extent (within a voxel); it is listed in summary.json. A label over
another field of view (e.g. transposed axes) is an error naming the file."""

EPILOG = """\
exit codes:
  0    evaluated; summary.json written
  1    a case could not be evaluated (missing, unreadable or misaligned
       label: one error line naming the file); nothing is written
  2    set-up error (a folder missing, no finished predictions)
  130  interrupted (Ctrl-C); nothing is written"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="itermask_evaluate", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-pred", required=True, help="itermask_predict output folder")
    p.add_argument("-ref", required=True, help="label folder (e.g. labelsTs) with CASE.nii.gz")
    p.add_argument("-healthy", default=None,
                   help="itermask_predict output folder of healthy (lesion-free) scans (default: none)")
    p.add_argument("-brain", default=None,
                   help="brain mask folder (CASE.nii.gz) (default: anomaly map > 0, which leaves out a calibrated "
                        "brain-rim margin)")
    p.add_argument("-healthy_brain", default=None,
                   help="brain mask folder of the -healthy scans (default: the -brain folder)")
    p.add_argument("-images", default=None,
                   help="image folder (CASE_0000.nii.gz) shown under the QC overlay (default: the map in grey)")
    p.add_argument("--alpha", type=float, default=None,
                   help="healthy voxel false-positive target when the prediction does not record it (default: 0.01)")
    p.add_argument("--no_report", action="store_true", help="skip the QC figures and index.html")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from itermask_auto.evaluation.evaluate import BEST_GLOBAL_KEY, evaluate_folder
    try:
        s = evaluate_folder(args.pred, args.ref, args.healthy, args.brain, args.images, report=not args.no_report,
                            alpha=args.alpha, healthy_brain_dir=args.healthy_brain)
    except KeyboardInterrupt:
        logger.error("interrupted; summary.json was not written")
        return EXIT_INTERRUPTED
    except SetupError as e:
        logger.error("%s", e)
        return EXIT_SETUP
    except (InputError, OSError, ValueError) as e:
        logger.error("%s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return EXIT_CASE_FAILED
    seg, vox, det = s["segmentation"], s["voxel_ranking"], s["detection"]
    f = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731 - null in JSON = undefined
    logger.info("%d cases: pooled Dice %s (best single global threshold on these labels: %s), voxel AUROC %s "
                "AUPRC %s, detection AUROC %s", s["n_cases"], f(seg["pooled_dice"]), f(s[BEST_GLOBAL_KEY]["dice"]),
                f(vox["pooled_auroc"]), f(vox["pooled_auprc"]), f(det["auroc"]))
    if s["resampled_labels"]:
        logger.warning("%d label(s) were resampled to the prediction's grid (listed in summary.json)",
                       len(s["resampled_labels"]))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
