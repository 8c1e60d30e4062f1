"""Lesion-like synthetic anomalies: shapes from real lesion masks (or generated blobs) and a smooth intensity change.

Shapes. Real masks (e.g. the 30 MSLUB expert masks, MNI 1 mm) are cut into 26-connected components; a component is
placed *crudely* in a healthy target: its centroid goes to a random voxel at least `margin_mm` inside the target's
brain and, when a T1-like channel exists, in white matter (world mm, translation only: no rotation, no scaling),
and it is resampled onto the target grid (linear, >= 0.5). A placement is kept when >= 90 % of the resampled
component lies in the brain; the label is the part inside the brain. Without real masks, irregular blobs (an
ellipsoid with a smooth random boundary) are generated.
White matter = brain voxels whose T1 intensity, smoothed over 2 mm, is at or above the brain's 60th percentile
(white matter is the brightest tissue on T1). MS lesions sit mostly there; a T1-hypointense lesion dropped into grey
matter ends near grey-matter intensity (placed anywhere, 22 % of lesions had a local contrast below 0.1, in white
matter 4 %: benchmarks/synthetic_contrast.py).

Intensity rule (per lesion component k, per channel):
    W_k  = 90th percentile of the channel inside the brain, outside lesions, in a 40 mm cube around the component
           (the "white-matter-ish" level: white matter is the brightest brain tissue on T1, and a high reference
           level is needed for the relative change to mean the same thing on any scanner scaling);
    target_k = (1 + c_k) * W_k, c_k drawn in [contrast_min, contrast_max], negative (hypo) for T1-like channels,
           positive (hyper) for T2/FLAIR/other channels;
    out = x + w * (target_k - G_1.5mm * x), w = min(1, 2 * G_sigma * L): the local mean inside the lesion becomes
           target_k while the image's own texture and noise stay; w is 1 on the labelled voxels and fades to 0
           within ~2 sigma (sigma = 1 mm by default) outside them."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from itermask_auto.imageio.errors import InputError

logger = logging.getLogger(__name__)

HYPO_CHANNELS = ("T1", "T1W", "T1N", "MPRAGE")  # channels where MS lesions are hypointense; T1c/T1POST too
_CONN = np.ones((3, 3, 3), bool)
BLOB_RADIUS_MM = (3.0, 9.0)   # default radius range of generated blobs (MS-lesion-like sizes)


@dataclass
class LesionComponent:
    image: sitk.Image          # float32 {0, 1} crop holding one component, in its source's world geometry
    centroid: np.ndarray       # world mm
    volume_mm3: float
    source: str


def load_lesion_components(mask_paths: Sequence[Path], min_volume_mm3: float = 50.0) -> List[LesionComponent]:
    """All 26-connected components of at least `min_volume_mm3` of the given binary masks (> 0)."""
    components: List[LesionComponent] = []
    for path in mask_paths:
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError:
            raise InputError(path, "cannot be read as a lesion mask") from None
        arr = sitk.GetArrayFromImage(img) > 0
        voxel = float(np.prod(img.GetSpacing()))
        lab, _ = ndimage.label(arr, structure=_CONN)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            comp = lab[sl] == i
            if comp.sum() * voxel < min_volume_mm3:
                continue
            comp = np.pad(comp, 2)
            start_zyx = [s.start - 2 for s in sl]
            crop = sitk.GetImageFromArray(comp.astype(np.float32))
            crop.SetSpacing(img.GetSpacing())
            crop.SetDirection(img.GetDirection())
            crop.SetOrigin(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in start_zyx[::-1]]))
            centre_idx = np.argwhere(comp).mean(0)[::-1]   # x, y, z within the crop
            centroid = np.array(crop.TransformContinuousIndexToPhysicalPoint(centre_idx.tolist()))
            components.append(LesionComponent(crop, centroid, float(comp.sum() * voxel), Path(path).name))
    logger.info("%d lesion components (>= %.0f mm3) from %d mask(s)", len(components), min_volume_mm3,
                len(mask_paths))
    return components


def white_matter_region(channels: Sequence[np.ndarray], channel_names: Sequence[str], brain: np.ndarray,
                        spacing_zyx: Sequence[float], percentile: float = 60.0,
                        smooth_mm: float = 2.0) -> Optional[np.ndarray]:
    """Brain voxels whose smoothed T1-like intensity is >= the brain's `percentile`; None without a T1 channel."""
    t1 = next((x for x, name in zip(channels, channel_names) if channel_sign(name) < 0), None)
    if t1 is None or not brain.any():
        return None
    smooth = ndimage.gaussian_filter(t1.astype(np.float32), smooth_mm / np.asarray(spacing_zyx, float))
    return brain & (smooth >= np.percentile(smooth[brain], percentile))


def centre_candidates(brain: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float,
                      region: Optional[np.ndarray] = None) -> Tuple[np.ndarray, str]:
    """(voxel indices, where) for lesion centres: brain voxels at least margin_mm deep, inside `region` when given;
    falls back to the region at any depth, then the deep brain, then the whole brain, when nothing qualifies."""
    deep = ndimage.distance_transform_edt(brain, sampling=spacing_zyx) >= margin_mm
    choices = [] if region is None else [(deep & region, "white matter"), (brain & region, "white matter")]
    for allowed, where in choices + [(deep, "anywhere in the brain"), (brain, "anywhere in the brain")]:
        idx = np.argwhere(allowed)
        if len(idx):
            return idx, where
    return np.argwhere(brain), "anywhere in the brain"


def place_components(components: Sequence[LesionComponent], reference: sitk.Image, brain: np.ndarray,
                     rng: np.random.Generator, n: int, margin_mm: float = 8.0, min_inside: float = 0.9,
                     tries: int = 20, region: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Dict]]:
    """Place n randomly chosen components in `brain` (zyx bool on reference's grid), centroids in `region` when
    given: (label zyx bool, records)."""
    label = np.zeros(brain.shape, bool)
    records: List[Dict] = []
    candidates, where = centre_candidates(brain, reference.GetSpacing()[::-1], margin_mm, region)
    for _ in range(n):
        comp = components[int(rng.integers(len(components)))]
        for _ in range(tries):
            v = candidates[int(rng.integers(len(candidates)))]
            centre = np.array(reference.TransformIndexToPhysicalPoint([int(i) for i in v[::-1]]))
            shift = sitk.TranslationTransform(3, (comp.centroid - centre).tolist())  # target point -> source point
            res = sitk.Resample(comp.image, reference, shift, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            m = sitk.GetArrayFromImage(res) >= 0.5
            if m.any() and (m & brain).sum() >= min_inside * m.sum():
                label |= m & brain
                records.append({"source": comp.source, "volume_mm3": round(comp.volume_mm3, 1), "centre_in": where,
                                "centre_world_mm": [round(float(c), 2) for c in centre]})
                break
    return label, records


def blob_lesions(brain: np.ndarray, spacing_zyx: Sequence[float], rng: np.random.Generator, n: int,
                 radius_mm: Tuple[float, float] = BLOB_RADIUS_MM, margin_mm: float = 8.0,
                 region: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[Dict]]:
    """n irregular blobs: an anisotropic ellipsoid whose boundary is displaced by smooth noise."""
    spacing = np.asarray(spacing_zyx, float)
    label = np.zeros(brain.shape, bool)
    records: List[Dict] = []
    candidates, where = centre_candidates(brain, spacing, margin_mm, region)
    for _ in range(n):
        r = float(rng.uniform(*radius_mm))
        semi = r * rng.uniform(0.7, 1.3, size=3)
        v = candidates[int(rng.integers(len(candidates)))]
        half = np.ceil(1.6 * semi.max() / spacing).astype(int)
        grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
        rho = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, semi)))
        noise = ndimage.gaussian_filter(rng.standard_normal(rho.shape), sigma=r / 2 / spacing)
        noise /= noise.std() + 1e-12
        blob = rho + 0.25 * noise < 1.0
        lo = v - half
        src = tuple(slice(max(0, -low), b - max(0, low + b - n_)) for low, b, n_ in zip(lo, blob.shape, brain.shape))
        dst = tuple(slice(max(0, low), min(n_, low + b)) for low, b, n_ in zip(lo, blob.shape, brain.shape))
        label[dst] |= blob[src] & brain[dst]
        records.append({"source": "blob", "radius_mm": round(r, 2), "centre_in": where,
                        "centre_index_zyx": [int(i) for i in v]})
    return label, records


def component_contrasts(label: np.ndarray, rng: np.random.Generator,
                        contrast_range: Sequence[float]) -> np.ndarray:
    """One contrast magnitude per 26-connected component of `label` (ndimage.label order, as
    `apply_lesion_intensity` numbers them), drawn from U(contrast_range)."""
    return rng.uniform(*contrast_range, size=ndimage.label(label, structure=_CONN)[1])


def channel_sign(channel_name: str) -> int:
    """-1 (hypointense) for T1-like channels, +1 (hyperintense) otherwise (T2, FLAIR, PD, ...)."""
    name = channel_name.upper().replace("-", "").replace("_", "")
    return -1 if name.startswith("T1") or name in HYPO_CHANNELS else 1


def apply_lesion_intensity(image: np.ndarray, label: np.ndarray, brain: np.ndarray, spacing_zyx: Sequence[float],
                           contrasts: Sequence[float], edge_sigma_mm: float = 1.0, window_mm: float = 40.0,
                           percentile: float = 90.0) -> Tuple[np.ndarray, List[float]]:
    """The module's intensity rule; `contrasts[k]` = signed c of the k-th component of `label` (26-connected,
    in ndimage.label order). Returns (changed float32 image, W_k per component)."""
    spacing = np.asarray(spacing_zyx, float)
    x = image.astype(np.float32)
    lab, n = ndimage.label(label, structure=_CONN)
    if n == 0:
        return x.copy(), []
    if len(contrasts) < n:
        raise ValueError(f"{n} lesion components but {len(contrasts)} contrasts")
    half = np.ceil(window_mm / 2 / spacing).astype(int)
    healthy = brain & ~label
    levels = []
    for sl in ndimage.find_objects(lab):
        box = tuple(slice(max(0, s.start - h), s.stop + h) for s, h in zip(sl, half))
        values = x[box][healthy[box]]
        values = values if values.size >= 100 else x[healthy]   # too little context: whole-brain level
        levels.append(float(np.percentile(values, percentile)))
    # every voxel takes the target of its nearest lesion component (the change also fades outside the label)
    _, nearest = ndimage.distance_transform_edt(lab == 0, sampling=spacing, return_indices=True)
    comp_of = lab[tuple(nearest)]
    target = np.array([0.0] + [(1 + c) * w for c, w in zip(contrasts, levels)], np.float32)[comp_of]
    weight = np.minimum(1.0, 2.0 * ndimage.gaussian_filter(label.astype(np.float32), edge_sigma_mm / spacing))
    local_mean = ndimage.gaussian_filter(x, 1.5 / spacing)
    out = x + weight * (target - local_mean)
    return out.astype(np.float32), levels


def insert_lesions(channels: Sequence[np.ndarray], channel_names: Sequence[str], brain: np.ndarray,
                   reference: sitk.Image, rng: np.random.Generator, components: Optional[Sequence[LesionComponent]],
                   n_range: Tuple[int, int] = (2, 6), contrast_range: Tuple[float, float] = (0.3, 0.5),
                   white_matter: bool = True, blob_radius_mm: Tuple[float, float] = BLOB_RADIUS_MM
                   ) -> Tuple[List[np.ndarray], np.ndarray, Dict]:
    """Shapes (real components if given, else blobs of `blob_radius_mm`) + intensity rule on every channel;
    (channels, label, params). white_matter=False places centres anywhere in the brain (the generator before
    white-matter placement)."""
    spacing = reference.GetSpacing()[::-1]
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    region = white_matter_region(channels, channel_names, brain, spacing) if white_matter else None
    if components:
        label, records = place_components(components, reference, brain, rng, n, region=region)
    else:
        label, records = np.zeros(brain.shape, bool), []
    shape_source = "real_masks"
    if not label.any():   # no real masks, or none fitted into this brain
        label, records = blob_lesions(brain, spacing, rng, n, radius_mm=blob_radius_mm, region=region)
        shape_source = "blobs"
    magnitudes = component_contrasts(label, rng, contrast_range)
    n_comp = len(magnitudes)
    out, params_channels = [], []
    for x, name in zip(channels, channel_names):
        c = channel_sign(name) * magnitudes
        changed, levels = apply_lesion_intensity(x, label, brain, spacing, c.tolist())
        out.append(changed)
        params_channels.append({"channel": name, "sign": int(channel_sign(name)),
                                "wm_level": [round(v, 3) for v in levels]})
    params = {"shape_source": shape_source, "n_requested": n,
              "placement": sorted({r["centre_in"] for r in records}), "n_components": int(n_comp),
              "contrast_magnitudes": [round(float(m), 3) for m in magnitudes], "placements": records,
              "channels": params_channels}
    return out, label, params
