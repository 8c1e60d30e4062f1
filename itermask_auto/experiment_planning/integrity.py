"""`--verify_dataset_integrity`: read every file of the raw dataset once and check it fits the others."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

from itermask_auto.imageio.reader import read_channels, read_mask
from itermask_auto.utilities.dataset import list_cases
from itermask_auto.utilities.parallel import run_parallel

logger = logging.getLogger(__name__)


def _check_case(channel_paths: List[Path], mask_path: Path | None) -> None:
    images = read_channels(channel_paths)
    if mask_path is not None:
        read_mask(mask_path, images[0])


def verify_integrity(raw_folder: Path, meta: Dict, cases: Dict[str, List[Path]], masks: Dict[str, Path],
                     num_processes: int = 1) -> None:
    """Raise (BatchError of InputErrors) on the first pass over all files if anything is wrong."""
    jobs = [(paths, masks.get(case)) for case, paths in sorted(cases.items())]
    ts = raw_folder / "imagesTs"
    if ts.is_dir():  # test images: same channel naming; their labels are NOT read here (evaluation only)
        test_cases = list_cases(ts, len(meta["channel_names"]), meta["file_ending"])
        jobs += [(paths, None) for _, paths in sorted(test_cases.items())]
    run_parallel(_check_case, jobs, num_processes, desc="verify")
    logger.info("dataset integrity verified: %d cases", len(jobs))
