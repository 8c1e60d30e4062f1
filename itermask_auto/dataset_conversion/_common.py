"""Helpers shared by the dataset converters and the phantom writer: staged (all-or-nothing) dataset folders,
byte-for-byte image copies, binary masks, dataset.json, and the common CLI arguments."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from itermask_auto import paths
from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_image, same_geometry
from itermask_auto.utilities.atomic import write_json
from itermask_auto.utilities.dataset import DATASET_RE, dataset_folder_name

logger = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"


def resolve_raw_root(raw_root: Optional[Path]) -> Path:
    root = Path(raw_root) if raw_root is not None else paths.raw_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def staged_dataset(raw_root: Path, dataset_id: int, name: str) -> Iterator[Path]:
    """Yield an empty hidden temp folder; on success it replaces raw_root/DatasetXXX_name as a whole.

    A crash leaves the previous dataset (or nothing), never half a dataset. Another folder with the same ID but a
    different name would make the ID ambiguous, so that is refused."""
    raw_root = Path(raw_root)
    final = raw_root / dataset_folder_name(dataset_id, name)
    for other in raw_root.iterdir():
        m = DATASET_RE.match(other.name)
        if other.is_dir() and m and int(m.group(1)) == int(dataset_id) and other.name != final.name:
            raise InputError(other, f"dataset ID {dataset_id} is already used by this folder; remove it or pick "
                                    f"another ID for {final.name}")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{final.name}_", dir=raw_root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset should get ordinary permissions
    try:
        yield tmp
        old = None
        if final.exists():  # a directory cannot be os.replace'd onto a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".old_{final.name}_", dir=raw_root))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(path, "cannot be read as an image") from None
    return reader


def same_grid(a: Path, b: Path) -> bool:
    """Compare two files' grids from their headers only (size, spacing, origin, direction)."""
    ra, rb = header(a), header(b)
    if ra.GetSize() != rb.GetSize():
        return False
    ia, ib = sitk.Image([2, 2, 2], sitk.sitkUInt8), sitk.Image([2, 2, 2], sitk.sitkUInt8)
    for im, r in ((ia, ra), (ib, rb)):
        if r.GetDimension() != 3:
            return False
        im.SetSpacing(r.GetSpacing())
        im.SetOrigin(r.GetOrigin())
        im.SetDirection(r.GetDirection())
    return same_geometry(ia, ib)


def copy_image(src: Path, dst: Path) -> str:
    """Copy byte-for-byte when src already is a 3-D single-component .nii.gz; else read (validated) and rewrite."""
    r = header(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.name.endswith(FILE_ENDING) and r.GetDimension() == 3 and r.GetNumberOfComponents() == 1:
        shutil.copyfile(src, dst)
        return "copied"
    sitk.WriteImage(read_image(src), str(dst), useCompression=True)
    return "rewritten"


def binary_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(reference)
    return out


def write_binary(src: Path, dst: Path, reference: Optional[sitk.Image] = None) -> int:
    """Write src > 0 as uint8 {0,1} on src's grid (checked against `reference` if given); return the voxel count."""
    image = sitk.ReadImage(str(src))
    if reference is not None and not same_geometry(image, reference):
        raise InputError(src, "not on the grid of its image (size/spacing/origin/direction differ)")
    array = sitk.GetArrayViewFromImage(image) > 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(binary_image(array, image), str(dst), useCompression=True)
    return int(array.sum())


def nonzero_brain_mask(image: sitk.Image) -> sitk.Image:
    """Brain mask of a skull-stripped image: voxels != 0, holes filled (dark tissue can be exactly 0 inside)."""
    array = ndimage.binary_fill_holes(sitk.GetArrayViewFromImage(image) != 0)
    return binary_image(array, image)


def write_dataset_json(folder: Path, name: str, channels: Sequence[str], num_training: int, num_test: int,
                       description: str, licence: str, reference: str, **extra) -> Dict:
    meta = {"name": name, "channel_names": {str(i): c for i, c in enumerate(channels)},
            "file_ending": FILE_ENDING, "numTraining": int(num_training), "numTest": int(num_test),
            "description": description, "licence": licence, "reference": reference, **extra}
    write_json(Path(folder) / "dataset.json", meta)
    return meta


def image_name(case: str, channel: int) -> str:
    return f"{case}_{channel:04d}{FILE_ENDING}"


def base_parser(description: str, source_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("source", type=Path, help=source_help)
    p.add_argument("--raw", type=Path, default=None, help="raw data root (default: $ITERMASK_raw)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
