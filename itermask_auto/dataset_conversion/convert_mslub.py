"""MSLUB (MNI 1 mm, skull-stripped, N4) -> test datasets with expert lesion labels.

IDs: 11 T1, 12 T2, 13 FLAIR, 14 T1+T2+FLAIR. Source: patientNN/{T1,T2,FLAIR}_*regtoMNI.nii.gz and
patientNN/GOLD_STANDARD_*.nii.gz. Images copied byte-for-byte; labels binarised (> 0) to uint8; brain mask = T1 != 0
with holes filled (the images are skull-stripped with background exactly 0)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import SimpleITK as sitk

from itermask_auto.dataset_conversion._common import (base_parser, copy_image, image_name, nonzero_brain_mask,
                                                      resolve_raw_root, same_grid, setup_logging, staged_dataset,
                                                      write_binary, write_dataset_json)
from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_image

logger = logging.getLogger(__name__)

DATASETS: Dict[int, Tuple[str, Tuple[str, ...]]] = {
    11: ("MSLUB_T1", ("T1",)), 12: ("MSLUB_T2", ("T2",)), 13: ("MSLUB_FLAIR", ("FLAIR",)),
    14: ("MSLUB_T1_T2_FLAIR", ("T1", "T2", "FLAIR")),
}
LICENCE = "CC BY"
REFERENCE = ("Lesjak Z, Galimzianova A, Koren A, et al. A novel public MR image dataset of multiple sclerosis "
             "patients with lesion segmentations based on multi-rater consensus. Neuroinformatics 2018;16:51-63")


def _one(folder: Path, pattern: str) -> Path:
    hits = sorted(folder.glob(pattern))
    if len(hits) != 1:
        raise InputError(folder / pattern, f"expected exactly one file, found {len(hits)}")
    return hits[0]


def _patients(source: Path) -> List[Path]:
    patients = sorted(p for p in source.glob("patient*") if p.is_dir() and list(p.glob("T1_*.nii.gz")))
    if not patients:
        raise InputError(source, "no patientNN/T1_*.nii.gz folders: is this the mslub_mni folder?")
    return patients


def convert(source: Path, raw_root: Optional[Path] = None, dataset_id: int = 11,
            sequences: Optional[Sequence[str]] = None, name: Optional[str] = None) -> Path:
    """One dataset. `sequences`/`name` default to the table entry of `dataset_id` (11..14)."""
    source, raw_root = Path(source), resolve_raw_root(raw_root)
    if sequences is None or name is None:
        if dataset_id not in DATASETS:
            raise ValueError(f"unknown MSLUB dataset ID {dataset_id}: use one of {sorted(DATASETS)} or give "
                             f"sequences and name")
        name, sequences = name or DATASETS[dataset_id][0], sequences or DATASETS[dataset_id][1]
    start = time.perf_counter()
    patients = _patients(source)
    with staged_dataset(raw_root, dataset_id, name) as tmp:
        for patient in patients:
            case = patient.name
            files = [_one(patient, f"{seq}_*.nii.gz") for seq in sequences]
            t1 = _one(patient, "T1_*.nii.gz")
            reference = read_image(t1)
            for ch, src in enumerate(files):
                if not same_grid(src, t1):
                    raise InputError(src, "not on the grid of the T1 of the same patient")
                copy_image(src, tmp / "imagesTs" / image_name(case, ch))
            n = write_binary(_one(patient, "GOLD_STANDARD*.nii.gz"), tmp / "labelsTs" / f"{case}.nii.gz", reference)
            (tmp / "masksTs").mkdir(exist_ok=True)
            sitk.WriteImage(nonzero_brain_mask(reference), str(tmp / "masksTs" / f"{case}.nii.gz"),
                            useCompression=True)
            logger.info("  %s: %s, %d lesion voxels", case, [f.name.split("_")[0] for f in files], n)
        write_dataset_json(tmp, name, sequences, 0, len(patients),
                           description="MSLUB multiple sclerosis patients, skull-stripped, N4-corrected, affinely "
                                       "registered to MNI152 (1 mm); labelsTs: expert consensus lesion masks; "
                                       "masksTs: T1 != 0 (holes filled)",
                           licence=LICENCE, reference=REFERENCE, source=str(source))
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    logger.info("MSLUB %s: %d test cases -> %s in %.1f s", "+".join(sequences), len(patients), folder,
                time.perf_counter() - start)
    return folder


def convert_all(source: Path, raw_root: Optional[Path] = None, ids: Optional[Sequence[int]] = None) -> List[Path]:
    return [convert(source, raw_root, i) for i in (ids or sorted(DATASETS))]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = base_parser("Convert MSLUB (MNI) into raw test datasets 11 T1, 12 T2, 13 FLAIR, 14 T1+T2+FLAIR.",
                    "the mslub_mni folder")
    p.add_argument("-d", "--dataset-id", type=int, action="append", choices=sorted(DATASETS),
                   help="dataset(s) to write (repeatable; default: all four)")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    convert_all(args.source, args.raw, args.dataset_id)


if __name__ == "__main__":
    main()
