"""Datasets are found by ID, by name or by folder name; dataset.json and channel naming are checked."""
from __future__ import annotations

import json

import pytest

from itermask_auto.imageio.errors import InputError
from itermask_auto.utilities.dataset import find_dataset, list_cases, load_dataset_json


def test_find_dataset_by_id_name_and_folder(tmp_path):
    for name in ("Dataset001_IXI_T1", "Dataset011_MSLUB_T1", "notADataset"):
        (tmp_path / name).mkdir()
    assert find_dataset(tmp_path, 1).name == "Dataset001_IXI_T1"
    assert find_dataset(tmp_path, "001").name == "Dataset001_IXI_T1"
    assert find_dataset(tmp_path, "IXI_T1").name == "Dataset001_IXI_T1"
    assert find_dataset(tmp_path, "Dataset011_MSLUB_T1").name == "Dataset011_MSLUB_T1"
    with pytest.raises(FileNotFoundError, match="no dataset '7'"):
        find_dataset(tmp_path, 7)
    (tmp_path / "Dataset001_Other").mkdir()
    with pytest.raises(FileNotFoundError, match="ambiguous"):
        find_dataset(tmp_path, 1)


@pytest.mark.parametrize("meta, words", [
    ({"file_ending": ".nii.gz"}, "missing key"),
    ({"channel_names": {}, "file_ending": ".nii.gz"}, "non-empty"),
    ({"channel_names": {"1": "T1"}, "file_ending": ".nii.gz"}, "0..N-1"),
    ({"channel_names": {"0": "T1"}, "file_ending": "nii.gz"}, "start with"),
])
def test_bad_dataset_json(tmp_path, meta, words):
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=words) as err:
        load_dataset_json(tmp_path)
    assert "dataset.json" in str(err.value) and "\n" not in str(err.value)


def test_channel_naming(tmp_path):
    images = tmp_path / "imagesTr"
    images.mkdir()
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz"):
        (images / name).write_bytes(b"")
    cases = list_cases(images, 2, ".nii.gz")
    assert sorted(cases) == ["a", "b"] and [p.name for p in cases["a"]] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    (images / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="notes.txt.*CASE_XXXX"):
        list_cases(images, 2, ".nii.gz")
    (images / "notes.txt").unlink()
    (images / "b_0001.nii.gz").unlink()
    with pytest.raises(InputError, match="missing channel"):
        list_cases(images, 2, ".nii.gz")
