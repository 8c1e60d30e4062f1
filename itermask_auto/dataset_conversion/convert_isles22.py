"""ISLES'22 (acute stroke, one case here) -> test datasets.

ID 31 DWI+ADC: 2 mm, 112x112x73; the expert mask is in DWI space, so it is binarised on that grid as it is.
ID 32 FLAIR alone: 0.45x0.45x5 mm (512x512x29), same direction as the DWI but another grid. If the FLAIR is on the DWI
grid the label is used as is; otherwise (the case here) the DWI-space label is resampled into FLAIR space by
nearest neighbour with the identity transform (both are in the same scanner space, no registration): each FLAIR voxel
takes the label at its centre. Thick 5 mm slices therefore sample the 2 mm label every 5 mm: small lesions can shrink
or vanish; the voxel counts are logged. Brain masks: image != 0 (holes filled); the images are skull-stripped."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.dataset_conversion._common import (base_parser, binary_image, copy_image, image_name,
                                                      nonzero_brain_mask, resolve_raw_root, same_grid,
                                                      setup_logging, staged_dataset, write_dataset_json)
from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_image, same_geometry

logger = logging.getLogger(__name__)

DATASETS: Dict[int, Tuple[str, Tuple[str, ...]]] = {31: ("ISLES22_DWI_ADC", ("DWI", "ADC")),
                                                    32: ("ISLES22_FLAIR", ("FLAIR",))}
SUFFIX = {"DWI": "_dwi.nii.gz", "ADC": "_adc.nii.gz", "FLAIR": "_flair.nii.gz", "label": "_msk.nii.gz"}
LICENCE = "CC BY 4.0"
REFERENCE = ("Hernandez Petzsche MR, de la Rosa E, Hanning U, et al. ISLES 2022: A multi-center magnetic resonance "
             "imaging stroke lesion segmentation dataset. Scientific Data 2022;9:762")


def _cases(source: Path) -> Dict[str, Dict[str, Path]]:
    """case id (e.g. strokecase0009) -> {DWI, ADC, FLAIR, label: path}; BIDS names sub-<case>_ses-<n>_<kind>."""
    cases: Dict[str, Dict[str, Path]] = {}
    for label in sorted(source.glob(f"**/sub-*{SUFFIX['label']}")):
        stem = label.name[: -len(SUFFIX["label"])]
        case = stem.split("_")[0][len("sub-"):]
        files = {k: label.parent / f"{stem}{s}" for k, s in SUFFIX.items()}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise InputError(label.parent, f"missing {missing} for {case}")
        cases[case] = files
    if not cases:
        raise InputError(source, f"no sub-*{SUFFIX['label']} files: is this an ISLES'22 folder?")
    return cases


def _label_on(label: sitk.Image, reference: sitk.Image) -> Tuple[sitk.Image, str]:
    if same_geometry(label, reference):
        return label, "as is"
    resampled = sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return resampled, "resampled nearest-neighbour into FLAIR space"


def convert(source: Path, raw_root: Optional[Path] = None, dataset_id: int = 31) -> Path:
    source, raw_root = Path(source), resolve_raw_root(raw_root)
    if dataset_id not in DATASETS:
        raise ValueError(f"unknown ISLES'22 dataset ID {dataset_id}: use one of {sorted(DATASETS)}")
    name, sequences = DATASETS[dataset_id]
    start = time.perf_counter()
    cases = _cases(source)
    notes = {}
    with staged_dataset(raw_root, dataset_id, name) as tmp:
        for case, files in cases.items():
            for ch, seq in enumerate(sequences):
                if not same_grid(files[seq], files[sequences[0]]):
                    raise InputError(files[seq], f"not on the grid of the {sequences[0]}")
                copy_image(files[seq], tmp / "imagesTs" / image_name(case, ch))
            reference = read_image(files[sequences[0]])
            label = sitk.ReadImage(str(files["label"]))
            if not same_geometry(label, read_image(files["DWI"])):
                raise InputError(files["label"], "lesion mask is not on the DWI grid")
            label = binary_image(sitk.GetArrayViewFromImage(label) > 0, label)
            n_dwi = int(sitk.GetArrayViewFromImage(label).sum())
            label, how = _label_on(label, reference)
            n = int(np.count_nonzero(sitk.GetArrayViewFromImage(label)))
            (tmp / "labelsTs").mkdir(exist_ok=True)
            sitk.WriteImage(label, str(tmp / "labelsTs" / f"{case}.nii.gz"), useCompression=True)
            (tmp / "masksTs").mkdir(exist_ok=True)
            sitk.WriteImage(nonzero_brain_mask(reference), str(tmp / "masksTs" / f"{case}.nii.gz"), useCompression=True)
            notes[case] = f"label {how}: {n_dwi} voxels at 2 mm (DWI) -> {n} voxels of {reference.GetSpacing()} mm"
            logger.info("  %s: %s", case, notes[case])
        write_dataset_json(tmp, name, sequences, 0, len(cases),
                           description=f"ISLES'22 acute stroke, {'+'.join(sequences)}, native space, skull-stripped; "
                                       "labelsTs: expert lesion mask (drawn in DWI space); masksTs: image != 0",
                           licence=LICENCE, reference=REFERENCE, source=str(source), label_notes=notes)
    out = raw_root / f"Dataset{dataset_id:03d}_{name}"
    logger.info("ISLES'22 %s: %d test case(s) -> %s in %.1f s", "+".join(sequences), len(cases), out,
                time.perf_counter() - start)
    return out


def convert_all(source: Path, raw_root: Optional[Path] = None, ids: Optional[Sequence[int]] = None) -> List[Path]:
    return [convert(source, raw_root, i) for i in (ids or sorted(DATASETS))]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = base_parser("Convert ISLES'22 into raw test datasets 31 DWI+ADC and 32 FLAIR.", "the isles22 case folder")
    p.add_argument("-d", "--dataset-id", type=int, action="append", choices=sorted(DATASETS),
                   help="dataset(s) to write (repeatable; default: both)")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    convert_all(args.source, args.raw, args.dataset_id)


if __name__ == "__main__":
    main()
