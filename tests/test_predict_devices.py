"""itermask_predict on several devices (issue 13): the device list, the share of cases per worker, and a folder
predicted by two worker processes (two CPU workers stand in for two GPUs: the same code path, another device
string) giving the same files as one process."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from itermask_auto.inference.devices import parse_devices, predict_on_devices, worker_parts
from itermask_auto.inference.predict_folder import predict_folder

trainer_fixtures = pytest.importorskip("trainer_fixtures")
from user_report_fixtures import train_tiny_model, write_case  # noqa: E402


def test_device_list():
    assert parse_devices("cpu", visible_gpus=0) == ["cpu"]
    assert parse_devices("cuda", visible_gpus=1) == ["cuda"]
    assert parse_devices("cuda", visible_gpus=4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert parse_devices("cuda:2", visible_gpus=4) == ["cuda:2"]
    assert parse_devices("cuda:0,2", visible_gpus=4) == ["cuda:0", "cuda:2"]
    for bad in ("cuda:4", "cuda:0,0", "cuda:x", "tpu"):
        with pytest.raises(ValueError):
            parse_devices(bad, visible_gpus=4)


@pytest.mark.parametrize("num_parts,n_devices", [(1, 2), (3, 2), (2, 3)])
def test_every_case_goes_to_exactly_one_worker(num_parts, n_devices):
    cases = [f"c{i:02d}" for i in range(17)]
    for part_id in range(num_parts):
        machine = cases[part_id::num_parts]
        shares = [cases[p::n] for n, p in worker_parts(num_parts, part_id, n_devices)]
        assert sorted(sum(shares, [])) == sorted(machine)
        assert shares == [machine[k::n_devices] for k in range(n_devices)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train_tiny_model(tmp_path_factory)


def test_two_workers_write_what_one_process_writes(model, tmp_path, monkeypatch):
    root, fold_dir = model
    trainer_fixtures.set_roots(monkeypatch, root)
    images, masks = tmp_path / "images", tmp_path / "masks"
    for k in range(3):
        write_case(images, masks, f"case{k}", seed=300 + k)
    common = dict(input_dir=images, model_dir=fold_dir, masks_dir=masks, progress=False)
    one = predict_folder(output_dir=tmp_path / "one", device="cpu", **common)
    two = predict_on_devices(["cpu", "cpu"], output_dir=tmp_path / "two", **common)
    assert sorted(two["cases"]) == sorted(one["cases"]) == ["case0", "case1", "case2"]
    assert two["devices"] == ["cpu", "cpu"] and not two["failures"]
    for case in one["cases"]:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "one" / f"{case}_anomaly.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "two" / f"{case}_anomaly.nii.gz")))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    merged = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert merged["n_cases"] == 3 and merged["n_failed"] == 0


def test_a_setup_error_in_a_worker_names_its_device(model, tmp_path, monkeypatch):
    root, fold_dir = model
    trainer_fixtures.set_roots(monkeypatch, root)
    with pytest.raises(ValueError, match=r"cpu: .*"):
        predict_on_devices(["cpu", "cpu"], input_dir=tmp_path, output_dir=tmp_path / "out",
                           model_dir=tmp_path / "no_such_fold", progress=False)
