"""`itermask_predict`: anomaly maps, segmentations and detection decisions for a folder of scans.

    itermask_predict -i IN -o OUT -d 4 [-c 3d] [-f 0] [-m itermask3d] [-device cpu|cuda] [--continue]
                     [-npp 1] [-nps 1] [--num_parts K --part_id I] [--save_masks] [-chk checkpoint_final.pth]

Input naming as nnU-Net: CASE_0000.nii.gz (one file per channel). Exit code 1 when any case failed (listed)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from itermask_auto.imageio.errors import InputError
from itermask_auto.methods.registry import DEFAULT_METHOD
from itermask_auto.paths import MissingEnvironmentVariable

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="itermask_predict", description=__doc__.splitlines()[0])
    p.add_argument("-i", dest="input", required=True, help="folder with CASE_XXXX.nii.gz channel files")
    p.add_argument("-o", dest="output", required=True, help="output folder (created)")
    p.add_argument("-d", dest="dataset", help="dataset ID or name of the trained model (see $ITERMASK_results)")
    p.add_argument("-c", dest="configuration", default=None, choices=("3d", "2d"),
                   help="configuration (default: the only one trained, else the plan's default_configuration)")
    p.add_argument("-f", dest="fold", default="0", help="fold 0..K-1 or 'all' (default 0)")
    p.add_argument("-m", dest="method", default=DEFAULT_METHOD, help=f"method (default {DEFAULT_METHOD})")
    p.add_argument("-p", dest="plans_name", default=None, help="plans name, if several were trained")
    p.add_argument("-model_dir", default=None, help="use this fold folder instead of -d/-c/-f/-m")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth", help="checkpoint file name")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda"], help="device (default cpu)")
    p.add_argument("--continue", dest="continue_prediction", action="store_true",
                   help="skip cases whose CASE.json and images already exist")
    p.add_argument("-npp", type=int, default=1, help="processes for preprocessing (1 = in this process)")
    p.add_argument("-nps", type=int, default=1, help="processes for export (1 = in this process)")
    p.add_argument("--num_parts", type=int, default=1, help="split the cases into this many parts ...")
    p.add_argument("--part_id", type=int, default=0, help="... and predict part number part_id (0-based)")
    p.add_argument("--save_masks", action="store_true", help="also write the mask of every pass (CASE_masks/)")
    p.add_argument("-masks", dest="masks_dir", default=None, help="optional folder of brain masks CASE.nii.gz")
    p.add_argument("-mode", default=None, choices=["itermask3d", "itermask2"],
                   help="override the plan's inference mode: itermask2 = calibrated tau, no per-subject sweep")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.dataset and not args.model_dir:
        build_parser().error("give -d DATASET (or -model_dir FOLD_DIR)")
    from itermask_auto.inference.predict_folder import predict_folder
    from itermask_auto.utilities.atomic import check_writable_folder, remove_stale_temporaries
    try:
        check_writable_folder(args.output)  # before the model loads: fail in a second, not after a case
        summary = predict_folder(args.input, args.output, args.dataset, args.configuration, args.fold, args.method,
                                 args.device, model_dir=args.model_dir, checkpoint=args.checkpoint,
                                 plans_name=args.plans_name, continue_prediction=args.continue_prediction,
                                 num_parts=args.num_parts, part_id=args.part_id, save_masks=args.save_masks,
                                 npp=args.npp, nps=args.nps, masks_dir=args.masks_dir, mode=args.mode,
                                 progress=not args.quiet)
    except (InputError, MissingEnvironmentVariable, OSError, ValueError, KeyError) as e:
        logger.error("%s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return 2
    remove_stale_temporaries(args.output)  # left by a SIGKILLed earlier run; never read as outputs
    failures = summary["failures"]
    logger.info("%d case(s) written to %s", len(summary["cases"]), args.output)
    if failures:
        logger.error("%d case(s) failed:\n%s", len(failures), "\n".join(f"  {c}: {m}" for c, m in failures.items()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
