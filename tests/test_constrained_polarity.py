"""The constrained methods' map polarity (methods/constrained/polarity.py): how each polarity reads a map, the
generated lesions it is chosen on (healthy validation scans, no file read), and the choice itself."""
from __future__ import annotations

import numpy as np
import pytest

import trainer_fixtures
from itermask_auto.calibration.context import CalibrationContext
from itermask_auto.methods.constrained.polarity import (AUTHORS_POLARITY, POLARITIES, choose_polarity, orient, pick,
                                                        polarity_auprc, with_generated_lesions)

INTENSITY_RANGE = (-1.0, 7.0)
LESIONS = {"count": [2, 3], "radius_mm": [4.0, 6.0], "contrast": [0.4, 0.5]}


def test_orient_reads_the_map_in_each_polarity_and_keeps_zero_outside_the_region():
    rng = np.random.default_rng(0)
    amap = rng.random((4, 5, 6)).astype(np.float32)
    region = np.zeros(amap.shape, bool)
    region[1:3, 1:4, 1:5] = True
    amap[~region] = 0
    values = amap[region]
    assert orient(amap, region, "high") is amap
    low = orient(amap, region, "low")
    np.testing.assert_allclose(low[region], values.max() - values)
    two = orient(amap, region, "two_sided")
    np.testing.assert_allclose(two[region], np.abs(values - np.median(values)))
    for out in (low, two):
        assert (out[~region] == 0).all() and out.min() >= 0
    with pytest.raises(ValueError, match="map_polarity 'auto'"):
        orient(amap, region, "auto")


def test_pick_takes_the_best_polarity_and_the_authors_on_ties_or_nothing():
    assert pick({"high": 0.1, "low": 0.3, "two_sided": 0.2}) == "low"
    assert pick({"high": 0.3, "low": 0.3, "two_sided": 0.2}) == AUTHORS_POLARITY
    assert pick({p: float("nan") for p in POLARITIES}) == AUTHORS_POLARITY


def _healthy(seed: int):
    image, brain = trainer_fixtures._phantom_arrays(seed)
    return trainer_fixtures._normalise(image, brain)[None], brain.astype(bool)


@pytest.mark.parametrize("channel, darker", [("T1", True), ("FLAIR", False)])
def test_generated_lesions_follow_the_channel_sign_inside_the_brain_only(channel, darker):
    data, brain = _healthy(3)
    changed, label = with_generated_lesions(data, brain, trainer_fixtures.SPACING, [channel], INTENSITY_RANGE,
                                            np.random.default_rng(1), LESIONS)
    assert label.any() and not (label & ~brain).any()
    np.testing.assert_array_equal(changed[0][~brain], data[0][~brain])
    shift = float(changed[0][label].mean() - data[0][label].mean())
    assert (shift < -0.1) if darker else (shift > 0.1), shift


class _Phantoms(CalibrationContext):
    """Healthy phantom "validation cases" served from memory."""

    def load_unscored(self, case):
        data, brain = _healthy(int(case.split("_")[1]))
        return data, None, brain, {}


@pytest.mark.parametrize("channel, expected", [("T1", "low"), ("FLAIR", "high")])
def test_auto_polarity_is_chosen_on_generated_lesions_in_healthy_cases(tmp_path, channel, expected):
    """A stand-in attention that is just the image's brightness: generated T1 lesions are dark, so "low" ranks
    them; FLAIR lesions are bright, so the authors' "high" does."""
    cases = [f"case_{i}" for i in range(6)] + ["case_0@automatic"]
    context = _Phantoms(cases, tmp_path, spacing=trainer_fixtures.SPACING)
    mp = {"intensity_range": INTENSITY_RANGE, "polarity_cases": 3, "polarity_lesions": LESIONS}

    def brightness(data, brain):
        amap = np.where(brain, (data[0] - data[0][brain].min()) / np.ptp(data[0][brain]), 0).astype(np.float32)
        return amap, brain

    keys = choose_polarity(mp, [channel], context, seed=0, attention_map=brightness)
    assert keys["map_polarity"] == expected, keys["polarity_auprc"]
    assert keys["polarity_cases"] == ["case_0", "case_2", "case_5"]      # evenly spread, no "@variant"
    assert keys["polarity_auprc"][expected] == max(keys["polarity_auprc"].values())


def test_polarity_auprc_pools_the_cases_and_orients_each_on_its_own():
    values = [np.array([0.9, 0.1, 0.5], np.float32), np.array([2.0, 1.9, 2.1], np.float32)]
    truths = [np.array([False, True, False]), np.array([False, False, False])]
    auprc = polarity_auprc(values, truths)
    # "low" = per-case max - value: case 1's lesion voxel scores 0.8, above every other voxel of both cases
    assert auprc["low"] == pytest.approx(1.0) and auprc["high"] < 0.3
    assert np.isnan(polarity_auprc(values[1:], truths[1:])["high"])     # no lesion voxel: nothing measured
