"""itermask_plan_and_preprocess: fingerprint, plan and preprocess one or more raw datasets."""
from __future__ import annotations

import argparse
import logging
import sys

from itermask_auto.experiment_planning.api import plan_and_preprocess
from itermask_auto.imageio.errors import InputError
from itermask_auto.paths import MissingEnvironmentVariable, preprocessed_root, raw_root
from itermask_auto.utilities.atomic import check_writable_folder
from itermask_auto.utilities.log import setup_logging
from itermask_auto.utilities.parallel import BatchError

logger = logging.getLogger("itermask_plan_and_preprocess")


def default_profile() -> str:
    try:
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


EPILOG = """\
accepted input: nnU-Net v2's raw dataset layout, dataset.json with
channel_names and file_ending; imagesTr/CASE_0000<file_ending>, one file per
channel (.nii.gz, .nii, .mha, .nrrd: any format SimpleITK reads); optional
masksTr/CASE<file_ending> brain masks.

exit codes:
  0  planned (and preprocessed)
  1  error: one line per bad file naming it; nothing is written to the
     preprocessed folder
  2  command-line error"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="itermask_plan_and_preprocess", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fingerprint a raw dataset of healthy scans ($ITERMASK_raw/DatasetXXX_Name), plan spacing, "
                    "patch size, network, batch size and the mask schedule, then skull-strip (when needed), "
                    "crop, normalise, resample and store it under $ITERMASK_preprocessed.")
    p.add_argument("-d", "--dataset", nargs="+", required=True, help="dataset ID(s) or name(s), e.g. 1 or IXI_T1")
    p.add_argument("-c", "--configurations", nargs="+", default=["3d", "2d"], choices=["3d", "2d"],
                   help="configurations to preprocess (default: 3d 2d)")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--profile", choices=["cpu", "gpu"], default=None,
                   help="hardware profile the plan targets (default: gpu if CUDA is available, else cpu)")
    p.add_argument("-gpu_memory_target", type=float, default=None,
                   help="GPU memory budget in GB for the gpu profile (default 8; implies --profile gpu)")
    p.add_argument("--throughput", choices=["measure", "reference"], default=None,
                   help="cpu profile: plan the epochs that fill the 75-min budget at the step time measured on this "
                        "machine (measure, default; also each stage of sadm, constrained and mmccd for their own "
                        "budgets, and itermask2's two networks to share the 75 min; seconds to a minute) or at the "
                        "project's reference 2-core CPU (reference: the same plan on every machine). Default from "
                        "ITERMASK_PLAN_THROUGHPUT, else measure")
    p.add_argument("--time_methods", nargs="+", default=None, metavar="METHOD",
                   help="with measured throughput: time the own stages of these methods only (e.g. sadm); the "
                        "others keep their untimed epochs (the reference CPU's; itermask2: the plan's training "
                        "epochs) (default: every method that plans its own epochs)")
    p.add_argument("--verify_dataset_integrity", action="store_true", help="read and check every file first")
    p.add_argument("--clean", action="store_true", help="start from scratch (also drops an existing splits.json)")
    p.add_argument("--use_existing_plan", action="store_true",
                   help="preprocess with the dataset's itermask_plans.json as it is (e.g. edited by hand) instead of "
                        "planning again")
    p.add_argument("--plan_only", action="store_true",
                   help="fingerprint and plan only; earlier preprocessed arrays are kept when the new plan would make "
                        "them the same way, else dropped with a warning")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.use_existing_plan and args.plan_only:
        parser.error("--use_existing_plan preprocesses with the plan as it is; --plan_only would only plan again")
    if args.profile == "cpu" and args.gpu_memory_target is not None:
        parser.error("-gpu_memory_target sets the gpu profile's memory budget: drop it or use --profile gpu")
    setup_logging(args.verbose)
    if args.profile:
        profile, why = args.profile, "--profile"
    elif args.gpu_memory_target is not None:
        profile, why = "gpu", "-gpu_memory_target given"
    else:
        profile = default_profile()
        why = ("torch sees a CUDA GPU" if profile == "gpu"
               else "no CUDA GPU on this machine; --profile gpu plans for one")
    if not args.use_existing_plan:   # otherwise the plan file says which profile it was made for
        logger.info("planning for the %s profile (%s)", profile, why)
    try:
        raw_root()  # the input root is named first when several are unset
        check_writable_folder(preprocessed_root())  # fail before minutes of fingerprinting, not after
        for dataset in args.dataset:
            plan_and_preprocess(dataset, args.configurations, args.num_processes, profile=profile,
                                gpu_memory_gb=args.gpu_memory_target, clean=args.clean,
                                verify_dataset_integrity=args.verify_dataset_integrity, plan_only=args.plan_only,
                                throughput=args.throughput, timed_methods=args.time_methods,
                                use_existing_plan=args.use_existing_plan)
    except BatchError as e:
        for _, err in e.errors:
            logger.error("%s", err)
        logger.error("%d case(s) failed; nothing was written to the preprocessed folder", len(e.errors))
        return 1
    except (InputError, MissingEnvironmentVariable, OSError, ValueError, KeyError) as e:
        # OSError: disk full / unwritable output; atomic writes name the final file, the staging folder is gone
        logger.error("%s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
