"""`itermask_export_model` and `itermask_install_model`: share trained models between sites as one zip."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

logger = logging.getLogger(__name__)


def export_main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="itermask_export_model",
        description="Pack trained models of a dataset (plans, split, dataset fingerprint, checkpoints, calibration "
                    "and a model card) into one zip that itermask_install_model unpacks at another site.",
        epilog="exit codes: 0 written, 1 error (one line says why)")
    p.add_argument("-d", dest="dataset", required=True, help="dataset ID or name in $ITERMASK_results")
    p.add_argument("-o", dest="output", required=True, type=Path, help="zip file to write")
    p.add_argument("-m", dest="method", default=None, help="only this method (default: every trained one)")
    p.add_argument("-c", dest="configuration", default=None, choices=("3d", "2d"), help="only this configuration")
    p.add_argument("-f", dest="folds", nargs="+", default=None, help="only these folds (default: all trained)")
    p.add_argument("-chk", dest="checkpoints", nargs="+", default=["checkpoint_final.pth"],
                   help="checkpoint files to pack (default: checkpoint_final.pth)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from itermask_auto.imageio.errors import InputError
    from itermask_auto.model_sharing.archive import export_model, exportable_folds
    from itermask_auto.paths import MissingEnvironmentVariable, results_root
    from itermask_auto.utilities.dataset import find_dataset
    try:
        folds = exportable_folds(find_dataset(results_root(), args.dataset), args.method, args.configuration,
                                 args.folds)
        if not folds:
            raise FileNotFoundError(f"no trained model of dataset {args.dataset} matches -m/-c/-f")
        export_model(folds, args.output, args.checkpoints)
    except (InputError, MissingEnvironmentVariable, OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"itermask_export_model: error: {str(e).splitlines()[0]}\n")
        return 1
    return 0


def install_main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="itermask_install_model",
        description="Install a model zip written by itermask_export_model into $ITERMASK_results (or -o), "
                    "ready for itermask_predict -d DATASET -m METHOD.",
        epilog="exit codes: 0 installed (or already there), 1 refused or error (one line says why)")
    p.add_argument("zip", type=Path, help="model zip")
    p.add_argument("-o", dest="results", type=Path, default=None, help="results root (default $ITERMASK_results)")
    p.add_argument("--overwrite", action="store_true", help="replace an installed model that differs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from itermask_auto.imageio.errors import InputError
    from itermask_auto.model_sharing.archive import install_model
    from itermask_auto.paths import MissingEnvironmentVariable, results_root
    try:
        folds = install_model(args.zip, args.results or results_root(), overwrite=args.overwrite)
    except (InputError, MissingEnvironmentVariable, OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"itermask_install_model: error: {str(e).splitlines()[0]}\n")
        return 1
    for fold in folds:
        logger.info("model ready: %s", fold)
    return 0
