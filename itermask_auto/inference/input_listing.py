"""What `itermask_predict` reads from its input folder: cases as channel files (CASE_0000.nii.gz, .nii, .mha,
.nrrd, whatever the training file ending) or as DICOM series folders (one folder per case).

Everything else is not an input: skipped with one log line and never counted as a failed case; the run's own
outputs (when -o is the input folder or inside it) are skipped silently. A file that is an image but cannot be
matched to a case (a misnamed scan, a missing or extra channel) is a failure naming the file."""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from itermask_auto.imageio.dicom import DicomSeries, find_series, holds_dicom, is_dicom_file
from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)

INPUT_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")          # longest first: ".nii.gz" before ".nii"
IMAGE_LIKE_ENDINGS = INPUT_ENDINGS + (".dcm", ".mhd", ".nhdr", ".img", ".hdr")
CHANNEL_RE = re.compile(r"^(.+)_(\d{4})(" + "|".join(re.escape(e) for e in INPUT_ENDINGS) + r")$")
OUTPUT_RE = re.compile(r"^.+_(anomaly|seg)(" + "|".join(re.escape(e) for e in INPUT_ENDINGS) + r")$")
OUTPUT_FOLDERS_RE = re.compile(r"^(qc|.+_masks)$")
NAMING_HINT = "not named CASE_XXXX.nii.gz (nnU-Net channel naming; .nii, .mha and .nrrd are accepted too)"


@dataclass
class InputCase:
    """One case to predict. A DICOM channel is the first file of its series (imageio reads the whole series)."""
    case: str
    channels: List[Path]
    source_files: List[Path]              # every file the case is read from: the input checksum covers them all
    described: List[str] = field(default_factory=list)   # one line per channel for CASE.json "input_files"
    dicom: bool = False
    _sha256: Optional[str] = field(default=None, repr=False)

    @property
    def ending(self) -> str:
        """File ending of channel 0 (for --output_format input); DICOM -> NIfTI."""
        name = self.channels[0].name
        return next((e for e in INPUT_ENDINGS if name.endswith(e) and not self.dicom), ".nii.gz")

    def checksum(self) -> str:
        """sha256 over the channels' files (content only, in channel order): --continue redoes a case whose
        outputs were computed from other input bytes."""
        if self._sha256 is not None:
            return self._sha256
        total = hashlib.sha256()
        for path in self.source_files:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            total.update(digest.digest())
        self._sha256 = total.hexdigest()
        return self._sha256


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def list_prediction_inputs(input_dir: Path, channel_names: Sequence[str], output_dir: Optional[Path] = None,
                           problems: Optional[Dict[str, str]] = None,
                           dicom_channels: Optional[Sequence[str]] = None) -> Dict[str, InputCase]:
    """Map case id -> InputCase. Problems of single cases/files go into `problems` ({case or file: one line})."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder not found")
    problems = {} if problems is None else problems
    own_folder = output_dir is not None and Path(output_dir).resolve() == input_dir.resolve()
    files: Dict[str, Dict[int, List[Path]]] = {}
    loose_dicom: List[Path] = []
    dicom_folders: List[Path] = []
    for p in sorted(input_dir.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if output_dir is not None and _inside(Path(output_dir), p):
                continue  # the output folder (or its parent) inside the input folder: this run's own outputs
            if own_folder and OUTPUT_FOLDERS_RE.match(p.name):
                continue
            if holds_dicom(p):
                dicom_folders.append(p)
            else:
                logger.warning("%s: skipped, a folder without DICOM files is not an input", p)
            continue
        m = CHANNEL_RE.match(p.name)
        if m:
            files.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(p)
        elif OUTPUT_RE.match(p.name) or p.name.endswith((".json", ".csv")):
            if not own_folder:  # this run's own outputs are not worth a line
                logger.warning("%s: skipped, %s", p, "named like an itermask_predict output, not an input"
                               if OUTPUT_RE.match(p.name) else "not an input image")
        elif is_dicom_file(p):
            loose_dicom.append(p)
        elif p.name.lower().endswith(IMAGE_LIKE_ENDINGS):
            problems[p.name] = str(InputError(p, NAMING_HINT))
        else:
            logger.warning("%s: skipped, not an input image (%s)", p, NAMING_HINT.split("(")[1].rstrip(")"))
    cases = _file_cases(files, len(channel_names), input_dir, problems)
    folders = dicom_folders + ([input_dir] if loose_dicom else [])  # -i pointing at one series folder
    for folder in folders:
        try:
            case = _dicom_case(folder, channel_names, dicom_channels)
        except InputError as e:
            problems[folder.name] = str(e)
            continue
        if case.case in cases:
            problems[case.case] = str(InputError(folder, f"case '{case.case}' is given twice (files and DICOM)"))
            del cases[case.case]
            continue
        cases[case.case] = case
    return cases


def _file_cases(found: Dict[str, Dict[int, List[Path]]], num_channels: int, input_dir: Path,
                problems: Dict[str, str]) -> Dict[str, InputCase]:
    cases: Dict[str, InputCase] = {}
    expected = set(range(num_channels))
    for case, channels in sorted(found.items()):
        twice = {c: paths for c, paths in channels.items() if len(paths) > 1}
        if twice:
            c, paths = next(iter(twice.items()))
            names = ", ".join(p.name for p in paths)
            problems[case] = str(InputError(paths[0], f"channel {c} is given twice ({names})"))
            continue
        if set(channels) != expected:
            missing, extra = sorted(expected - set(channels)), sorted(set(channels) - expected)
            ending = CHANNEL_RE.match(next(iter(channels.values()))[0].name).group(3)
            what = (f"missing channel file(s) {[f'{case}_{c:04d}{ending}' for c in missing]}" if missing
                    else f"unexpected channel(s) {extra} (dataset.json names {num_channels})")
            path = channels[extra[0]][0] if not missing else input_dir / f"{case}_{missing[0]:04d}{ending}"
            problems[case] = str(InputError(path, what))
            continue
        paths = [channels[c][0] for c in range(num_channels)]
        cases[case] = InputCase(case, paths, paths, [p.name for p in paths])
    return cases


def _dicom_case(folder: Path, channel_names: Sequence[str], patterns: Optional[Sequence[str]]) -> InputCase:
    """A DICOM case: channel k is the series whose description contains patterns[k] (default: the channel name
    from dataset.json, case-insensitive); a single series is channel 0 of a single-channel model."""
    try:
        series = find_series(folder)
    except RuntimeError as e:
        raise InputError(folder, f"DICOM folder cannot be scanned ({str(e).strip().splitlines()[-1][:120]})") from None
    if not series:
        raise InputError(folder, "holds DICOM files but no readable DICOM series")
    if len(channel_names) == 1 and len(series) == 1:
        chosen = series
    else:
        chosen = _match_series(folder, series, list(patterns or channel_names), channel_names)
    return InputCase(folder.name, [s.files[0] for s in chosen], [f for s in chosen for f in s.files],
                     [s.label() for s in chosen], dicom=True)


def _match_series(folder: Path, series: List[DicomSeries], patterns: List[str],
                  channel_names: Sequence[str]) -> List[DicomSeries]:
    if len(patterns) != len(channel_names):
        raise InputError(folder, f"-dicom_channels gives {len(patterns)} pattern(s), the model has "
                                 f"{len(channel_names)} channel(s) ({list(channel_names)})")
    found = ", ".join(f"'{s.description}'" for s in series)
    chosen = []
    for k, (pattern, name) in enumerate(zip(patterns, channel_names)):
        hits = [s for s in series if pattern.lower() in s.description.lower()]
        if len(hits) != 1:
            how = "no" if not hits else f"{len(hits)}"
            raise InputError(folder, f"{how} DICOM series for channel {k} ({name}): series descriptions containing "
                                     f"'{pattern}' among {found}; name the series with -dicom_channels")
        chosen.append(hits[0])
    return chosen
