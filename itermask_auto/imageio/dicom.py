"""DICOM series through SimpleITK's GDCM series reader: find the series of a case folder, read one as a 3-D image.

A case given as DICOM is a folder (its files directly in it, or one subfolder per series). A series is handed to
the rest of the pipeline as the path of its first file: `read_series_of(file)` reads the whole series that file
belongs to, so a channel stays one picklable path (worker processes) that names a real file in messages."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import SimpleITK as sitk

from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)

PREAMBLE_BYTES = 128           # a DICOM Part-10 file: 128-byte preamble, then "DICM"
SERIES_DESCRIPTION = "0008|103e"
SERIES_INSTANCE_UID = "0020|000e"


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a DICOM Part-10 file (magic bytes), whatever its name (DICOM exports often have no extension)."""
    try:
        with open(path, "rb") as f:
            head = f.read(PREAMBLE_BYTES + 4)
    except OSError:
        return False
    return len(head) == PREAMBLE_BYTES + 4 and head[PREAMBLE_BYTES:] == b"DICM"


@dataclass(frozen=True)
class DicomSeries:
    folder: Path
    uid: str
    description: str
    files: Tuple[Path, ...]    # in the series reader's slice order

    def label(self) -> str:
        return f"{self.folder.name}/ (DICOM series '{self.description}', {len(self.files)} files)"


def _tag(path: Path, key: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _series_in(folder: Path) -> List[DicomSeries]:
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if files:
            found.append(DicomSeries(folder, uid, _tag(files[0], SERIES_DESCRIPTION), files))
    return found


def find_series(case_folder: Path) -> List[DicomSeries]:
    """Every DICOM series in `case_folder` and its subfolders (a folder per series is a common export layout)."""
    series: List[DicomSeries] = []
    for folder, dirs, _ in os.walk(case_folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        series += _series_in(Path(folder))
    return series


def holds_dicom(folder: Path) -> bool:
    """Whether `folder` (or a subfolder) holds at least one DICOM file; cheap: stops at the first one."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(is_dicom_file(Path(root) / f) for f in files if not f.startswith(".")):
            return True
    return False


def read_series_of(path: Path) -> sitk.Image:
    """The whole series the DICOM file `path` belongs to, read with sitk.ImageSeriesReader."""
    path = Path(path)
    try:
        uid = _tag(path, SERIES_INSTANCE_UID)
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), uid) if uid else ()
    except RuntimeError as e:
        raise InputError(path, f"cannot be read as DICOM ({_first_error_line(e)})") from None
    if str(path) not in files:  # no series UID, or GDCM does not list this file: read it on its own
        files = (str(path),)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise InputError(path.parent, f"DICOM series of {path.name} ({len(files)} files) cannot be read "
                                      f"({_first_error_line(e)})") from None


def _first_error_line(error: Exception) -> str:
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "rror" in ln), lines[-1] if lines else type(error).__name__)
    return detail[:160]
