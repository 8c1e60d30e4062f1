"""One case from raw files to the planned arrays: read → brain mask → canonical orientation → crop →
normalise (in the brain, before resampling so the mask still fits) → resample → high-frequency channels."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.imageio.reader import read_channels
from itermask_auto.preprocessing.brain_mask import obtain_brain_mask
from itermask_auto.preprocessing.cropping import brain_bbox, crop
from itermask_auto.preprocessing.normalization import normalize_channel
from itermask_auto.preprocessing.orientation import reorientation_for
from itermask_auto.preprocessing.resampling import anisotropic_axis, resample, target_shape
from itermask_auto.utilities.frequency import high_frequency

logger = logging.getLogger(__name__)

CROP_MARGIN_MM = 4.0  # context around the brain kept for the network and the FFT


def geometry_of(image: sitk.Image) -> Dict[str, Any]:
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()), "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection()), "pixel_type": image.GetPixelIDTypeAsString()}


def preprocess_case(channel_paths: Sequence[Path], plans: Plans, configuration: str,
                    mask_path: Optional[Path] = None, stripper=None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, Any]]:
    """Return (data (C,Z,Y,X), hf (C,Z,Y,X), brain_mask (Z,Y,X) bool, properties)."""
    config = plans.configuration(configuration)
    channel_paths = [Path(p) for p in channel_paths]
    if len(channel_paths) != plans.num_channels:
        from itermask_auto.imageio.errors import InputError
        raise InputError(channel_paths[0], f"case has {len(channel_paths)} channel file(s), the plan expects "
                                           f"{plans.num_channels} ({list(plans.channel_names.values())})")
    images = read_channels(channel_paths)
    mask_sitk_order, mask_source, mask_reason = obtain_brain_mask(images, channel_paths, mask_path, stripper)

    reo = reorientation_for(images[0].GetDirection())
    spacing = reo.spacing_to_canonical(images[0].GetSpacing())
    brain = reo.to_canonical(mask_sitk_order)
    channels = [reo.to_canonical(sitk.GetArrayFromImage(im).astype(np.float32)) for im in images]

    margin = [int(math.ceil(CROP_MARGIN_MM / s)) for s in spacing]
    bbox = brain_bbox(brain, margin)
    brain_c = crop(brain, bbox)
    normalized, stats = [], []
    for ch in channels:
        out, st = normalize_channel(crop(ch, bbox), brain_c, plans.normalization)
        normalized.append(out)
        stats.append(st)

    new_shape = target_shape(brain_c.shape, spacing, config.spacing)
    lowres = anisotropic_axis(spacing)
    brain_r = resample(brain_c.astype(np.float32), new_shape, order=1, lowres_axis=lowres) > 0.5
    data = np.stack([resample(ch, new_shape, order=3, lowres_axis=lowres) for ch in normalized]).astype(np.float32)
    data[:, ~brain_r] = plans.normalization.background_value
    hf = np.stack([high_frequency(ch, config.spacing, plans.hf_radius_cycles_per_mm) for ch in data])

    properties = {
        "channel_files": [p.name for p in channel_paths],
        "original": geometry_of(images[0]),
        "reorientation": {"transpose": reo.transpose, "flip": reo.flip},
        "canonical_shape": list(brain.shape),
        "canonical_spacing": spacing,
        "bbox": bbox,
        "cropped_shape": list(brain_c.shape),
        "lowres_axis": lowres,
        "target_spacing": list(config.spacing),
        "resampled_shape": list(new_shape),
        "configuration": configuration,
        "plans_name": plans.plans_name,
        "brain_mask_source": mask_source,
        "brain_mask_reason": mask_reason,
        "brain_volume_ml": float(brain.sum() * np.prod(spacing) / 1000.0),
        "normalization": stats,
    }
    return data, hf, brain_r, properties
