"""Where a case's brain mask comes from: a given mask file, the scan itself when it is already skull-stripped,
or the offline skull-stripper (deepbet) otherwise."""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_mask

logger = logging.getLogger(__name__)

MIN_BRAIN_ML = 50.0  # far below any real brain (~1,100–1,500 ml); smaller means the mask is broken


def obtain_brain_mask(images: Sequence[sitk.Image], paths: Sequence[Path], mask_path: Optional[Path] = None,
                      stripper=None) -> Tuple[np.ndarray, str, str]:
    """Return (brain mask as a SimpleITK-order bool array, source, reason).

    source is 'given' | 'skull_stripped_input' | 'deepbet'. `stripper` is a SkullStripper (created on demand)."""
    from itermask_auto.preprocessing import skull_strip  # heavy import (torch model) only when needed

    reference = images[0]
    if mask_path is not None:
        mask = sitk.GetArrayFromImage(read_mask(mask_path, reference)) > 0
        source, reason = "given", f"mask file {Path(mask_path).name}"
    else:
        array = sitk.GetArrayViewFromImage(reference)
        stripped, reason = skull_strip.looks_skull_stripped(np.asarray(array), spacing=reference.GetSpacing()[::-1])
        if stripped:
            mask = skull_strip.brain_mask_from_stripped(np.asarray(array))
            source = "skull_stripped_input"
        else:
            stripper = stripper or default_stripper()
            mask = sitk.GetArrayFromImage(stripper.brain_mask(reference, source_path=paths[0])) > 0
            source = "deepbet"
    check_brain_volume(mask, reference.GetSpacing(), paths[0] if mask_path is None else mask_path, source)
    return mask, source, reason


@functools.lru_cache(maxsize=1)
def default_stripper():
    """The skull-stripper of this process, built on first use (loading the model costs seconds)."""
    from itermask_auto.preprocessing.skull_strip import SkullStripper
    return SkullStripper()


SOURCE_WORDS = {"given": "in the given brain mask", "skull_stripped_input": "in the (already skull-stripped) scan",
                "deepbet": "after skull-stripping (deepbet)"}


def check_brain_volume(mask: np.ndarray, spacing: Sequence[float], path: Path, source: str = "") -> None:
    """A brain far smaller than any real one means a broken scan or a failed skull-strip: stop with its name."""
    volume_ml = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
    if volume_ml < MIN_BRAIN_ML:
        where = SOURCE_WORDS.get(source, "")
        raise InputError(path, f"empty brain{' ' + where if where else ''}: the brain mask holds {volume_ml:.1f} ml "
                               f"(< {MIN_BRAIN_ML} ml)")
