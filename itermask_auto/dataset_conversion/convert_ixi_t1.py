"""IXI T1 (Hammersmith, 2 mm, full head) -> DatasetXXX_IXI_T1: healthy training images (+ brain masks).

Source layout: images/IXIxxx-HH-yyyy_T1.nii.gz, brainmasks/IXIxxx-HH-yyyy_brainmask.nii.gz (binary uint8, same grid).
Images are copied byte-for-byte (uint8 with scl_slope: the reader applies the slope)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from itermask_auto.dataset_conversion._common import (base_parser, copy_image, image_name, resolve_raw_root,
                                                      same_grid, setup_logging, staged_dataset, write_dataset_json)
from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_ID = 1
NAME = "IXI_T1"
SUFFIX = "_T1.nii.gz"


def convert(source: Path, raw_root: Optional[Path] = None, dataset_id: int = DEFAULT_ID, with_masks: bool = True,
            limit: Optional[int] = None) -> Path:
    """Convert the first `limit` subjects (all by default, sorted by name)."""
    source, raw_root = Path(source), resolve_raw_root(raw_root)
    start = time.perf_counter()
    images = sorted((source / "images").glob(f"*{SUFFIX}"))
    if not images:
        raise InputError(source / "images", f"no *{SUFFIX} files: is this the ixi_t1_2mm folder?")
    images = images[:limit] if limit is not None else images
    with staged_dataset(raw_root, dataset_id, NAME) as tmp:
        for src in images:
            case = src.name[: -len(SUFFIX)]
            copy_image(src, tmp / "imagesTr" / image_name(case, 0))
            if with_masks:
                mask = source / "brainmasks" / f"{case}_brainmask.nii.gz"
                if not mask.is_file():
                    raise InputError(mask, f"brain mask of {case} not found")
                if not same_grid(src, mask):
                    raise InputError(mask, f"brain mask is not on the grid of {src.name}")
                copy_image(mask, tmp / "masksTr" / f"{case}.nii.gz")
        write_dataset_json(tmp, NAME, ["T1"], len(images), 0,
                           description="IXI healthy adults, Hammersmith Hospital Philips 3T T1, 2 mm, native space, "
                                       "not skull-stripped"
                                       + ("; masksTr: automatic brain masks" if with_masks else ""),
                           licence="CC BY-SA 3.0",
                           reference="IXI dataset, https://brain-development.org/ixi-dataset/",
                           source=str(source))
    folder = raw_root / f"Dataset{dataset_id:03d}_{NAME}"
    logger.info("IXI T1: %d training cases%s -> %s in %.1f s", len(images), " with masks" if with_masks else "",
                folder, time.perf_counter() - start)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = base_parser("Convert IXI T1 (2 mm) into a raw training dataset.", "the ixi_t1_2mm folder")
    p.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_ID)
    p.add_argument("--with-masks", dest="with_masks", action="store_true", default=True,
                   help="copy brain masks to masksTr (default)")
    p.add_argument("--no-masks", dest="with_masks", action="store_false", help="withhold the brain masks")
    p.add_argument("--limit", type=int, default=None, help="only the first N subjects")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    convert(args.source, args.raw, args.dataset_id, with_masks=args.with_masks, limit=args.limit)


if __name__ == "__main__":
    main()
