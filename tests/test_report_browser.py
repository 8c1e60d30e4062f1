"""The QC report renders in a real headless browser (Debian chromium): every case's figure is in the DOM, every
referenced PNG exists, and the screenshot is not blank. Install chromium with scripts/install_browser.sh."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from itermask_auto.evaluation.evaluate import evaluate_folder

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (run scripts/install_browser.sh as root: "
                                             "apt-get install -y chromium)")
def test_index_renders_in_headless_chromium(tmp_path):
    from test_evaluation import make_fake_prediction
    import matplotlib.image as mpimg

    d = make_fake_prediction(tmp_path, n_lesion=2, n_healthy_test=1)
    evaluate_folder(d["pred"], d["labelsTs"], brain_dir=d["masksTs"], images_dir=d["imagesTs"])
    index = d["pred"] / "qc" / "index.html"
    url = index.resolve().as_uri()

    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    sources = re.findall(r"<img[^>]*src=\"([^\"]+)\"", dom.stdout)
    cases = ("les_0", "les_1", "hts_0")
    assert sorted(sources) == sorted(f"{c}.png" for c in cases), dom.stdout[:2000]
    for src in sources:
        png = index.parent / src
        assert png.is_file() and png.stat().st_size > 0, png
    assert "oracle" in dom.stdout and "chosen on the labels: not a result" in dom.stdout

    shot = tmp_path / "shot.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", url)
    assert shot.is_file() and shot.stat().st_size > 0, run.stderr[-2000:]
    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (900, 1200)
    assert float(pixels.reshape(-1, 3).std(axis=0).max()) > 0.02  # not all one colour
    # the first figure was drawn: many distinct colours, not just text on a background
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
