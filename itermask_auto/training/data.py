"""Training data: brain-centred patches from the preprocessed arrays, augmented with batchgeneratorsv2, masked.

A sample is cropped (with padding) around a random brain voxel of a random case, a little larger than the
patch so that rotation/scaling never sample outside it, then augmented: spatial transforms move the image, its
high-frequency channel (`regression_target` key: interpolated like the image, padded with 0) and the brain mask
(`segmentation` key, nearest) together; mild brightness/contrast/gamma change the image only. The target is the
augmented image itself (the network must reproduce what it is shown), so target and unmasked input agree; hf is
only moved, never recomputed. The blob mask is drawn last, on the augmented brain mask."""
from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform, create_affine_matrix_3d
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from itermask_auto.experiment_planning.plans import ConfigurationPlan, Plans
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.training.masks import training_mask

logger = logging.getLogger(__name__)

MAX_BRAIN_LOCATIONS = 20_000   # brain voxels remembered per case for drawing patch centres (int32 each)
P_ROTATION, P_SCALING, P_INTENSITY = 0.2, 0.2, 0.15


@dataclass
class CaseArrays:
    data: np.ndarray         # (C, Z, Y, X) float32, background = plan background value
    hf: np.ndarray           # (C, Z, Y, X) float32
    brain: np.ndarray        # (Z, Y, X) bool
    brain_idx: np.ndarray    # flat indices of (a sample of) brain voxels, int64


def _case_arrays(folder: Path, case_id: str) -> CaseArrays:
    data, hf, brain, _ = load_case(folder, case_id)
    idx = np.flatnonzero(brain)
    if idx.size == 0:
        raise ValueError(f"{folder / case_id}.npz: empty brain mask")
    if idx.size > MAX_BRAIN_LOCATIONS:  # fixed seed: the same centres pool on every run
        idx = np.sort(np.random.default_rng(idx.size).choice(idx, MAX_BRAIN_LOCATIONS, replace=False))
    return CaseArrays(data.astype(np.float32, copy=False), hf.astype(np.float32, copy=False), brain, idx)


class CaseStore:
    """All cases in memory when they fit under `max_memory_gb` (estimated from the first case), else loaded
    from disk per sample with a small cache."""

    def __init__(self, folder: str | Path, case_ids: Sequence[str], max_memory_gb: float = 4.0):
        self.folder, self.case_ids = Path(folder), list(case_ids)
        if not self.case_ids:
            raise ValueError(f"{self.folder}: no cases to load")
        first = _case_arrays(self.folder, self.case_ids[0])
        estimate_gb = (first.data.nbytes + first.hf.nbytes + first.brain.nbytes) * len(self.case_ids) / 1e9
        self.in_memory = estimate_gb <= max_memory_gb
        if self.in_memory:
            self._cases: Dict[str, CaseArrays] = {self.case_ids[0]: first}
            self._cases.update({c: _case_arrays(self.folder, c) for c in self.case_ids[1:]})
        else:
            self._cases = {}
        logger.info("%d cases (~%.2f GB): %s", len(self.case_ids), estimate_gb,
                    "held in memory" if self.in_memory else "loaded from disk per sample")

    def get(self, case_id: str) -> CaseArrays:
        if case_id not in self._cases:  # only when not in memory: keep the last few cases loaded
            if len(self._cases) >= 4:
                self._cases.pop(next(iter(self._cases)))
            self._cases[case_id] = _case_arrays(self.folder, case_id)
        return self._cases[case_id]


def crop_padded(array: np.ndarray, centre: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """Crop (C, *spatial) to `size` around `centre` (start = centre − size//2), padding outside with pad_value."""
    out = np.full((array.shape[0], *size), pad_value, dtype=array.dtype)
    src, dst = [slice(None)], [slice(None)]
    for c, s, n in zip(centre, size, array.shape[1:]):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - start, lo - start + max(hi - lo, 0)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def augmentation_crop_size(patch: Sequence[int], rotation_degrees: float, max_scale: float) -> List[int]:
    """Crop edge that holds the patch after any rotation up to ±rotation_degrees per axis and scaling ≤ max_scale."""
    patch = np.asarray(patch, dtype=np.float64)
    theta = np.deg2rad(rotation_degrees)
    corners = np.array(list(itertools.product(*[(-p / 2, p / 2) for p in patch])))
    extent = np.zeros(len(patch))
    for angles in itertools.product((-theta, 0.0, theta), repeat=3 if len(patch) == 3 else 1):
        if len(patch) == 3:
            rot = create_affine_matrix_3d(list(angles), [max_scale] * 3)
        else:
            a = angles[0]
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * max_scale
        extent = np.maximum(extent, np.abs(corners @ rot.T).max(axis=0) * 2)
    return [int(np.ceil(e)) + 2 for e in extent]


def build_augmentation(config: ConfigurationPlan, plans: Plans) -> ComposeTransforms:
    tp, dim = plans.training, len(config.patch_size)
    theta = np.deg2rad(tp.rotation_degrees)
    # plan mirror axes are canonical (z, y, x); a 2d patch holds the two axes other than the slice axis, in order
    kept = [a for a in range(3) if dim == 3 or a != config.slice_axis]
    mirror_axes = tuple(kept.index(a) for a in tp.mirror_axes if a in kept)
    transforms = [
        SpatialTransform(tuple(config.patch_size), patch_center_dist_from_border=0, random_crop=False,
                         p_rotation=P_ROTATION if theta > 0 else 0, rotation=(-theta, theta),
                         p_scaling=P_SCALING, scaling=tuple(tp.scaling_range),
                         p_synchronize_scaling_across_axes=1, mode_seg="nearest", border_mode_seg="zeros",
                         padding_mode_image="zeros"),
        RandomTransform(MultiplicativeBrightnessTransform((0.9, 1.1), synchronize_channels=False), P_INTENSITY),
        RandomTransform(ContrastTransform(BGContrast((0.9, 1.1)), preserve_range=True,
                                          synchronize_channels=False), P_INTENSITY),
        RandomTransform(GammaTransform((0.8, 1.25), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), P_INTENSITY),
    ]
    if mirror_axes:
        transforms.append(MirrorTransform(mirror_axes))
    return ComposeTransforms(transforms)


def sample_seed(seed: int, index: int) -> int:
    """The seed of the sample with global index `index` (a 63-bit int): independent of ranks, workers, restarts."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """batchgeneratorsv2 draws from numpy's and torch's global generators: seed both for one sample, and give the
    caller's streams back afterwards."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed % 2 ** 32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def slice_brain_centre(brain_slice: np.ndarray) -> Tuple[int, ...]:
    """Centre of the brain's bounding box in a 2-D slice (a whole-slice patch sees all of that slice's brain)."""
    idx = np.nonzero(brain_slice)
    return tuple(int((a.min() + a.max() + 1) // 2) for a in idx)


class PatchSampler:
    """Infinite source of batches {"image", "hf": (B, C, *patch) float32, "mask", "brain": (B, *patch) bool,
    "seed": (B,) int64}.

    Batch n holds the samples with global indices n·global_batch + offset + j (j < batch_size): on rank r of W
    ranks, offset = r·batch_size and global_batch = W·batch_size, so the ranks together draw exactly the
    samples one rank would draw with the global batch. Every sample is drawn from its own seed (`sample_seed`),
    so the stream does not depend on ranks, data workers or restarts; `next_index` is the next batch number."""

    def __init__(self, store: CaseStore, case_ids: Sequence[str], plans: Plans, configuration: str,
                 mask_kind: str, batch_size: int, augment: bool, seed: int, patch_centre: str = "brain_voxel",
                 offset: int = 0, global_batch: Optional[int] = None):
        self.store, self.case_ids = store, list(case_ids)
        self.config = plans.configuration(configuration)
        self.plans, self.mask_kind, self.batch_size, self.augment = plans, mask_kind, batch_size, augment
        self.seed, self.offset = int(seed), int(offset)
        self.global_batch = int(global_batch or batch_size)
        self.next_index, self.index_step = 0, 1
        if patch_centre not in ("brain_voxel", "slice_centre"):
            raise ValueError(f"unknown patch_centre '{patch_centre}' (brain_voxel | slice_centre)")
        self.patch_centre = patch_centre
        self.dim = len(self.config.patch_size)
        self.slice_axis = self.config.slice_axis if self.dim == 2 else None
        self.spacing = [s for a, s in enumerate(self.config.spacing) if a != self.slice_axis]
        self.background = float(plans.normalization.background_value)
        tp = plans.training
        self.crop_size = augmentation_crop_size(self.config.patch_size, tp.rotation_degrees,
                                                max(tp.scaling_range)) if augment else list(self.config.patch_size)
        self.transforms = build_augmentation(self.config, plans) if augment else None

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        case = self.store.get(self.case_ids[rng.integers(len(self.case_ids))])
        centre = np.unravel_index(case.brain_idx[rng.integers(case.brain_idx.size)], case.brain.shape)
        data, hf, brain = case.data, case.hf, case.brain[None]
        if self.slice_axis is not None:  # the slice through the centre voxel across the plan's slice axis
            cut = (slice(None),) * (self.slice_axis + 1) + (centre[self.slice_axis],)
            data, hf, brain = data[cut], hf[cut], brain[cut]
            centre = tuple(c for a, c in enumerate(centre) if a != self.slice_axis)
            if self.patch_centre == "slice_centre":
                centre = slice_brain_centre(brain[0])
        image = crop_padded(data, centre, self.crop_size, self.background)
        hf = crop_padded(hf, centre, self.crop_size, 0.0)
        brain = crop_padded(brain, centre, self.crop_size, False)
        if self.transforms is not None:
            # shift so the background is 0: the spatial transform pads image and hf with zeros
            out = self.transforms(image=torch.from_numpy(image - self.background),
                                  regression_target=torch.from_numpy(hf),
                                  segmentation=torch.from_numpy(brain.astype(np.uint8)))
            brain = out["segmentation"].numpy().astype(bool)
            image = out["image"].numpy() + self.background
            image[:, ~brain[0]] = self.background
            hf = out["regression_target"].numpy()
        mask = training_mask(brain[0], self.spacing, self.plans.training_masks, rng, self.mask_kind)
        return image.astype(np.float32, copy=False), hf.astype(np.float32, copy=False), mask, brain[0]

    def batch(self, n: int) -> Dict[str, torch.Tensor]:
        """Batch number n (this sampler's share of it)."""
        seeds = [sample_seed(self.seed, n * self.global_batch + self.offset + j) for j in range(self.batch_size)]
        samples = []
        for s in seeds:
            with seeded_global_rngs(s):
                samples.append(self._sample(np.random.default_rng(s)))
        out = {key: torch.from_numpy(np.ascontiguousarray(np.stack([smp[i] for smp in samples])))
               for i, key in enumerate(("image", "hf", "mask", "brain"))}
        out["seed"] = torch.tensor(seeds, dtype=torch.int64)
        return out

    def next_batch(self) -> Dict[str, torch.Tensor]:
        batch = self.batch(self.next_index)
        self.next_index += self.index_step
        return batch

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()


class _WorkerDataset(torch.utils.data.IterableDataset):
    def __init__(self, sampler: PatchSampler):
        self.sampler = sampler

    def __iter__(self):
        return iter(self.sampler)


def _init_worker(_: int) -> None:
    """Worker w of W makes batches start + w, start + w + W, ...: the DataLoader takes them round-robin, so the
    stream is the same as in-process."""
    info = torch.utils.data.get_worker_info()
    sampler = info.dataset.sampler
    sampler.next_index += info.id
    sampler.index_step = info.num_workers
    torch.set_num_threads(1)


def make_loader(sampler: PatchSampler, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Dict]:
    """Infinite batch iterator from batch number sampler.next_index: in-process for num_workers=0, else torch
    DataLoader workers (2 batches prefetched per worker, so memory stays bounded); the same batches either way."""
    if num_workers <= 0:
        return iter(sampler)
    # fork shares the in-memory cases copy-on-write instead of pickling them into every worker
    context = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(_WorkerDataset(sampler), batch_size=None, num_workers=num_workers,
                                         worker_init_fn=_init_worker, persistent_workers=True, prefetch_factor=2,
                                         pin_memory=pin_memory, multiprocessing_context=context)
    return iter(loader)
