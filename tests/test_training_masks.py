"""IterMask3D blob masks: deterministic from the rng, inside the brain, same physical size at any spacing."""
from __future__ import annotations

import numpy as np
import pytest

from itermask_auto.experiment_planning.plans import TrainingMaskPlan
from itermask_auto.training.masks import blob_mask, block_edges, random_rotation, training_mask

PLAN = TrainingMaskPlan(block_sizes_mm=[4.0, 8.0], block_probabilities=[0.5, 0.5],
                        variance_range_blocks=[0.3, 10.0], n_points=20_000)


def _sphere(shape, radius_fraction=0.4):
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    return sum((g / (n * radius_fraction)) ** 2 for g, n in zip(grid, shape)) < 1


def test_deterministic_from_rng():
    brain = _sphere((40, 40, 40))
    a = blob_mask(brain, (2, 2, 2), PLAN, np.random.default_rng(7))
    b = blob_mask(brain, (2, 2, 2), PLAN, np.random.default_rng(7))
    c = blob_mask(brain, (2, 2, 2), PLAN, np.random.default_rng(8))
    assert a.dtype == bool and a.shape == brain.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_inside_brain_and_usually_nonempty():
    brain = _sphere((36, 44, 30), 0.35)
    rng = np.random.default_rng(0)
    masks = [blob_mask(brain, (1.5, 1.0, 2.0), PLAN, rng) for _ in range(30)]
    assert all(not (m & ~brain).any() for m in masks)
    assert sum(m.any() for m in masks) >= 28  # centred on a brain voxel: almost never empty
    assert len({m.sum() for m in masks}) > 10  # sizes vary


def test_block_structure_and_edges():
    assert block_edges(4.0, [1.0, 2.0, 3.0]) == [4, 2, 1]
    assert block_edges(1.0, [3.0, 3.0]) == [1, 1]  # never below one voxel
    brain = np.ones((32, 32, 32), bool)
    plan = TrainingMaskPlan(block_sizes_mm=[8.0], block_probabilities=[1.0], variance_range_blocks=[0.3, 10.0],
                            n_points=5_000)
    m = blob_mask(brain, (2.0, 2.0, 2.0), plan, np.random.default_rng(3))
    blocks = m.reshape(8, 4, 8, 4, 8, 4)  # 8 mm at 2 mm = 4-voxel blocks aligned to the patch grid
    assert m.any()
    assert np.array_equal(blocks.all(axis=(1, 3, 5)), blocks.any(axis=(1, 3, 5)))


def test_2d_and_empty_brain_and_none():
    brain = _sphere((48, 48))
    m = blob_mask(brain, (1.0, 1.0), PLAN, np.random.default_rng(1))
    assert m.shape == (48, 48) and m.any() and not (m & ~brain).any()
    assert not blob_mask(np.zeros((8, 8, 8), bool), (1, 1, 1), PLAN, np.random.default_rng(0)).any()
    assert not training_mask(brain, (1.0, 1.0), PLAN, np.random.default_rng(0), "none").any()
    with pytest.raises(ValueError):
        blob_mask(brain, (1.0, 1.0, 1.0), PLAN, np.random.default_rng(0))


def test_random_rotation_is_orthogonal():
    r = random_rotation(3, np.random.default_rng(0))
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-10)


SMALL = TrainingMaskPlan(block_sizes_mm=[2.0, 4.0], block_probabilities=[0.5, 0.5],
                         variance_range_blocks=[0.3, 10.0], n_points=20_000)


def _stats(spacing: float, plan: TrainingMaskPlan, draws: int = 100):
    shape = (int(96 / spacing),) * 3  # the same 96 mm field of view, all brain (blobs stay well inside it)
    brain = np.ones(shape, bool)
    rng = np.random.default_rng(11)
    volumes, extents = [], []
    for _ in range(draws):
        m = blob_mask(brain, (spacing,) * 3, plan, rng)
        volumes.append(m.sum() * spacing ** 3)
        extents.append(max(np.ptp(ax) + 1 for ax in np.nonzero(m)) * spacing)
    return np.mean(volumes), np.mean(extents)


def test_blob_size_in_mm_does_not_depend_on_spacing():
    vol1, ext1 = _stats(1.0, SMALL)
    vol2, ext2 = _stats(2.0, SMALL)
    assert abs(vol1 - vol2) / vol1 < 0.15, (vol1, vol2)
    assert abs(ext1 - ext2) / ext1 < 0.10, (ext1, ext2)
    # blocks counted in voxels instead of mm (2 and 4 voxels at 2 mm = 4 and 8 mm) would be far off: the test sees it
    doubled = TrainingMaskPlan(block_sizes_mm=[4.0, 8.0], block_probabilities=[0.5, 0.5],
                               variance_range_blocks=[0.3, 10.0], n_points=20_000)
    vol_bug, ext_bug = _stats(2.0, doubled, draws=30)
    assert abs(ext_bug - ext1) / ext1 > 0.2 and vol_bug > 2 * vol1
