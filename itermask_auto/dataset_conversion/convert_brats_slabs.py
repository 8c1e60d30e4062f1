"""BraTS 2015 (FLAIR/T1c) -> the healthy-slice benchmark protocol of the 2-D papers (MMCCD, IterMask2, ...): train
on the tumour-free axial slices of training patients, test on held-out patients, with patient-level folds.

IDs: 41 BraTSSlabs_FLAIR (single-sequence methods), 42 BraTSSlabs_FLAIR_T1c (mmccd). Both hold the same cases and
folds:
- imagesTr/masksTr: every patient's tumour-free axial **slabs** (CASE = PATIENT_slabK): runs of contiguous axial
  slices (canonical z, see preprocessing/orientation.py) that hold brain and no tumour voxel within MARGIN_MM, at
  least MIN_SLAB_MM thick and holding at least 50 ml of brain (the engine's smallest plausible brain mask). The
  expert labels are used ONLY here, to choose these slices (as the papers do: "the
  tumour-free slices of training subjects"); no label of a training or validation slab exists in the dataset.
- imagesTs/labelsTs/masksTs: every patient's whole volume with its whole-tumour label (OTMultiClass > 0).
- splits.json (the engine's format, [{"train": [slabs], "val": [slabs]}, ...]) and folds.json (the patients of
  each fold): fold k tests the k-th group of patients (6 patients, 3 folds: 2 each), validates (healthy-only
  calibration) on the slabs of the first patient of the next group, and trains on the slabs of the others. No
  patient's slabs are in the training or validation cases of a fold that tests that patient.
`install_splits` copies splits.json to $ITERMASK_preprocessed/DatasetXXX/, where itermask_train reads it (and
itermask_plan_and_preprocess keeps it; --clean drops it).

Resampling: to SPACING_MM (2 mm) isotropic by default, linear for images, linear > 0.5 for the brain mask, and the
tumour label linear > 0 before choosing slices (a slice touching tumour by interpolation is not tumour-free) but
linear > 0.5 for labelsTs. 2 mm is close to the authors' 1.875 mm (240 mm resized to 128 px) and the IXI
benchmark's grid; `spacing_mm=None` keeps the 1 mm source grid."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.dataset_conversion._common import (base_parser, binary_image, image_name, resolve_raw_root,
                                                      same_grid, setup_logging, staged_dataset, write_dataset_json)
from itermask_auto.dataset_conversion.convert_brats2015 import FILES, LICENCE, REFERENCE, _cases
from itermask_auto.imageio.errors import InputError
from itermask_auto.preprocessing.brain_mask import MIN_BRAIN_ML
from itermask_auto.preprocessing.orientation import reorientation_for
from itermask_auto.utilities.atomic import read_json, write_json

logger = logging.getLogger(__name__)

DATASETS: Dict[int, Tuple[str, Tuple[str, ...]]] = {41: ("BraTSSlabs_FLAIR", ("FLAIR",)),
                                                    42: ("BraTSSlabs_FLAIR_T1c", ("FLAIR", "T1c"))}
SPACING_MM = 2.0
MARGIN_MM = 2.0        # no tumour voxel within this distance (along z) of a slab slice
# thinner runs are dropped: the high-frequency channel is a 3-D FFT over the case, and a slab
# thinner than 1 / (0.078 cycles/mm) = 12.8 mm has no z frequency inside its low-frequency ball
MIN_SLAB_MM = 16.0
NUM_FOLDS = 3
FOLDS_FILE, SPLITS_FILE = "folds.json", "splits.json"


def resample(image: sitk.Image, spacing_mm: Optional[float], linear: bool = True) -> sitk.Image:
    """`image` on an isotropic `spacing_mm` grid covering the same field of view (voxel corners aligned)."""
    if not spacing_mm:
        return image
    old, size = np.asarray(image.GetSpacing()), np.asarray(image.GetSize())
    new = np.full(3, float(spacing_mm))
    new_size = [max(1, int(math.floor(n))) for n in size * old / new]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((new - old) / 2)
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), new_size, sitk.Transform(),
                         sitk.sitkLinear if linear else sitk.sitkNearestNeighbor, origin.tolist(), new.tolist(),
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def axial_array_axis(image: sitk.Image) -> int:
    """The numpy (GetArrayFromImage) axis that is the canonical z (inferior-superior) axis."""
    return int(reorientation_for(image.GetDirection()).transpose[0])


def tumour_free_slabs(tumour_slices: np.ndarray, brain_slices: np.ndarray, margin: int,
                      min_slices: int) -> List[Tuple[int, int]]:
    """[(first, stop)] runs of slices with brain and no tumour within `margin` slices, at least `min_slices` long."""
    tumour = np.asarray(tumour_slices, bool)
    near = tumour.copy()
    for shift in range(1, margin + 1):
        near[shift:] |= tumour[:-shift]
        near[:-shift] |= tumour[shift:]
    free = np.asarray(brain_slices, bool) & ~near
    runs, start = [], None
    for z, ok in enumerate(list(free) + [False]):
        if ok and start is None:
            start = z
        elif not ok and start is not None:
            if z - start >= min_slices:
                runs.append((start, z))
            start = None
    return runs


def crop_axial(image: sitk.Image, axis: int, first: int, stop: int) -> sitk.Image:
    """Slices [first, stop) along numpy axis `axis`; the crop keeps its physical position."""
    index = [slice(None)] * 3
    index[2 - axis] = slice(first, stop)   # SimpleITK indexes (x, y, z) = reversed numpy axes
    return image[tuple(index)]


def make_folds(slabs: Dict[str, List[str]], num_folds: int = NUM_FOLDS) -> List[Dict[str, List[str]]]:
    """Patient-level folds: test = the k-th group of sorted patients, val = the first patient with slabs of the
    following groups, train = every other patient's slabs."""
    patients = sorted(slabs)
    if len(patients) < 3:
        raise ValueError(f"patient-level folds need at least 3 patients, got {len(patients)}")
    groups = [list(g) for g in np.array_split(patients, min(num_folds, len(patients) - 1))]
    folds = []
    for k, test in enumerate(groups):
        later = [p for g in groups[k + 1:] + groups[:k] for p in g]
        val = next((p for p in later if slabs[p]), None)
        if val is None:
            raise ValueError(f"fold {k}: no patient outside the test group has a tumour-free slab")
        train = [p for p in later if p != val]
        folds.append({"test_patients": test, "val_patients": [val], "train_patients": train,
                      "train": sorted(s for p in train for s in slabs[p]), "val": sorted(slabs[val])})
    return folds


def _write_case(tmp: Path, part: str, case: str, channels: List[sitk.Image], brain: sitk.Image) -> None:
    (tmp / f"images{part}").mkdir(exist_ok=True)
    (tmp / f"masks{part}").mkdir(exist_ok=True)
    for c, image in enumerate(channels):
        sitk.WriteImage(image, str(tmp / f"images{part}" / image_name(case, c)), useCompression=True)
    sitk.WriteImage(brain, str(tmp / f"masks{part}" / f"{case}.nii.gz"), useCompression=True)


def convert(source: Path, raw_root: Optional[Path] = None, dataset_id: int = 41,
            spacing_mm: Optional[float] = SPACING_MM, num_folds: int = NUM_FOLDS) -> Path:
    if dataset_id not in DATASETS:
        raise ValueError(f"unknown BraTS slab dataset ID {dataset_id}: use one of {sorted(DATASETS)}")
    name, sequences = DATASETS[dataset_id]
    source, raw_root = Path(source), resolve_raw_root(raw_root)
    start = time.perf_counter()
    slabs: Dict[str, List[str]] = {}
    info: Dict[str, List[Dict]] = {}
    with staged_dataset(raw_root, dataset_id, name) as tmp:
        for folder in _cases(source):
            patient = folder.name
            files = [folder / FILES[s] for s in sequences] + [folder / "brainmask.nii.gz",
                                                              folder / "OTMultiClass.nii.gz"]
            for f in files[1:]:
                if not same_grid(f, files[0]):
                    raise InputError(f, f"not on the grid of {files[0].name}")
            channels = [resample(sitk.ReadImage(str(f)), spacing_mm) for f in files[:len(sequences)]]
            brain_f = resample(sitk.Cast(sitk.ReadImage(str(files[-2])) > 0, sitk.sitkFloat32), spacing_mm)
            tumour_f = resample(sitk.Cast(sitk.ReadImage(str(files[-1])) > 0, sitk.sitkFloat32), spacing_mm)
            brain = binary_image(sitk.GetArrayViewFromImage(brain_f) > 0.5, brain_f)
            axis = axial_array_axis(brain)
            other = tuple(a for a in range(3) if a != axis)
            z_mm = float(brain.GetSpacing()[2 - axis])
            runs = tumour_free_slabs((sitk.GetArrayViewFromImage(tumour_f) > 0).any(axis=other),
                                     (sitk.GetArrayViewFromImage(brain) > 0).any(axis=other),
                                     int(math.ceil(MARGIN_MM / z_mm)), int(math.ceil(MIN_SLAB_MM / z_mm)))
            label = binary_image(sitk.GetArrayViewFromImage(tumour_f) > 0.5, tumour_f)
            _write_case(tmp, "Ts", patient, channels, brain)
            (tmp / "labelsTs").mkdir(exist_ok=True)
            sitk.WriteImage(label, str(tmp / "labelsTs" / f"{patient}.nii.gz"), useCompression=True)
            voxel_ml = float(np.prod(brain.GetSpacing())) / 1000.0
            brain_per_slice = (sitk.GetArrayViewFromImage(brain) > 0).sum(axis=other) * voxel_ml
            small = [r for r in runs if brain_per_slice[r[0]:r[1]].sum() < MIN_BRAIN_ML]
            if small:   # the engine refuses brain masks under MIN_BRAIN_ML as broken
                logger.info("  %s: slab(s) %s dropped: < %g ml of brain", patient, small, MIN_BRAIN_ML)
            runs = [r for r in runs if r not in small]
            slabs[patient], info[patient] = [], []
            for k, (first, stop) in enumerate(runs):
                case = f"{patient}_slab{k}"
                _write_case(tmp, "Tr", case, [crop_axial(c, axis, first, stop) for c in channels],
                            crop_axial(brain, axis, first, stop))
                slabs[patient].append(case)
                info[patient].append({"case": case, "slices": [first, stop], "thickness_mm": (stop - first) * z_mm})
            logger.info("  %s: %d tumour voxels; slabs %s", patient, int(sitk.GetArrayViewFromImage(label).sum()),
                        [(a, b) for a, b in runs])
        folds = make_folds(slabs, num_folds)
        write_json(tmp / FOLDS_FILE, folds)
        write_json(tmp / SPLITS_FILE, [{"train": f["train"], "val": f["val"]} for f in folds])
        n_slabs = sum(len(v) for v in slabs.values())
        write_dataset_json(
            tmp, name, sequences, n_slabs, len(slabs),
            description=("BraTS 2015 gliomas (BRATS 2013 patients 1-6), healthy-slice protocol: imagesTr = the "
                         "tumour-free axial slabs of every patient (the expert labels chose these slices and are used "
                         "for nothing else), imagesTs = whole volumes with whole-tumour labels; patient-level folds "
                         "in folds.json / splits.json"),
            licence=LICENCE, reference=REFERENCE, source=str(source), spacing_mm=spacing_mm,
            slab_rule=(f"contiguous axial slices with brain and no tumour within {MARGIN_MM:g} mm, >= {MIN_SLAB_MM:g} "
                       f"mm thick, >= {MIN_BRAIN_ML:g} ml of brain"),
            slabs=info)
    out = raw_root / f"Dataset{dataset_id:03d}_{name}"
    logger.info("BraTS slabs %s: %d training slabs of %d patients, %d test volumes, %d folds -> %s in %.1f s",
                "+".join(sequences), n_slabs, len(slabs), len(slabs), len(folds), out, time.perf_counter() - start)
    return out


def install_splits(raw_folder: Path, preprocessed_root: Path) -> Path:
    """Copy the raw dataset's patient-level splits.json to where itermask_train reads it."""
    raw_folder = Path(raw_folder)
    target = Path(preprocessed_root) / raw_folder.name / SPLITS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, read_json(raw_folder / SPLITS_FILE))
    return target


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = base_parser("Convert BraTS 2015 FLAIR/T1c into the healthy-slab datasets 41 (FLAIR) and 42 (FLAIR+T1c).",
                    "the brats2015_flair_t1c folder")
    p.add_argument("-d", "--dataset-id", type=int, action="append", choices=sorted(DATASETS),
                   help="dataset(s) to write (repeatable; default: both)")
    p.add_argument("--spacing", type=float, default=SPACING_MM, help="isotropic target spacing in mm (0: keep 1 mm)")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    from itermask_auto import paths
    for dataset_id in args.dataset_id or sorted(DATASETS):
        folder = convert(args.source, args.raw, dataset_id, args.spacing or None)
        try:
            logger.info("patient-level folds installed at %s", install_splits(folder, paths.preprocessed_root()))
        except Exception as e:  # noqa: BLE001 - ITERMASK_preprocessed unset: the splits stay in the raw folder
            logger.warning("splits.json not installed (%s); copy %s to $ITERMASK_preprocessed/%s/ before training",
                           e, folder / SPLITS_FILE, folder.name)


if __name__ == "__main__":
    main()
