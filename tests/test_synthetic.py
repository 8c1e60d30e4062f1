"""Synthetic anomalies (itermask_synthetic): lesion rule, artefacts, dataset writing, real lesion masks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import shared_data_or_skip
from itermask_auto.dataset_conversion.phantom import make_phantom, write_phantom_dataset
from itermask_auto.evaluation import synthetic
from itermask_auto.evaluation.synthetic_artifacts import bias_field, ghosting, kspace_spike, slab
from itermask_auto.evaluation.synthetic_lesions import (apply_lesion_intensity, blob_lesions, channel_sign,
                                                        insert_lesions, load_lesion_components, place_components,
                                                        white_matter_region)
from itermask_auto.imageio.reader import same_geometry


@pytest.fixture(scope="module")
def head():
    ph = make_phantom(3, size=(40, 48, 40), spacing=(2.0, 2.0, 2.0), skull=False, anatomy_scale=0.5)
    return ph.image, sitk.GetArrayFromImage(ph.image), sitk.GetArrayFromImage(ph.brain_mask).astype(bool)


def test_lesion_intensity_rule(head):
    _, x, brain = head
    label, _ = blob_lesions(brain, (2.0, 2.0, 2.0), np.random.default_rng(0), n=1, radius_mm=(6.0, 6.0))
    assert label.sum() > 20 and not (label & ~brain).any()
    out, levels = apply_lesion_intensity(x, label, brain, (2.0, 2.0, 2.0), [-0.4])
    w = levels[0]
    assert np.percentile(x[brain & ~label], 50) < w <= x[brain].max()  # a high ("white-matter-ish") level
    # inside the lesion the local mean is (1 + c) W; the texture (x - smooth x) is kept
    inner = ndimage.binary_erosion(label)
    assert abs(out[inner].mean() - 0.6 * w) < 0.1 * w, (out[inner].mean(), w)
    # the change fades within a few mm: voxels > 6 mm from the lesion are untouched
    far = ndimage.distance_transform_edt(~label, sampling=2.0) > 6.0
    np.testing.assert_array_equal(out[far], x[far].astype(np.float32))
    hyper, _ = apply_lesion_intensity(x, label, brain, (2.0, 2.0, 2.0), [+0.4])
    assert hyper[inner].mean() > 1.2 * out[inner].mean() and hyper[inner].mean() > x[inner].mean()
    assert channel_sign("T1") == -1 and channel_sign("T1POST") == -1 and channel_sign("FLAIR") == 1


def test_artefacts_are_deterministic_and_labelled(head):
    _, x, brain = head
    sp = (2.0, 2.0, 2.0)
    for fn in (slab, bias_field, kspace_spike, ghosting):
        a, la, pa = fn(x, brain, sp, np.random.default_rng(7))
        b, lb, pb = fn(x, brain, sp, np.random.default_rng(7))
        np.testing.assert_array_equal(a, b)
        assert pa == pb and a.dtype == np.float32 and a.shape == x.shape
        assert np.abs(a - x)[brain].mean() > 0.02 * x[brain].mean(), fn.__name__   # visibly corrupted
        c, _, _ = fn(x, brain, sp, np.random.default_rng(8))
        assert not np.array_equal(a, c)
        if fn is not slab:
            assert not la.any()   # global artefacts: volume-level only

    out, label, p = slab(x, brain, sp, np.random.default_rng(1))
    assert label.any() and not (label & ~brain).any()
    ratio = out[label] / np.maximum(x[label], 1e-3)
    assert np.median(np.abs(ratio - p["factor"])) < 0.05            # the band is scaled by the factor
    rows = label.any(axis=tuple(a for a in range(3) if a != p["axis_zyx"]))   # the band along its axis
    assert rows.sum() * 2.0 <= p["thickness_mm"] + 4 and np.ptp(np.nonzero(rows)[0]) == rows.sum() - 1

    out, _, p = bias_field(x, brain, sp, np.random.default_rng(1))
    field = out[brain] / np.maximum(x[brain], 1e-3)
    assert np.exp(-p["amplitude"]) - 1e-3 <= field.min() and field.max() <= np.exp(p["amplitude"]) + 1e-3
    assert field.max() / field.min() > 1.3

    out, _, p = kspace_spike(x, brain, sp, np.random.default_rng(1))
    idx = np.meshgrid(*[np.arange(n) for n in x.shape], indexing="ij")
    wave = np.cos(sum(2 * np.pi * k * i / n for k, i, n in zip(p["k_index_zyx"], idx, x.shape)) + p["phase"])
    inside = ndimage.binary_erosion(brain, iterations=2)
    stripes = (out - x)[inside]   # in bright tissue |x + wave| ~ x + Re(wave): the spiked plane wave
    assert np.corrcoef(stripes, wave[inside])[0, 1] > 0.9
    assert abs(np.std(stripes) * np.sqrt(2) / x[brain].mean() - p["strength"]) < 0.05

    out, _, p = ghosting(x, brain, sp, np.random.default_rng(1))
    ax, n = p["axis_zyx"], x.shape[p["axis_zyx"]]
    outside = ~ndimage.binary_dilation(brain, iterations=2)
    shifted = np.roll(x, int(round(n / p["period"])), axis=ax)
    assert out[outside & (shifted > 300)].mean() > out[outside & (shifted < 50)].mean() + 30   # a ghost head


def test_lesions_are_placed_in_white_matter_on_t1(head):
    """On T1, lesion centres go to white matter (the brightest tissue); a hypointense lesion in grey matter would
    sit at grey-matter intensity and be invisible. Without a T1-like channel, anywhere in the brain."""
    ref, x, brain = head
    wm = white_matter_region([x], ["T1"], brain, (2.0, 2.0, 2.0))
    assert 0.3 < wm.sum() / brain.sum() < 0.5 and not (wm & ~brain).any()
    assert np.median(x[wm]) > np.median(x[brain & ~wm])
    assert white_matter_region([x], ["FLAIR"], brain, (2.0, 2.0, 2.0)) is None
    centres = []
    for seed in range(4):
        _, label, params = insert_lesions([x], ["T1"], brain, ref, np.random.default_rng(seed), None)
        assert params["placement"] == ["white matter"] and label.any()
        centres += [tuple(r["centre_index_zyx"]) for r in params["placements"]]
    assert len(centres) >= 8 and all(wm[c] for c in centres)
    _, _, params = insert_lesions([x], ["FLAIR"], brain, ref, np.random.default_rng(0), None)
    assert params["placement"] == ["anywhere in the brain"]


def test_placement_in_world_mm_on_another_grid(head, tmp_path):
    """A 10 mm cube drawn on a rotated 1 mm grid keeps its volume when placed on the 2 mm target."""
    cube = np.zeros((40, 40, 40), np.uint8)
    cube[10:20, 12:22, 15:25] = 1
    src = sitk.GetImageFromArray(cube)
    src.SetSpacing((1.0, 1.0, 1.0))
    src.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))   # 90 degrees about z
    src.SetOrigin((50.0, -20.0, 7.0))
    sitk.WriteImage(src, str(tmp_path / "m.nii.gz"))
    comps = load_lesion_components([tmp_path / "m.nii.gz"])
    assert len(comps) == 1 and comps[0].volume_mm3 == 1000
    ref, _, brain = head
    label, rec = place_components(comps, ref, brain, np.random.default_rng(0), n=1)
    assert len(rec) == 1 and not (label & ~brain).any()
    assert 0.7 * 125 <= label.sum() <= 1.3 * 125                     # 1000 mm3 / 8 mm3 per voxel
    assert np.ptp(np.argwhere(label), axis=0).max() <= 6             # still a compact 5-voxel cube


@pytest.fixture
def phantom_raw(tmp_path):
    raw = tmp_path / "raw"
    write_phantom_dataset(raw, 990, "Healthy", n_train=0, n_test_healthy=2, n_test_lesion=0, seed=4,
                          size=(40, 48, 40))
    return raw


def test_dataset_is_complete_geometry_exact_and_deterministic(phantom_raw, monkeypatch):
    monkeypatch.setenv("ITERMASK_raw", str(phantom_raw))
    kinds = ["lesion", "slab", "bias", "spike", "ghosting"]
    out = synthetic.make_synthetic_dataset(990, 991, "Synth", kinds, seed=5, lesion_masks="none")
    again = synthetic.make_synthetic_dataset("Healthy", 992, "Again", kinds, seed=5, lesion_masks="none")
    other = synthetic.make_synthetic_dataset(phantom_raw / "Dataset990_Healthy", 993, "Other", ["lesion"], seed=6,
                                             lesion_masks="none")
    manifest = json.loads((out / "synthetic_manifest.json").read_text())
    assert len(manifest["cases"]) == 10 and manifest["seed"] == 5 and manifest["split"] == "Ts"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTest"] == 10 and meta["channel_names"] == {"0": "T1"}
    src = phantom_raw / "Dataset990_Healthy"
    for case, info in manifest["cases"].items():
        assert info["anomalous"] is True and info["kind"] in kinds
        image = sitk.ReadImage(str(out / "imagesTs" / f"{case}_0000.nii.gz"))
        source = sitk.ReadImage(str(src / "imagesTs" / f"{info['source_case']}_0000.nii.gz"))
        label = sitk.ReadImage(str(out / "labelsTs" / f"{case}.nii.gz"))
        assert same_geometry(image, source, tol=0) and same_geometry(label, source, tol=0)
        assert image.GetSize() == source.GetSize() and image.GetOrigin() == source.GetOrigin()
        assert (out / "masksTs" / f"{case}.nii.gz").read_bytes() == \
               (src / "masksTs" / f"{info['source_case']}.nii.gz").read_bytes()
        n = int(sitk.GetArrayFromImage(label).sum())
        assert n == info["label_voxels"] and (n > 0) == (info["kind"] in ("lesion", "slab"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(
            sitk.ReadImage(str(again / "imagesTs" / f"{case}_0000.nii.gz"))))
    csv_rows = (out / "synthetic_manifest.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 11 and csv_rows[0].startswith("case,source_case,kind,anomalous")
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTs" / "phantom_healthy_000_lesion.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(other / "labelsTs" / "phantom_healthy_000_lesion.nii.gz")))
    assert not np.array_equal(a, b)   # another seed, other lesions


def test_blob_radius_sets_the_lesion_size(phantom_raw):
    small = synthetic.make_synthetic_dataset(phantom_raw / "Dataset990_Healthy", 981, "Small", ["lesion"], seed=2,
                                             raw_root=phantom_raw, lesion_masks="none", n_lesions=(1, 1),
                                             blob_radius=(3.0, 4.0))
    synthetic.main(["990", "--raw", str(phantom_raw), "--id", "982", "--name", "Large", "--lesion_masks", "none",
                    "--n_lesions", "1", "1", "--blob_radius", "12", "14"])
    large = phantom_raw / "Dataset982_Large"
    for folder, (lo, hi) in ((small, (3.0, 4.0)), (large, (12.0, 14.0))):
        manifest = json.loads((folder / "synthetic_manifest.json").read_text())
        assert manifest["blob_radius_mm"] == [lo, hi]
        for info in manifest["cases"].values():
            assert [lo <= r["radius_mm"] <= hi for r in info["params"]["placements"]] == [True]
    sizes = {f: [c["label_voxels"] for c in json.loads((f / "synthetic_manifest.json").read_text())["cases"].values()]
             for f in (small, large)}
    # a 3-4 mm blob holds a few dozen 2 mm voxels at most, a 12-14 mm one hundreds (less where it leaves the brain)
    assert max(sizes[small]) < 60 and min(sizes[large]) > 150, sizes
    for bad in ((5.0, 2.0), (0.0, 3.0)):
        with pytest.raises(ValueError, match="blob radius"):
            synthetic.make_synthetic_dataset(phantom_raw / "Dataset990_Healthy", 983, "Bad", ["lesion"],
                                             raw_root=phantom_raw, lesion_masks="none", blob_radius=bad)
    assert not any(p.name.startswith("Dataset983") for p in phantom_raw.iterdir())


def test_cli_and_bad_input(phantom_raw, tmp_path):
    synthetic.main(["990", "--raw", str(phantom_raw), "--id", "995", "--kinds", "slab", "--limit", "1",
                    "--lesion_masks", "none"])
    assert sorted(p.name for p in (phantom_raw / "Dataset995_Healthy_Synthetic" / "labelsTs").iterdir()) == \
        ["phantom_healthy_000_slab.nii.gz"]
    with pytest.raises(SystemExit):
        synthetic.main(["990", "--raw", str(phantom_raw), "--id", "996", "--cases", "nope"])
    with pytest.raises(SystemExit):
        synthetic.main(["990", "--raw", str(phantom_raw), "--id", "996", "--lesion_masks", str(tmp_path / "x")])
    assert not any(p.name.startswith("Dataset996") for p in phantom_raw.iterdir())   # nothing half-written


@pytest.mark.shared_data
def test_real_mslub_lesion_masks(phantom_raw, monkeypatch):
    masks = shared_data_or_skip("mslub_mni", "lesion_masks_all_patients")
    monkeypatch.setenv("ITERMASK_SHARED_DATA", str(masks.parents[1]))
    assert len(synthetic.find_lesion_masks("auto")) == 30
    files = sorted(masks.glob("*.nii.gz"))[:2]
    out = synthetic.make_synthetic_dataset(phantom_raw / "Dataset990_Healthy", 997, "Real", ["lesion"], seed=1,
                                           raw_root=phantom_raw, lesion_masks=files)
    manifest = json.loads((out / "synthetic_manifest.json").read_text())
    for case, info in manifest["cases"].items():
        p = info["params"]
        assert p["shape_source"] == "real_masks" and p["placements"]
        assert {r["source"] for r in p["placements"]} <= {f.name for f in files}
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTs" / f"{case}.nii.gz")))
        brain = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masksTs" / f"{case}.nii.gz"))).astype(bool)
        assert label.sum() > 0 and not (label.astype(bool) & ~brain).any()
