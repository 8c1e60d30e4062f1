"""Deterministic synthetic brain MRI ("phantom") for tests and the demo.

The head is an analytic model in physical mm, centred on the grid's physical centre and evaluated at every voxel's
world coordinate, so one seed depicts the same head whatever the size, spacing or direction of the grid.
Layers outward from the brain surface: cortex (folded grey matter with CSF sulci) over a white-matter core, deep grey
nuclei, two ventricles, interhemispheric fissure, subarachnoid CSF, skull, scalp. Then a smooth texture, a mild bias
field and Rician noise. Lesions are irregular blobs placed in the white matter."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)

# relative intensities per sequence (x1000 in the image): wm, gm, deep grey, csf, skull, scalp, default lesion change
CONTRASTS: Dict[str, Dict[str, float]] = {
    "T1": dict(wm=1.0, gm=0.62, deep=0.76, csf=0.18, skull=0.06, scalp=0.85, lesion=0.4),
    "T2": dict(wm=0.42, gm=0.62, deep=0.52, csf=1.0, skull=0.05, scalp=0.55, lesion=0.8),
    "FLAIR": dict(wm=0.6, gm=0.78, deep=0.7, csf=0.12, skull=0.05, scalp=0.6, lesion=0.8),
}
BRAIN_SEMI_AXES_MM = np.array([70.0, 85.0, 60.0])  # left-right, anterior-posterior, inferior-superior
CSF_MM, SKULL_MM, SCALP_MM = 3.0, 6.0, 5.0  # layer thicknesses outside the brain surface
SULCUS_DEPTH_MM = 10.0
NOISE_SIGMA = 0.02  # Rician noise, relative to white matter


@dataclass
class Phantom:
    image: sitk.Image  # float32
    brain_mask: sitk.Image  # uint8 {0,1}
    label: sitk.Image  # uint8 {0,1}, all zero without lesions
    lesion_centers_world: List[Tuple[float, float, float]] = field(default_factory=list)


@dataclass
class _Waves:
    """Sum of cosines in mm, normalised to [-1, 1]: a smooth random field."""
    k: np.ndarray  # (n, 3) rad/mm
    phase: np.ndarray
    amp: np.ndarray

    @staticmethod
    def draw(rng: np.random.Generator, n: int, wavelength_mm: Tuple[float, float]) -> "_Waves":
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        k = direction * (2 * np.pi / rng.uniform(*wavelength_mm, size=(n, 1)))
        amp = rng.uniform(0.5, 1.0, size=n)
        return _Waves(k, rng.uniform(0, 2 * np.pi, size=n), amp / amp.sum())

    def __call__(self, q: Sequence[np.ndarray]) -> np.ndarray:
        out = 0.0
        for k, ph, a in zip(self.k.tolist(), self.phase.tolist(), self.amp.tolist()):  # python floats keep float32
            out = out + a * np.cos(k[0] * q[0] + k[1] * q[1] + k[2] * q[2] + ph)
        return np.asarray(out, dtype=np.float32)


@dataclass
class _Head:
    rotation: np.ndarray  # head frame -> world (3x3)
    shift: np.ndarray  # head centre relative to the grid centre, mm
    semi_axes: np.ndarray  # brain ellipsoid, mm
    scale: float
    shape: _Waves
    fold: _Waves
    texture: _Waves
    bias: _Waves
    fissure_offset: float


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw_head(rng: np.random.Generator, anatomy_scale: float) -> _Head:
    scale = rng.uniform(0.9, 1.1) * anatomy_scale
    return _Head(rotation=_rotation(np.deg2rad(rng.uniform(-5, 5, size=3))), shift=rng.uniform(-3, 3, size=3),
                 semi_axes=BRAIN_SEMI_AXES_MM * scale * rng.uniform(0.97, 1.03, size=3), scale=float(scale),
                 shape=_Waves.draw(rng, 4, (80, 160)), fold=_Waves.draw(rng, 8, (16, 30)),
                 texture=_Waves.draw(rng, 6, (15, 50)), bias=_Waves.draw(rng, 3, (200, 400)),
                 fissure_offset=float(rng.uniform(-1.5, 1.5)))


def _soft(x: np.ndarray) -> np.ndarray:
    """Logistic membership of a signed quantity (positive = inside)."""
    return (0.5 + 0.5 * np.tanh(0.5 * x)).astype(np.float32)


def _ellipsoid_radius(q: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    return np.sqrt(sum(((qi - c) / a) ** 2
                       for qi, c, a in zip(q, np.asarray(centre, float).tolist(), np.asarray(semi, float).tolist())))


def _nuclei(h: _Head) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], List[Tuple[np.ndarray, np.ndarray]]]:
    """(centre, semi-axes) in the head frame of the two ventricles and the two deep grey nuclei."""
    s = h.scale
    vent = [(np.array([sx * 7.0, -2.0, 10.0]) * s, np.array([5.0, 18.0, 8.0]) * s) for sx in (-1, 1)]
    deep = [(np.array([sx * 20.0, 0.0, 2.0]) * s, np.array([9.0, 14.0, 9.0]) * s) for sx in (-1, 1)]
    return vent, deep


def _fields(h: _Head, q: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """Signed distances (mm, negative inside) and normalised radii of the analytic anatomy at head-frame points q."""
    a = h.semi_axes.tolist()
    r = np.sqrt(sum((qi / ai) ** 2 for qi, ai in zip(q, a))) + 1e-6
    grad = np.sqrt(sum((qi / ai ** 2) ** 2 for qi, ai in zip(q, a))) / r + 1e-6
    d_brain = (r - 1.0) / grad + 4.0 * h.shape(q)  # first-order distance to the ellipsoid, gently deformed
    fold = h.fold(q) * 4.0  # std ~1; its zero level set is a labyrinth of lines: the sulci
    depth = SULCUS_DEPTH_MM * h.scale
    wm_level = -(3.0 + depth * _soft((0.6 - np.abs(fold)) * 6.0))  # grey matter lines the sulcal banks
    vent, deep = _nuclei(h)
    return dict(d_brain=d_brain.astype(np.float32), fold=fold, d_wm=(d_brain - wm_level).astype(np.float32),
                r_vent=np.minimum(*[_ellipsoid_radius(q, c, s) for c, s in vent]),
                r_deep=np.minimum(*[_ellipsoid_radius(q, c, s) for c, s in deep]))


def _world_to_head(h: _Head, centre: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (np.atleast_2d(p) - centre - h.shift) @ h.rotation  # rows: R^T (p - c)


def _draw_lesions(rng: np.random.Generator, h: _Head, n: int, radius_mm: Tuple[float, float],
                  centres_head: Optional[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    """Lesion shapes (always the same number of draws per lesion, so the result is grid independent)."""
    lesions = []
    for i in range(n):
        radius = rng.uniform(*radius_mm)
        semi = radius * rng.uniform(0.8, 1.2, size=3)
        rot = _rotation(rng.uniform(-np.pi, np.pi, size=3))
        waves = _Waves.draw(rng, 4, (1.2, 2.5))  # in units of the lesion radius: an irregular boundary
        candidates = rng.uniform(-0.7, 0.7, size=(256, 3)) * h.semi_axes
        if centres_head is not None:
            centre = centres_head[i]
        else:
            f = _fields(h, candidates.T)
            ok = (f["d_wm"] < -0.6 * radius) & (f["r_vent"] > 1.4) & (f["r_deep"] > 1.1)
            centre = candidates[np.argmax(ok)] if ok.any() else candidates[np.argmin(f["d_wm"])]
        lesions.append(dict(centre=centre, semi=semi, rot=rot, waves=waves))
    return lesions


def _lesion_radius(les: Dict, q: Sequence[np.ndarray]) -> np.ndarray:
    rel = [qi - c for qi, c in zip(q, les["centre"].tolist())]
    rot, semi = les["rot"].tolist(), les["semi"].tolist()
    local = [sum(rot[j][i] * rel[j] for j in range(3)) / semi[i] for i in range(3)]
    return np.sqrt(sum(v ** 2 for v in local)) + 0.15 * les["waves"](local)


def make_phantom(seed: int, size: Sequence[int] = (80, 96, 80), spacing: Sequence[float] = (2.0, 2.0, 2.0),
                 direction: Optional[Sequence[float]] = None, origin: Optional[Sequence[float]] = None,
                 skull: bool = True, n_lesions: int = 0, lesion_radius_mm: Tuple[float, float] = (5.0, 10.0),
                 lesion_contrast: Optional[float] = None,
                 lesion_centers_world: Optional[Sequence[Sequence[float]]] = None,
                 sequence: str = "T1", anatomy_scale: float = 1.0) -> Phantom:
    """One phantom head. size/spacing in SimpleITK (x, y, z) order; direction a 9-tuple (default identity); origin
    default puts the grid's physical centre at world (0, 0, 0). lesion_centers_world (mm) overrides n_lesions.
    lesion_contrast: intensity change as a fraction of white matter (default per sequence, T1 +0.4).
    anatomy_scale shrinks the whole head (e.g. to fit a small field of view)."""
    if sequence not in CONTRASTS:
        raise ValueError(f"sequence must be one of {sorted(CONTRASTS)}, got {sequence!r}")
    size, spacing = np.asarray(size, int), np.asarray(spacing, float)
    dmat = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    half = dmat @ (spacing * (size - 1) / 2)
    origin = -half if origin is None else np.asarray(origin, float)
    centre = origin + half

    rng = np.random.default_rng(seed)
    head = _draw_head(rng, anatomy_scale)
    centres_head = None
    if lesion_centers_world is not None:
        centres_head = _world_to_head(head, centre, np.asarray(lesion_centers_world, float))
        n_lesions = len(centres_head)
    lesions = _draw_lesions(rng, head, n_lesions, lesion_radius_mm, centres_head)

    # head-frame coordinates of every voxel, built by broadcasting (q is affine in the voxel index)
    m = head.rotation.T @ dmat @ np.diag(spacing)
    q0 = head.rotation.T @ (origin - centre - head.shift)
    idx = [np.arange(n, dtype=np.float32) for n in size]
    shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]  # x, y, z index along array axes (z, y, x)
    q = [np.float32(q0[h]) + sum(np.float32(m[h, a]) * idx[a].reshape(shapes[a]) for a in range(3)) for h in range(3)]
    q = [np.broadcast_to(qi, tuple(size[::-1])).astype(np.float32) for qi in q]

    f = _fields(head, q)
    c = CONTRASTS[sequence]
    w = 1.0 / (0.35 * float(spacing.mean()))  # partial-volume sharpness, 1/mm
    d = f["d_brain"]
    img = np.zeros(d.shape, np.float32)
    layers = [(c["scalp"], CSF_MM + SKULL_MM + SCALP_MM - d), (c["skull"], CSF_MM + SKULL_MM - d),
              (c["csf"], CSF_MM - d), (c["gm"], -d), (c["wm"], -f["d_wm"])]
    for value, signed in layers:
        s = _soft(signed * w)
        img += s * (value - img)
    # fold field gradient ~0.25/mm: convert the partial-volume sharpness to fold units
    inside = _soft(-d * w)
    sulcus = _soft((0.12 - np.abs(f["fold"])) * w / 0.25) * _soft((d + SULCUS_DEPTH_MM * head.scale) * w) * inside
    s = head.scale  # the fissure reaches down to the corpus callosum in the middle, deeper at the poles
    floor = s * (18.0 - 30.0 * (q[1] / (50.0 * s)) ** 2)
    fissure = _soft((1.0 - np.abs(q[0] - head.fissure_offset)) * w) * _soft((q[2] - floor) * w) * inside
    for value, s in ((c["csf"], np.maximum(sulcus, fissure)), (c["deep"], _soft((1 - f["r_deep"]) * 10 * w)),
                     (c["csf"], _soft((1 - f["r_vent"]) * 6 * w))):
        img += s * (value - img)
    brain = d < CSF_MM

    label = np.zeros(d.shape, bool)
    contrast = c["lesion"] if lesion_contrast is None else float(lesion_contrast)
    for les in lesions:
        rl = _lesion_radius(les, q)
        img += contrast * c["wm"] * _soft((1.0 - rl) * float(les["semi"].mean()) * w) * inside
        label |= rl < 1.0
    label &= brain

    img *= (1.0 + 0.06 * head.texture(q) * _soft(CSF_MM - d)) * (1.0 + 0.1 * head.bias(q))
    img = np.maximum(img, 0) * 1000.0
    noise = np.random.default_rng([seed, 1 + sorted(CONTRASTS).index(sequence)])
    sigma = NOISE_SIGMA * 1000.0 * c["wm"]
    img = np.sqrt((img + sigma * noise.standard_normal(img.shape, np.float32)) ** 2
                  + (sigma * noise.standard_normal(img.shape, np.float32)) ** 2)
    if not skull:
        img *= brain

    def to_image(array: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(array)
        im.SetSpacing(tuple(float(s) for s in spacing))
        im.SetOrigin(tuple(float(o) for o in origin))
        im.SetDirection(tuple(float(x) for x in dmat.ravel()))
        return im

    centres_world = [tuple(float(v) for v in head.rotation @ les["centre"] + centre + head.shift) for les in lesions]
    return Phantom(to_image(img.astype(np.float32)), to_image(brain.astype(np.uint8)),
                   to_image(label.astype(np.uint8)), centres_world)


def _fit_scale(size: Sequence[int], spacing: Sequence[float], skull: bool) -> float:
    """Anatomy scale that fits the largest head (seed scale 1.1) into the field of view with a small margin."""
    extent = BRAIN_SEMI_AXES_MM * 1.1 * 1.03 + 4.0 + (CSF_MM + SKULL_MM + SCALP_MM if skull else CSF_MM)
    fov = np.asarray(size, float) * np.asarray(spacing, float) / 2
    return float(min(1.0, np.min(fov / extent)))


def write_phantom_dataset(raw_root: Path, dataset_id: int = 990, name: str = "Phantom", n_train: int = 8,
                          n_test_healthy: int = 2, n_test_lesion: int = 2, seed: int = 0,
                          size: Sequence[int] = (64, 76, 64), spacing: Sequence[float] = (2.0, 2.0, 2.0),
                          skull: bool = False, with_masks: bool = True, channels: Sequence[str] = ("T1",),
                          anatomy_scale: Optional[float] = None, with_test_masks: Optional[bool] = None) -> Path:
    """Write a raw dataset: healthy imagesTr (+masksTr), healthy and lesion imagesTs, labelsTs for every test case,
    masksTs (with_test_masks, default with_masks: e.g. brain masks for evaluation only). anatomy_scale None shrinks
    the heads to fit the field of view (64x76x64 at 2 mm is smaller than an adult brain). Cases: phantom_train_000,
    phantom_healthy_000, phantom_lesion_000 (1-3 lesions each)."""
    from itermask_auto.dataset_conversion._common import (image_name, resolve_raw_root, staged_dataset,
                                                          write_dataset_json)
    raw_root = resolve_raw_root(raw_root)
    scale = _fit_scale(size, spacing, skull) if anatomy_scale is None else float(anatomy_scale)
    cases = ([("Tr", f"phantom_train_{i:03d}", 1000 * seed + i, 0) for i in range(n_train)]
             + [("Ts", f"phantom_healthy_{i:03d}", 1000 * seed + 500 + i, 0) for i in range(n_test_healthy)]
             + [("Ts", f"phantom_lesion_{i:03d}", 1000 * seed + 700 + i, 1 + i % 3) for i in range(n_test_lesion)])
    write_masks = {"Tr": with_masks, "Ts": with_masks if with_test_masks is None else with_test_masks}
    with staged_dataset(raw_root, dataset_id, name) as tmp:
        for part, case, case_seed, n_lesions in cases:
            for ch, sequence in enumerate(channels):
                ph = make_phantom(case_seed, size=size, spacing=spacing, skull=skull, n_lesions=n_lesions,
                                  sequence=sequence, anatomy_scale=scale)
                (tmp / f"images{part}").mkdir(exist_ok=True)
                sitk.WriteImage(ph.image, str(tmp / f"images{part}" / image_name(case, ch)), useCompression=True)
            if part == "Ts":
                (tmp / "labelsTs").mkdir(exist_ok=True)
                sitk.WriteImage(ph.label, str(tmp / "labelsTs" / f"{case}.nii.gz"), useCompression=True)
            if write_masks[part]:
                (tmp / f"masks{part}").mkdir(exist_ok=True)
                sitk.WriteImage(ph.brain_mask, str(tmp / f"masks{part}" / f"{case}.nii.gz"), useCompression=True)
        write_dataset_json(tmp, name, channels, n_train, n_test_healthy + n_test_lesion,
                           description=f"synthetic phantom heads (seed {seed}, size {tuple(size)}, spacing "
                                       f"{tuple(spacing)}, skull {skull}, anatomy scale {scale:.3f})",
                           licence="synthetic data, no restrictions",
                           reference="itermask_auto.dataset_conversion.phantom")
    final = raw_root / f"Dataset{int(dataset_id):03d}_{name}"
    logger.info("wrote %s: %d train, %d healthy + %d lesion test cases, channels %s", final, n_train,
                n_test_healthy, n_test_lesion, list(channels))
    return final


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description="Write a synthetic phantom raw dataset.")
    p.add_argument("raw_root", type=Path, help="raw data root to write DatasetXXX_Name into")
    p.add_argument("--id", type=int, default=990)
    p.add_argument("--name", default="Phantom")
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--n-test-healthy", type=int, default=2)
    p.add_argument("--n-test-lesion", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=3, default=(64, 76, 64), help="x y z voxels")
    p.add_argument("--spacing", type=float, nargs=3, default=(2.0, 2.0, 2.0), help="x y z mm")
    p.add_argument("--skull", action="store_true", help="keep skull and scalp (default: skull-stripped)")
    p.add_argument("--no-masks", action="store_true", help="do not write masksTr/masksTs")
    p.add_argument("--channels", nargs="+", default=["T1"], choices=sorted(CONTRASTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    write_phantom_dataset(args.raw_root, args.id, args.name, args.n_train, args.n_test_healthy, args.n_test_lesion,
                          args.seed, args.size, args.spacing, args.skull, not args.no_masks, tuple(args.channels))


if __name__ == "__main__":
    main()
