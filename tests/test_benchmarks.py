"""benchmarks/real_data.py end to end on phantoms (--smoke): every test set, the table, and the resume path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_real_data_benchmark_smoke_writes_every_row_and_resumes(tmp_path, monkeypatch):
    for var in ("ITERMASK_raw", "ITERMASK_preprocessed", "ITERMASK_results"):
        monkeypatch.setenv(var, "unset")   # set_roots overwrites them; monkeypatch then restores (or deletes) them
    real_data = load_benchmark("real_data")
    monkeypatch.setattr(real_data, "SHARED", tmp_path / "no_shared_data")   # blobs everywhere, not the MSLUB masks
    docs_before = (REPO / "docs" / "benchmarks.md").read_text()
    work = tmp_path / "work"
    assert real_data.main(["--smoke", "--methods", "ae", "--work_dir", str(work)]) == 0
    results = json.loads((work / "real_data_results.json").read_text())
    metrics = results["ae_3d"]["metrics"]
    assert set(metrics) == {"mslub", "healthy", "synth_lesions", "synth_large"}
    for name in ("mslub", "synth_lesions", "synth_large"):
        assert 0.0 <= metrics[name]["auprc"] <= 1.0 and metrics[name]["n"] >= 3
    manifest = json.loads(next((work / "raw").glob("Dataset103_*/synthetic_manifest.json")).read_text())
    assert manifest["blob_radius_mm"] == list(real_data.LARGE_BLOB_RADIUS_MM)
    table = (work / "benchmarks_smoke.md").read_text()
    assert "SMOKE run on phantoms" in table and table.count("| ae (3d) |") == 4
    assert (REPO / "docs" / "benchmarks.md").read_text() == docs_before   # a smoke run never touches the docs
    # a rerun resumes: the model and every prediction are reused, the metrics are the same
    assert real_data.main(["--smoke", "--methods", "ae", "--work_dir", str(work)]) == 0
    again = json.loads((work / "real_data_results.json").read_text())["ae_3d"]
    assert again["train_s"] == 0.0 and again["metrics"] == metrics
    assert all(t["predicted_now"] == 0 for t in again["timing"].values())
    # a work folder from before the large-lesion set: the set is made and only its scans are predicted
    for old in (*(work / "raw").glob("Dataset103_*"), work / "predictions" / "ae_3d" / "synth_large"):
        shutil.rmtree(old)
    assert real_data.main(["--smoke", "--methods", "ae", "--work_dir", str(work)]) == 0
    upgraded = json.loads((work / "real_data_results.json").read_text())["ae_3d"]
    assert upgraded["train_s"] == 0.0 and upgraded["timing"]["synth_large"]["predicted_now"] >= 3
    assert all(t["predicted_now"] == 0 for name, t in upgraded["timing"].items() if name != "synth_large")
