"""The planned median filter of the anomaly map (inference.map_median_mm): kernels in voxels from mm, thin
healthy error lines removed while lesion blobs stay, the final mask kept equal to {filtered map > τ}, and the
engine applying it (Predictor.postprocess) only when the plan asks for it."""
from __future__ import annotations

import types

import numpy as np

from itermask_auto.experiment_planning.plans import InferencePlan
from itermask_auto.inference.map_filter import filter_result, median_kernel
from itermask_auto.inference.predictor import Predictor
from itermask_auto.inference.result import InferenceResult, finish


def test_kernel_voxels_from_mm():
    assert median_kernel(5.0, (2.0, 2.0, 2.0)) == (3, 3, 3)
    assert median_kernel(5.0, (1.0, 1.0, 1.0)) == (5, 5, 5)
    assert median_kernel(5.0, (5.0, 1.0, 1.5)) == (1, 5, 3)   # a thick slice axis is not filtered
    assert median_kernel(0.0, (1.0, 1.0, 1.0)) == (1, 1, 1)


def _result(tau=1.0):
    shape = (24, 24, 24)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    rng = np.random.default_rng(0)
    amap = (0.3 * rng.random(shape)).astype(np.float32)
    amap[:, 12, :] = 2.0                      # a one-voxel-thick sheet of high error (falx-like)
    z, y, x = np.ogrid[:24, :24, :24]
    blob = (z - 8) ** 2 + (y - 6) ** 2 + (x - 8) ** 2 <= 9
    amap[blob] = 3.0                          # a lesion of radius 3 voxels
    amap[~brain] = 0
    res = finish(InferenceResult(anomaly_map=amap, final_mask=(amap > tau) & brain, tau=tau, procedure="t",
                                 passes=1), brain)
    return res, brain, blob


def test_thin_lines_go_blobs_stay_and_the_mask_stays_the_thresholded_map():
    res, brain, blob = _result()
    before = res.final_mask.sum()
    res.scores["own"] = 7.0
    out = filter_result(res, brain, 5.0, (2.0, 2.0, 2.0))
    assert not out.final_mask[:, 12, :].any()                  # the sheet is gone
    assert out.final_mask[8, 6, 8] and out.final_mask[blob].mean() > 0.6  # the blob's core stays
    assert out.final_mask.sum() < before
    np.testing.assert_array_equal(out.final_mask, (out.anomaly_map > out.tau) & brain)
    assert not out.anomaly_map[~brain].any()
    assert out.scores["mask_fraction"] == out.final_mask.sum() / brain.sum() and out.scores["own"] == 7.0


def test_engine_filters_only_when_planned():
    for width, changed in ((0.0, False), (5.0, True)):
        res, brain, _ = _result()
        original = res.anomaly_map.copy()
        fake = types.SimpleNamespace(plans=types.SimpleNamespace(inference=InferencePlan(map_median_mm=width)),
                                     config=types.SimpleNamespace(spacing=[2.0, 2.0, 2.0]))
        out = Predictor.postprocess(fake, res, brain)
        assert (not np.array_equal(out.anomaly_map, original)) == changed
    assert InferencePlan().map_median_mm == 0.0   # plans made before the key predict as they did
