"""`itermask_train`: train one fold of a method on a preprocessed dataset, then calibrate it on healthy data.

Several GPUs or machines: start it under torchrun (one process per GPU; gloo on CPU):
    torchrun --nproc_per_node 4 $(which itermask_train) -d 1 -device cuda
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
        $(which itermask_train) -d 1 -device cuda"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from itermask_auto.methods.registry import DEFAULT_METHOD, METHODS

logger = logging.getLogger(__name__)

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, METHODS)) + 2   # the method names' column
    p = argparse.ArgumentParser(
        prog="itermask_train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a method on the healthy cases of a preprocessed dataset (fold split in "
                    "$ITERMASK_preprocessed/DatasetXXX/splits.json), save it under "
                    "$ITERMASK_results/DatasetXXX_Name/<method>__<plans>__<configuration>/fold_N/ and calibrate "
                    "its thresholds on the fold's healthy validation cases. No lesion label is read.",
        epilog="methods:\n" + "\n".join(f"  {name:{width}s}{m.description}" for name, m in sorted(METHODS.items())) +
               "\n\nSeveral GPUs or machines (DistributedDataParallel; the planned batch is shared out over the "
               "ranks):\n  torchrun --nproc_per_node N $(which itermask_train) -d ID -device cuda\n\n"
               "exit codes: 0 trained (and calibrated), 1 error (one line says why), 130 interrupted "
               "(rerun with --c to continue)")
    p.add_argument("-d", dest="dataset", required=True, help="dataset ID (e.g. 1) or name (IXI_T1 / Dataset001_IXI_T1)")
    p.add_argument("-c", dest="configuration", default=None, choices=("3d", "2d"),
                   help="planned configuration (default: the plan's default_configuration - 2d on strongly "
                        "anisotropic data, else 3d - when the method trains it, else the method's own: 2d for sadm, "
                        "constrained, mmccd)")
    p.add_argument("-f", dest="fold", default="0", help="fold 0..K-1 of splits.json, or 'all' (default 0)")
    p.add_argument("-m", dest="method", default=DEFAULT_METHOD, choices=sorted(METHODS), metavar="METHOD",
                   help=f"method: {', '.join(sorted(METHODS))} (default {DEFAULT_METHOD})")
    p.add_argument("-device", dest="device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu or cuda (default cpu); under torchrun each rank takes the GPU of its local rank")
    p.add_argument("--c", dest="continue_training", action="store_true",
                   help="continue every stage from its checkpoint_latest.pth at the next epoch (also with another "
                        "number of ranks)")
    p.add_argument("--calibrate_only", action="store_true",
                   help="skip training; only (re)calibrate the fold, with the settings of its own plans.json (warns "
                        "where the dataset's plan differs)")
    p.add_argument("--epochs", type=int, default=None, help="override the plan's number of epochs (every stage)")
    p.add_argument("--iterations", type=int, default=None, help="override the plan's iterations per epoch")
    p.add_argument("-np", dest="num_workers", type=int, default=0,
                   help="data-augmentation worker processes (default 0: in-process; the batches are the same)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: CPU cores minus data workers)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (slow start, faster steps)")
    p.add_argument("--labelled", default=None, metavar="DATASET",
                   help="weak supervision, for methods that accept it: also train on the lesion labels of this raw "
                        "dataset (imagesTr + labelsTr, preprocessed with this plan); recorded in the model folder, "
                        "and itermask_evaluate refuses to report on its cases")
    p.add_argument("--verify_replicas", action="store_true",
                   help="(torchrun) check after every step that all ranks hold bit-identical weights")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level if rank == 0 else logging.WARNING,  # one voice in the console: rank 0
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from itermask_auto.imageio.errors import InputError
    from itermask_auto.paths import MissingEnvironmentVariable, results_root
    from itermask_auto.training.api import run_training
    from itermask_auto.utilities.atomic import check_writable_folder, remove_stale_temporaries
    try:
        check_writable_folder(results_root())
        fold_dir = run_training(args.dataset, configuration=args.configuration, fold=args.fold, method=args.method,
                                device=args.device, continue_training=args.continue_training,
                                calibrate_only=args.calibrate_only, epochs=args.epochs, iterations=args.iterations,
                                num_workers=args.num_workers, compile=args.compile,
                                num_threads=args.threads, verify_replicas=args.verify_replicas,
                                labelled=args.labelled)
    except KeyboardInterrupt:
        sys.stderr.write("itermask_train: interrupted; the last finished epoch is in checkpoint_latest.pth - "
                         "rerun with --c to continue\n")
        return EXIT_INTERRUPTED
    except (InputError, MissingEnvironmentVariable, OSError, ValueError, KeyError) as e:
        # OSError: disk full / unwritable results; checkpoints are written atomically, the last good one stays
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        line = str(message).splitlines()[0] if str(message) else type(e).__name__
        sys.stderr.write(f"itermask_train: error: {line}\n")
        return EXIT_ERROR
    if rank == 0:
        remove_stale_temporaries(fold_dir)  # a SIGKILLed earlier run may have left half-written temporary files
        logger.info("model folder: %s", fold_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
