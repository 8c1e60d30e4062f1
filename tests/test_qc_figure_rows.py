"""QC figures show each lesion's own slices (issue 17): one row for the strongest anomaly, then one per labelled
lesion, largest first (each segmented region when there is no label), capped, with the share segmented."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from itermask_auto.evaluation import report


def _ball(shape, centre, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _volumes():
    shape = (40, 48, 44)
    big, small = _ball(shape, (12, 14, 12), 5), _ball(shape, (28, 34, 30), 2)
    label = (big | small).astype(np.uint8)
    anomaly = np.full(shape, 0.1, np.float32)
    anomaly[30, 8, 36] = 9.0  # the strongest anomaly lies outside both lesions
    seg = np.zeros(shape, np.uint8)
    seg[:12][big[:12]] = 1  # the big lesion's lower part (z < 12) is segmented, the small one not at all
    return anomaly, seg, label, big, small


def test_rows_strongest_anomaly_then_each_lesion_largest_first():
    anomaly, seg, label, big, small = _volumes()
    rows = report._figure_rows(anomaly, seg, label, (2.0, 2.0, 2.0))
    assert [r[0] for r in rows][0] == (30, 8, 36)
    assert len(rows) == 3
    (at_big, title_big), (at_small, title_small) = rows[1], rows[2]
    assert big[at_big] and small[at_small]   # each row cuts through its own lesion
    share = 100 * seg[big].mean()
    assert title_big.startswith("lesion 1 of 2: ") and f"{share:.0f}% segmented" in title_big
    assert f"{big.sum() * 8 / 1000:.2f} ml" in title_big
    assert title_small.startswith("lesion 2 of 2") and title_small.endswith(", 0% segmented")


def test_without_label_rows_follow_the_segmented_regions():
    anomaly, seg, _, big, _ = _volumes()
    rows = report._figure_rows(anomaly, seg, None, (1.0, 1.0, 1.0))
    assert len(rows) == 2 and rows[1][1].startswith("segmented region 1 of 1")
    assert seg[rows[1][0]] == 1


def test_rows_are_capped_and_say_how_many_are_left_out():
    shape = (20, 20, 60)
    label = np.zeros(shape, np.uint8)
    n = report.MAX_REGION_ROWS + 3
    for k in range(n):
        label[8:10, 8:10, 3 + 6 * k: 5 + 6 * k + (k == 0)] = 1  # separate blocks; the first is the largest
    rows = report._figure_rows(np.ones(shape, np.float32), None, label, (1.0, 1.0, 1.0))
    assert len(rows) == 1 + report.MAX_REGION_ROWS
    assert rows[1][0][2] in (3, 4, 5) and "of %d" % n in rows[1][1]
    assert rows[-1][1].endswith("(+3 smaller not shown)")


def test_case_figure_has_a_row_per_lesion(tmp_path):
    import matplotlib.image as mpimg
    anomaly, seg, label, _, _ = _volumes()

    def image(a):
        im = sitk.GetImageFromArray(a)
        im.SetSpacing((2.0, 2.0, 2.0))
        return im
    case = {"anomaly": image(anomaly), "seg": image(seg), "label": image(label), "image": image(anomaly * 0 + 1)}
    one_row = dict(case, label=None, seg=image(np.zeros_like(seg)))
    tall = mpimg.imread(report.case_figure(tmp_path / "a.png", case, {"case": "a"}))
    short = mpimg.imread(report.case_figure(tmp_path / "b.png", one_row, {"case": "b"}))
    assert tall.shape[0] > 2.5 * short.shape[0]   # three rows against one
