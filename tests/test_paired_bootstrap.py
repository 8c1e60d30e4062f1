"""benchmarks/paired_bootstrap.py: the binned AUPRC, the paired case resampling and the command on files."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from benchmark_scripts import load_benchmark

from itermask_auto.evaluation import metrics as M

boot = load_benchmark("paired_bootstrap")


def test_binned_average_precision_is_exact_when_every_score_has_its_own_bin():
    rng = np.random.default_rng(0)
    scores = [rng.integers(0, 40, 500).astype(float) for _ in range(3)]   # 40 distinct values, ties included
    labels = [rng.random(500) < 0.1 + 0.01 * s for s in scores]
    cases = boot.MethodCases(scores, labels, np.zeros((3, 3), np.int64), bins=4096)
    exact = M.average_precision(np.concatenate(scores), np.concatenate(labels))
    assert cases.exact_auprc == pytest.approx(exact)
    assert cases.auprc(np.ones(3)) == pytest.approx(exact, abs=1e-12)
    # a case drawn twice counts twice
    doubled = M.average_precision(np.concatenate(scores + scores[:1]), np.concatenate(labels + labels[:1]))
    assert cases.auprc(np.array([2.0, 1.0, 1.0])) == pytest.approx(doubled, abs=1e-12)


def _method(maps, labels, segs):
    counts = np.array([((s & y).sum(), (s & ~y).sum(), (~s & y).sum()) for s, y in zip(segs, labels)])
    return boot.MethodCases(maps, labels, counts, bins=1024)


def test_a_method_against_itself_and_against_a_worse_one():
    rng = np.random.default_rng(1)
    labels = [rng.random(2000) < 0.05 for _ in range(12)]
    good = [y + 0.6 * rng.random(y.size) for y in labels]           # lesions ranked mostly first
    poor = [0.3 * y + rng.random(y.size) for y in labels]
    a = _method(good, labels, [m > 0.9 for m in good])
    b = _method(poor, labels, [m > 0.9 for m in poor])
    same = boot.compare(a, a, reps=200, seed=0)
    for figure in ("auprc", "dice"):
        assert same[figure]["difference"] == 0.0 and same[figure]["interval_95"] == [0.0, 0.0]
        assert same[figure]["share_a_at_least_b"] == 1.0
    better = boot.compare(a, b, reps=200, seed=0)
    for figure in ("auprc", "dice"):
        assert better[figure]["interval_95"][0] > 0 and better[figure]["share_a_at_least_b"] == 1.0
    assert better["dice"]["a"] == pytest.approx(M.dice_from_counts(*a.counts.sum(0)))
    flipped = boot.compare(b, a, reps=200, seed=0)
    assert flipped["auprc"]["difference"] == pytest.approx(-better["auprc"]["difference"])


def _write(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(path))


def test_the_command_scores_both_folders_in_one_brain_and_names_a_missing_mask(tmp_path, capsys):
    rng = np.random.default_rng(2)
    folders = {name: tmp_path / name for name in ("a", "b", "labels", "brains")}
    for folder in folders.values():
        folder.mkdir()
    truth = {}
    for k in range(4):
        case = f"case{k}"
        label = np.zeros((8, 8, 8), np.uint8)
        label[2:4, 2:5, 3:5] = 1
        label[0, 0, 0] = 1            # a label voxel outside the brain: missed by every segmentation (an fn)
        brain = np.zeros_like(label)
        brain[1:7, 1:7, 1:7] = 1
        _write(folders["labels"] / f"{case}.nii.gz", label)
        _write(folders["brains"] / f"{case}.nii.gz", brain)
        for name, noise in (("a", 0.5), ("b", 2.0)):
            anomaly = (label + noise * rng.random(label.shape)).astype(np.float32)
            anomaly[brain == 0] = 0
            anomaly[2, 2, 3:5] = 0     # exact zeros on lesion voxels in the brain: scored (the mask file decides
            anomaly[5, 5, 1:7] = 0     # the region, not map > 0), so they lower the AUPRC
            seg = (anomaly > 0.9) & (brain > 0)
            _write(folders[name] / f"{case}_anomaly.nii.gz", anomaly)
            _write(folders[name] / f"{case}_seg.nii.gz", seg.astype(np.uint8))
            (folders[name] / f"{case}.json").write_text("{}")
            truth.setdefault(name, []).append((anomaly[brain > 0], label[brain > 0] > 0, seg, label > 0))
    out = tmp_path / "out.json"
    boot.main(["-a", str(folders["a"]), "-b", str(folders["b"]), "-l", str(folders["labels"]),
               "-brain", str(folders["brains"]), "--reps", "50", "--json", str(out)])
    result = json.loads(out.read_text())
    for name in ("a", "b"):
        scores, labels, segs, volumes = (np.concatenate([c.ravel() for c in v]) for v in zip(*truth[name]))
        assert result["auprc"][f"{name}_exact"] == pytest.approx(M.average_precision(scores, labels))
        c = M.confusion(segs, volumes)   # the whole volume: the label voxel outside the brain counts as missed
        assert result["dice"][name] == pytest.approx(M.dice_from_counts(c["tp"], c["fp"], c["fn"]))
    assert result["cases"] == [f"case{k}" for k in range(4)]
    assert "4 cases, 50 paired case resamples" in capsys.readouterr().out
    (folders["brains"] / "case2.nii.gz").unlink()
    with pytest.raises(SystemExit, match="case2.nii.gz: brain mask missing"):
        boot.main(["-a", str(folders["a"]), "-b", str(folders["b"]), "-l", str(folders["labels"]),
                   "-brain", str(folders["brains"])])


def test_resamples_without_lesion_voxels_are_left_out_and_counted():
    rng = np.random.default_rng(3)
    labels = [rng.random(500) < 0.1, np.zeros(500, bool)]    # the second case has no lesion
    maps = [y + rng.random(500) for y in labels]
    a = _method(maps, labels, [m > 0.9 for m in maps])
    result = boot.compare(a, a, reps=300, seed=1)
    # about a quarter of the resamples draw the lesion-free case twice: no AUPRC there
    assert 30 < result["auprc"]["undefined_resamples"] < 120 and result["auprc"]["interval_95"] == [0.0, 0.0]
