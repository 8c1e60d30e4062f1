"""A lesion label onto a preprocessed case's grid, the way preprocessing moves the brain mask: the same canonical
reorientation, crop box and resampling (linear, > 0.5), then kept inside the preprocessed brain. Used for the
labelled cases of weak supervision (`itermask_train --labelled`); never for the test labels (labelsTs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import SimpleITK as sitk

from itermask_auto.imageio.errors import InputError
from itermask_auto.imageio.reader import read_image
from itermask_auto.preprocessing.cropping import crop
from itermask_auto.preprocessing.orientation import Reorientation
from itermask_auto.preprocessing.resampling import resample


def label_on_preprocessed_grid(label_path: Path, properties: Dict[str, Any], brain: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool label (> 0) on the grid of the preprocessed case described by `properties`."""
    label = read_image(label_path)
    original = properties["original"]
    if (list(label.GetSize()) != list(original["size"])
            or not np.allclose(label.GetSpacing(), original["spacing"], atol=1e-3)
            or not np.allclose(label.GetOrigin(), original["origin"], atol=1e-2)
            or not np.allclose(label.GetDirection(), original["direction"], atol=1e-3)):
        raise InputError(label_path, "label is not on its image's grid (size/spacing/origin/direction differ)")
    reo = Reorientation(**properties["reorientation"])
    array = crop(reo.to_canonical(sitk.GetArrayFromImage(label) > 0), properties["bbox"])
    resampled = resample(array.astype(np.float32), properties["resampled_shape"], order=1,
                         lowres_axis=properties["lowres_axis"]) > 0.5
    return resampled & brain.astype(bool)
