"""`itermask_synthetic`: a new raw test dataset of synthetic anomalies made from healthy scans.

    itermask_synthetic SOURCE --id 101 [--name NAME] [--kinds lesion slab bias spike ghosting] [--seed 0]
                       [--lesion_masks DIR|FILE|auto|none] [--blob_radius MIN MAX] [--n_lesions MIN MAX]
                       [--contrast MIN MAX] [--split auto|Tr|Ts] [--cases ...] [--limit N]
    (the same as: python -m itermask_auto.evaluation.synthetic ...)

SOURCE: a raw dataset folder, or an ID / name under $ITERMASK_raw. Every selected case x kind becomes one test case
`CASE_KIND` in $ITERMASK_raw/DatasetXXX_NAME: imagesTs/CASE_KIND_000c.nii.gz (float32, geometry copied exactly
from the source image), labelsTs/CASE_KIND.nii.gz (uint8), masksTs/CASE_KIND.nii.gz (the source's brain mask,
copied, when it has one), dataset.json and synthetic_manifest.{json,csv} (per case: source case, kind, parameters,
seed, label voxels and the volume-level `anomalous` flag). Lesions: synthetic_lesions.py (shapes from real lesion
masks, else blobs; the intensity rule is documented there); artefacts: synthetic_artifacts.py (slab labelled by
its brain region; bias/spike/ghosting have an empty voxel label and are anomalous at volume level only).
Deterministic: case c, kind k uses numpy's generator seeded with (seed, crc32(c), index of k)."""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto import paths
from itermask_auto.dataset_conversion._common import copy_image, image_name, staged_dataset, write_dataset_json
from itermask_auto.evaluation.synthetic_artifacts import ARTIFACTS
from itermask_auto.evaluation.synthetic_lesions import (BLOB_RADIUS_MM, LesionComponent, insert_lesions,
                                                        load_lesion_components)
from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_channels
from itermask_auto.utilities.atomic import atomic_path, write_json
from itermask_auto.utilities.dataset import find_dataset, list_cases, load_dataset_json

logger = logging.getLogger(__name__)

KINDS = ("lesion", "slab", "bias", "spike", "ghosting")
MANIFEST = "synthetic_manifest"
MSLUB_MASKS = Path("mslub_mni") / "lesion_masks_all_patients"


def shared_data_dir() -> Path:
    """$ITERMASK_SHARED_DATA, else ../shared/data next to the repository (as tests/conftest.py)."""
    env = os.environ.get("ITERMASK_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def find_lesion_masks(spec: Optional[str | Path | Sequence[Path]] = "auto") -> List[Path]:
    """'auto': the 30 MSLUB expert masks in the shared data if present (else none); a folder: its *.nii.gz; a file;
    a list of files; None / 'none': no real masks (blobs)."""
    if spec is None or str(spec) == "none":
        return []
    if isinstance(spec, (list, tuple)):
        return [Path(p) for p in spec]
    if str(spec) == "auto":
        folder = shared_data_dir() / MSLUB_MASKS
        return sorted(folder.glob("*.nii.gz")) if folder.is_dir() else []
    path = Path(spec)
    if path.is_dir():
        found = sorted(path.glob("*.nii.gz"))
        if not found:
            raise InputError(path, "no *.nii.gz lesion masks in this folder")
        return found
    if not path.is_file():
        raise InputError(path, "lesion mask file or folder not found")
    return [path]


def case_rng(seed: int, case: str, kind: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(case.encode()), KINDS.index(kind)])


def corrupt(channels: Sequence[np.ndarray], channel_names: Sequence[str], brain: np.ndarray, reference: sitk.Image,
            kind: str, seed: int, case: str, components: Optional[Sequence[LesionComponent]] = None,
            n_lesions: Tuple[int, int] = (2, 6), contrast: Tuple[float, float] = (0.3, 0.5),
            blob_radius: Tuple[float, float] = BLOB_RADIUS_MM) -> Tuple[List[np.ndarray], np.ndarray, Dict]:
    """One synthetic case from zyx arrays: (changed channels, voxel label zyx bool, manifest parameters)."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind '{kind}' ({' | '.join(KINDS)})")
    brain = brain.astype(bool)
    if kind == "lesion":
        out, label, params = insert_lesions(channels, channel_names, brain, reference, case_rng(seed, case, kind),
                                            components, n_lesions, contrast, blob_radius_mm=blob_radius)
    else:
        spacing = reference.GetSpacing()[::-1]
        out, label, params = [], np.zeros(brain.shape, bool), {}
        for x in channels:   # the same draws for every channel: one artefact seen in all sequences
            changed, label, params = ARTIFACTS[kind](x, brain, spacing, case_rng(seed, case, kind))
            out.append(changed)
    for i, (src, new) in enumerate(zip(channels, out)):
        if float(np.min(src)) >= 0:   # magnitude images stay non-negative
            out[i] = np.maximum(new, 0).astype(np.float32)
    return out, label, params


def _source_split(folder: Path, split: str) -> str:
    if split != "auto":
        return split
    ts = folder / "imagesTs"
    return "Ts" if ts.is_dir() and any(ts.glob("*_0000*")) else "Tr"


def _brain(images: List[sitk.Image], paths_: List[Path], mask: Optional[Path]) -> np.ndarray:
    from itermask_auto.preprocessing.brain_mask import obtain_brain_mask
    return obtain_brain_mask(images, paths_, mask)[0]


def _write_csv(path: Path, rows: List[Dict]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["case", "source_case", "kind", "anomalous", "label_voxels", "seed", "params"])
    for r in rows:
        writer.writerow([r["case"], r["source_case"], r["kind"], r["anomalous"], r["label_voxels"],
                         json.dumps(r["seed"]), json.dumps(r["params"], sort_keys=True)])
    with atomic_path(path, ".csv") as tmp:
        Path(tmp).write_text(buf.getvalue())


def make_synthetic_dataset(source: str | int | Path, dataset_id: int, name: Optional[str] = None,
                           kinds: Sequence[str] = ("lesion",), seed: int = 0, raw_root: Optional[Path] = None,
                           split: str = "auto", cases: Optional[Sequence[str]] = None, limit: Optional[int] = None,
                           lesion_masks: Optional[str | Path | Sequence[Path]] = "auto",
                           n_lesions: Tuple[int, int] = (2, 6), contrast: Tuple[float, float] = (0.3, 0.5),
                           blob_radius: Tuple[float, float] = BLOB_RADIUS_MM) -> Path:
    """Write the synthetic dataset (all-or-nothing) and return its folder; `blob_radius` (mm) sizes the generated
    blobs (lesion_masks='none'; 10-25 mm gives tumour-sized lesions)."""
    raw_root = Path(raw_root) if raw_root is not None else paths.raw_root()
    src = Path(source) if Path(str(source)).is_dir() else find_dataset(raw_root, source)
    meta = load_dataset_json(src)
    part = _source_split(src, split)
    names = [meta["channel_names"][str(i)] for i in range(len(meta["channel_names"]))]
    found = list_cases(src / f"images{part}", len(names), meta["file_ending"])
    selected = sorted(found) if cases is None else list(cases)
    missing = [c for c in selected if c not in found]
    if missing:
        raise InputError(src / f"images{part}", f"case(s) not found: {missing[:5]}")
    selected = selected[:limit] if limit is not None else selected
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown synthetic kind(s) {bad} ({' | '.join(KINDS)})")
    if not 0 < blob_radius[0] <= blob_radius[1]:
        raise ValueError(f"blob radius range {blob_radius[0]:g}-{blob_radius[1]:g} mm: need 0 < MIN <= MAX")
    mask_files = find_lesion_masks(lesion_masks) if "lesion" in kinds else []
    components = load_lesion_components(mask_files) if mask_files else None
    if "lesion" in kinds and not components:
        logger.info("no real lesion masks: lesion shapes are generated blobs")
    name = name or f"{src.name.split('_', 1)[1]}_Synthetic"
    blobs = f"blobs of radius {blob_radius[0]:g}-{blob_radius[1]:g} mm"
    shapes = f"real masks ({blobs} where none fits a brain)" if components else blobs
    lesion_params = {"lesion_masks": [str(p) for p in mask_files], "n_lesion_components": len(components or []),
                     "n_lesions": list(n_lesions), "contrast": list(contrast),
                     "blob_radius_mm": list(blob_radius)} if "lesion" in kinds else {}
    raw_root.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []
    with staged_dataset(raw_root, dataset_id, name) as tmp:
        for sub in ("imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for case in selected:
            images = read_channels(found[case])
            mask = src / f"masks{part}" / f"{case}{meta['file_ending']}"
            mask = mask if mask.is_file() else None
            brain = _brain(images, found[case], mask)
            arrays = [sitk.GetArrayFromImage(im).astype(np.float32) for im in images]
            for kind in kinds:
                out_case = f"{case}_{kind}"
                changed, label, params = corrupt(arrays, names, brain, images[0], kind, seed, case, components,
                                                 n_lesions, contrast, blob_radius)
                for ch, (array, ref) in enumerate(zip(changed, images)):
                    im = sitk.GetImageFromArray(array.astype(np.float32))
                    im.CopyInformation(ref)
                    sitk.WriteImage(im, str(tmp / "imagesTs" / image_name(out_case, ch)), useCompression=True)
                lab = sitk.GetImageFromArray(label.astype(np.uint8))
                lab.CopyInformation(images[0])
                sitk.WriteImage(lab, str(tmp / "labelsTs" / f"{out_case}{meta['file_ending']}"), useCompression=True)
                if mask is not None:
                    copy_image(mask, tmp / "masksTs" / f"{out_case}{meta['file_ending']}")
                rows.append({"case": out_case, "source_case": case, "kind": kind, "anomalous": True,
                             "label_voxels": int(label.sum()), "seed": [int(seed), zlib.crc32(case.encode()),
                                                                        KINDS.index(kind)], "params": params})
                logger.info("%s: %s, %d label voxels", out_case, kind, int(label.sum()))
        write_dataset_json(tmp, name, names, 0, len(rows),
                           description=f"synthetic anomalies ({', '.join(kinds)}) on healthy {src.name} "
                                       f"images{part}, seed {seed}; "
                                       f"{'lesion shapes: ' + shapes + '; ' if 'lesion' in kinds else ''}"
                                       f"labelsTs: lesion / slab "
                                       f"region, empty for global artefacts (volume-level, see {MANIFEST}.json)",
                           licence=meta.get("licence", "as the source dataset"),
                           reference=f"itermask_auto.evaluation.synthetic from {src.name}",
                           source=str(src))
        write_json(tmp / f"{MANIFEST}.json", {
            "source": str(src), "split": part, "seed": int(seed), "kinds": list(kinds),
            **lesion_params,
            "label_rule": "lesion/slab: affected brain voxels; bias/spike/ghosting: empty, anomalous at volume level",
            "cases": {r["case"]: {k: v for k, v in r.items() if k != "case"} for r in rows}})
        _write_csv(tmp / f"{MANIFEST}.csv", rows)
    final = raw_root / f"Dataset{int(dataset_id):03d}_{name}"
    logger.info("wrote %s: %d synthetic cases from %d source case(s)", final, len(rows), len(selected))
    return final


SYNTHETIC_EPILOG = """\
kinds:
  lesion    --n_lesions components shaped by real MS lesion masks (or blobs)
            with a local intensity change; voxel label = the lesions
  slab      a band of changed intensity; voxel label = the band in the brain
  bias      a smooth multiplicative field (empty label, anomalous as a volume)
  spike     a k-space spike: stripes (empty label, anomalous as a volume)
  ghosting  phase errors: shifted ghost heads (empty label, anomalous as a volume)

exit codes:
  0  dataset written
  1  error (source not found, unreadable file): one line naming it;
     nothing is written
  2  command-line error"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="itermask_synthetic", epilog=SYNTHETIC_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a raw test dataset of synthetic anomalies (lesions from real lesion masks or blobs; slab, "
                    "bias, spike, ghosting artefacts) made from the healthy scans of a raw dataset: imagesTs, "
                    "labelsTs, masksTs, dataset.json and a manifest.")
    p.add_argument("source", help="raw dataset folder, or dataset ID / name under $ITERMASK_raw")
    p.add_argument("--id", type=int, required=True, help="ID of the new dataset")
    p.add_argument("--name", default=None, help="name of the new dataset (default: SOURCE_NAME_Synthetic)")
    p.add_argument("--kinds", nargs="+", default=["lesion"], choices=KINDS, metavar="KIND",
                   help=f"anomaly kinds, one case per source case and kind: {', '.join(KINDS)} (default: lesion)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed and source give the same files (default: 0)")
    p.add_argument("--raw", type=Path, default=None, help="raw data root (default: $ITERMASK_raw)")
    p.add_argument("--split", default="auto", choices=("auto", "Tr", "Ts"),
                   help="source images: imagesTs if it has cases (auto, the default), else imagesTr")
    p.add_argument("--cases", nargs="+", default=None, help="only these source cases (default: all)")
    p.add_argument("--limit", type=int, default=None, help="only the first N source cases (default: all)")
    p.add_argument("--lesion_masks", default="auto",
                   help="folder or file of binary lesion masks; 'auto' (default) = the MSLUB masks in "
                        "$ITERMASK_SHARED_DATA or ../shared/data when present; 'none' = generated blobs")
    p.add_argument("--n_lesions", type=int, nargs=2, default=(2, 6), metavar=("MIN", "MAX"),
                   help="number of lesion components drawn per lesion case (default: 2 6)")
    p.add_argument("--contrast", type=float, nargs=2, default=(0.3, 0.5), metavar=("MIN", "MAX"),
                   help="|relative change| of the lesion level against the local white-matter-ish level "
                        "(default: 0.3 0.5)")
    p.add_argument("--blob_radius", type=float, nargs=2, default=BLOB_RADIUS_MM, metavar=("MIN", "MAX"),
                   help="radius range (mm) of generated blobs, used without real masks; 10 25 = tumour-sized "
                        f"(default: {BLOB_RADIUS_MM[0]:g} {BLOB_RADIUS_MM[1]:g})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        make_synthetic_dataset(args.source, args.id, args.name, args.kinds, args.seed, args.raw, args.split,
                               args.cases, args.limit, args.lesion_masks, tuple(args.n_lesions), tuple(args.contrast),
                               tuple(args.blob_radius))
    except (InputError, FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
