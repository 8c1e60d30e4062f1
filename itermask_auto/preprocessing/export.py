"""Write an array from the preprocessed grid back into the input's exact geometry."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import SimpleITK as sitk

from itermask_auto.preprocessing.cropping import uncrop
from itermask_auto.preprocessing.orientation import Reorientation
from itermask_auto.preprocessing.resampling import resample


def to_original_geometry(array_zyx: np.ndarray, properties: Dict[str, Any], order: int) -> sitk.Image:
    """(Z, Y, X) array on the preprocessed grid -> image with the input's size, spacing, origin and direction.

    order 0 (labels/masks, dtype kept), 1 or 3 (float maps). Outside the brain crop the image is 0."""
    if tuple(array_zyx.shape) != tuple(properties["resampled_shape"]):
        raise ValueError(f"array shape {array_zyx.shape} != preprocessed shape {properties['resampled_shape']}")
    cropped = resample(array_zyx, properties["cropped_shape"], order=order, lowres_axis=properties["lowres_axis"])
    if order == 0:
        cropped = cropped.astype(array_zyx.dtype)
    full = uncrop(cropped, properties["bbox"], tuple(properties["canonical_shape"]), fill=0)
    reo = Reorientation(**properties["reorientation"])
    image = sitk.GetImageFromArray(reo.from_canonical(full))
    geometry = properties["original"]
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    return image
