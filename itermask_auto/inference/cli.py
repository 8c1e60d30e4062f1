"""itermask_predict: anomaly maps, segmentations and detection decisions for a folder of scans."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from itermask_auto.imageio.errors import InputError
from itermask_auto.methods.registry import DEFAULT_METHOD, METHODS
from itermask_auto.paths import MissingEnvironmentVariable

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_CASES_FAILED, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
Anomaly maps, segmentations and detection decisions for a folder of brain MRI
scans, with a model trained by itermask_train. Per case: CASE_anomaly.nii.gz,
CASE_seg.nii.gz and CASE.json, in the input's exact geometry.

accepted inputs (in -i):
  CASE_0000.nii.gz, CASE_0001.nii.gz, ...
        one file per channel (nnU-Net naming); .nii, .mha and .nrrd work too,
        whatever file ending the model was trained on
  CASE/ a DICOM series folder per case (SimpleITK's series reader). With
        several series, channel k is the series whose description contains
        the k-th channel name of dataset.json (or the k-th -dicom_channels)
  Other files and folders are skipped with one log line, the run's own
  outputs (-o inside -i, or -o = -i) silently."""

EPILOG = """\
exit codes:
  0    every case predicted
  1    some cases failed: each is listed with a one-line error, the other
       cases are written
  2    set-up error (no model, unknown dataset, unreadable model, no GPU,
       output not writable): nothing is written
  130  interrupted (Ctrl-C): finished cases are kept; rerun with --continue

example:
  itermask_predict -i scans/ -o out/ -d 1 -device cuda --continue"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="itermask_predict", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", dest="input", required=True, help="input folder (see accepted inputs above)")
    p.add_argument("-o", dest="output", required=True, help="output folder (created; may be the input folder)")
    p.add_argument("-d", dest="dataset", help="dataset ID or name of the trained model (see $ITERMASK_results)")
    p.add_argument("-c", dest="configuration", default=None, choices=("3d", "2d"),
                   help="configuration (default: the only one trained, else the plan's default_configuration)")
    p.add_argument("-f", dest="fold", default="0", help="fold 0..K-1 or 'all' (default: 0)")
    p.add_argument("-m", dest="method", default=DEFAULT_METHOD, choices=sorted(METHODS),
                   help=f"method the model was trained with (default: {DEFAULT_METHOD})")
    p.add_argument("-p", dest="plans_name", default=None, help="plans name, if several were trained")
    p.add_argument("-model_dir", default=None, help="use this fold folder instead of -d/-c/-f/-m")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file in the fold folder (default: checkpoint_final.pth)")
    p.add_argument("-device", default="cpu", metavar="{cpu,cuda,cuda:N[,M...]}",
                   help="cpu (default); cuda = every visible GPU, one worker process each; cuda:N or cuda:N,M,... = "
                        "the GPUs named")
    p.add_argument("--continue", dest="continue_prediction", action="store_true",
                   help="skip cases already finished from the same input files (checksum in CASE.json)")
    p.add_argument("-npp", type=int, default=1, help="processes for preprocessing (default: 1 = in this process)")
    p.add_argument("-nps", type=int, default=1, help="processes for export (default: 1 = in this process)")
    p.add_argument("--num_parts", type=int, default=1, help="split the cases into this many parts (default: 1) ...")
    p.add_argument("--part_id", type=int, default=0, help="... and predict part number part_id (default: 0)")
    p.add_argument("--save_masks", action="store_true", help="also write the mask of every pass (CASE_masks/)")
    p.add_argument("-masks", dest="masks_dir", default=None,
                   help="folder of brain masks CASE.nii.gz (or .nii/.mha/.nrrd) (default: skull-strip if needed)")
    p.add_argument("-mode", default=None, choices=["itermask3d", "itermask2"],
                   help="override the plan's inference mode (itermask3d's planned mode: itermask2): itermask2 = "
                        "the calibrated tau, shrink only; itermask3d = the per-subject knee of a sweep")
    p.add_argument("--output_format", default="nifti", choices=["nifti", "input"],
                   help="nifti (default), or input: the same file ending as the input (.nii, .mha, .nrrd; "
                        "DICOM input gives NIfTI)")
    p.add_argument("-dicom_channels", nargs="+", default=None, metavar="TEXT",
                   help="for DICOM folders with several series: per channel, a text its series description "
                        "contains (case-insensitive; default: the channel names of dataset.json)")
    p.add_argument("--quiet", action="store_true", help="warnings only, no progress display")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.dataset and not args.model_dir:
        parser.error("give -d DATASET (or -model_dir FOLD_DIR)")
    output = Path(args.output)
    created = not output.exists()
    try:
        return _run(args)
    except KeyboardInterrupt as e:  # PredictionInterrupted knows how far the folder got
        if hasattr(e, "finished"):
            logger.error("interrupted after %d of %d cases; rerun with --continue", e.finished, e.total)
        else:
            logger.error("interrupted; finished cases are kept; rerun with --continue")
        return EXIT_INTERRUPTED
    except (InputError, MissingEnvironmentVariable, OSError, ValueError, KeyError) as e:
        logger.error("%s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return EXIT_SETUP
    finally:
        if created:
            _remove_if_empty(output)


def _run(args) -> int:
    from itermask_auto.inference.devices import parse_devices, predict_on_devices
    from itermask_auto.inference.predict_folder import check_device, predict_folder
    from itermask_auto.utilities.atomic import check_writable_folder, remove_stale_temporaries
    check_device(args.device)  # before the output folder exists and before the checkpoint is loaded
    devices = parse_devices(args.device)
    check_writable_folder(args.output)  # before the model loads: fail in a second, not after a case
    job = dict(input_dir=args.input, output_dir=args.output, dataset=args.dataset, configuration=args.configuration,
               fold=args.fold, method=args.method, model_dir=args.model_dir, checkpoint=args.checkpoint,
               plans_name=args.plans_name, continue_prediction=args.continue_prediction, num_parts=args.num_parts,
               part_id=args.part_id, save_masks=args.save_masks, npp=args.npp, nps=args.nps,
               masks_dir=args.masks_dir, mode=args.mode, progress=not args.quiet,
               output_format=args.output_format, dicom_channels=args.dicom_channels)
    if len(devices) > 1:
        summary = predict_on_devices(devices, log_level=logging.getLogger().level, **job)
    else:
        summary = predict_folder(device=devices[0], **job)
    remove_stale_temporaries(args.output)  # left by a SIGKILLed earlier run; never read as outputs
    failures = summary["failures"]
    logger.info("%d case(s) written to %s", len(summary["cases"]), args.output)
    if failures:
        logger.error("%d case(s) failed:\n%s", len(failures), "\n".join(f"  {c}: {m}" for c, m in failures.items()))
        return EXIT_CASES_FAILED
    return EXIT_OK


def _remove_if_empty(folder: Path) -> None:
    """A run that stopped before writing anything leaves no empty output folder behind (it created it)."""
    try:
        leftovers = [p for p in folder.iterdir() if p.name != ".predictions.json.lock"] if folder.is_dir() else None
        if leftovers == []:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
