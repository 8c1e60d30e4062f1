"""BraTS 2015 (DeepMedic example copy: FLAIR + T1c, 1 mm, SRI24) -> test datasets with whole-tumour labels.

IDs: 21 FLAIR, 22 T1c, 23 FLAIR+T1c. Source: {train,validation,test}/brats_*/ with Flair_subtrMeanDivStd.nii.gz,
T1c_subtrMeanDivStd.nii.gz, OTMultiClass.nii.gz (1-4) and brainmask.nii.gz. The images are z-scored inside the brain
and their background is the image minimum, not 0: they are copied as they are (the brain mask says where the brain is).
All six cases go to imagesTs whatever their source split; labels = OTMultiClass > 0; masks = brainmask > 0."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import SimpleITK as sitk

from itermask_auto.dataset_conversion._common import (base_parser, copy_image, image_name, resolve_raw_root,
                                                      same_grid, setup_logging, staged_dataset, write_binary,
                                                      write_dataset_json)
from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)

FILES = {"FLAIR": "Flair_subtrMeanDivStd.nii.gz", "T1c": "T1c_subtrMeanDivStd.nii.gz"}
DATASETS: Dict[int, Tuple[str, Tuple[str, ...]]] = {
    21: ("BraTS2015_FLAIR", ("FLAIR",)), 22: ("BraTS2015_T1c", ("T1c",)), 23: ("BraTS2015_FLAIR_T1c", ("FLAIR", "T1c")),
}
LICENCE = "CC BY-NC-SA 3.0 CH"
REFERENCE = ("Menze BH, Jakab A, Bauer S, et al. The multimodal brain tumor image segmentation benchmark (BRATS). "
             "IEEE TMI 2015;34(10):1993-2024. Intensity-normalised copy from the DeepMedic examples (K. Kamnitsas)")


def _cases(source: Path) -> List[Path]:
    cases = sorted((p for p in source.glob("*/*") if p.is_dir() and (p / "OTMultiClass.nii.gz").is_file()),
                   key=lambda p: p.name)
    if not cases:
        raise InputError(source, "no */<case>/OTMultiClass.nii.gz: is this the brats2015_flair_t1c folder?")
    return cases


def convert(source: Path, raw_root: Optional[Path] = None, dataset_id: int = 21,
            sequences: Optional[Sequence[str]] = None, name: Optional[str] = None) -> Path:
    source, raw_root = Path(source), resolve_raw_root(raw_root)
    if sequences is None or name is None:
        if dataset_id not in DATASETS:
            raise ValueError(f"unknown BraTS dataset ID {dataset_id}: use one of {sorted(DATASETS)}")
        name, sequences = name or DATASETS[dataset_id][0], sequences or DATASETS[dataset_id][1]
    start = time.perf_counter()
    cases = _cases(source)
    splits = {}
    with staged_dataset(raw_root, dataset_id, name) as tmp:
        for folder in cases:
            case = folder.name
            splits[case] = folder.parent.name
            files = [folder / FILES[s] for s in sequences]
            for ch, src in enumerate(files):
                if not same_grid(src, files[0]):
                    raise InputError(src, f"not on the grid of {files[0].name}")
                copy_image(src, tmp / "imagesTs" / image_name(case, ch))
            reference = sitk.ReadImage(str(files[0]))
            n = write_binary(folder / "OTMultiClass.nii.gz", tmp / "labelsTs" / f"{case}.nii.gz", reference)
            m = write_binary(folder / "brainmask.nii.gz", tmp / "masksTs" / f"{case}.nii.gz", reference)
            logger.info("  %s (%s): %d tumour voxels, %d brain voxels", case, splits[case], n, m)
        write_dataset_json(tmp, name, sequences, 0, len(cases),
                           description="BraTS 2015 gliomas (BRATS 2013 patients 1-6), 1 mm, skull-stripped, z-scored "
                                       "inside the brain with background = image minimum (not 0); labelsTs: whole "
                                       "tumour (OTMultiClass > 0); masksTs: brainmask",
                           licence=LICENCE, reference=REFERENCE, source=str(source), source_split=splits)
    out = raw_root / f"Dataset{dataset_id:03d}_{name}"
    logger.info("BraTS 2015 %s: %d test cases -> %s in %.1f s", "+".join(sequences), len(cases), out,
                time.perf_counter() - start)
    return out


def convert_all(source: Path, raw_root: Optional[Path] = None, ids: Optional[Sequence[int]] = None) -> List[Path]:
    return [convert(source, raw_root, i) for i in (ids or sorted(DATASETS))]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = base_parser("Convert BraTS 2015 FLAIR/T1c into raw test datasets 21 FLAIR, 22 T1c, 23 FLAIR+T1c.",
                    "the brats2015_flair_t1c folder")
    p.add_argument("-d", "--dataset-id", type=int, action="append", choices=sorted(DATASETS),
                   help="dataset(s) to write (repeatable; default: all three)")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    convert_all(args.source, args.raw, args.dataset_id)


if __name__ == "__main__":
    main()
