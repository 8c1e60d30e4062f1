"""QC report: one PNG per case (three orthogonal slices through the strongest anomaly, then through each labelled
lesion, or each segmented region without labels) and qc/index.html.

Slices are shown in radiological convention after reorienting every image to LPS (array axes z=I->S, y=A->P,
x=R->L): axial with anterior up and patient right on the left, coronal and sagittal with superior up."""
from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from itermask_auto.utilities.atomic import atomic_path

logger = logging.getLogger(__name__)

SEG_COLOUR, LABEL_COLOUR = "#00e5ff", "#39ff14"


def _lps(image: Optional[sitk.Image]) -> Optional[np.ndarray]:
    return None if image is None else sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "anomalous" if value else "normal"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _slices(volume: np.ndarray, at: tuple) -> List[np.ndarray]:
    z, y, x = at
    return [volume[z], volume[:, y, :], volume[:, :, x]]  # axial, coronal, sagittal


MAX_REGION_ROWS = 6  # lesions (or, without a label, segmented regions) shown with their own slices


def _regions(mask: Optional[np.ndarray], spacing: tuple, limit: int) -> tuple:
    """The `limit` largest 26-connected regions of `mask` and how many there are: per region, the voxel it is shown
    at (its voxel nearest its centre of mass, so an irregular region is cut through itself), its size in ml and
    its boolean mask within its bounding box (`box`)."""
    from scipy import ndimage

    if mask is None or not np.any(mask > 0):
        return [], 0
    components, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())[1:]
    boxes = ndimage.find_objects(components)
    out = []
    for index in np.argsort(-sizes, kind="stable")[:limit]:
        box = boxes[index]
        inside = components[box] == index + 1
        where = np.argwhere(inside)
        nearest = where[np.argmin(((where - where.mean(axis=0)) ** 2).sum(axis=1))]
        at = tuple(int(v + b.start) for v, b in zip(nearest, box))
        out.append({"at": at, "ml": float(sizes[index]) * float(np.prod(spacing)) / 1000.0, "box": box,
                    "inside": inside})
    return out, int(n)


def _figure_rows(anomaly: np.ndarray, seg: Optional[np.ndarray], label: Optional[np.ndarray],
                 spacing: tuple) -> List[tuple]:
    """[(voxel, row title)]: the strongest anomaly first, then each labelled lesion's own slices (largest first;
    without a label, each segmented region's), at most MAX_REGION_ROWS of them."""
    at = np.unravel_index(int(np.argmax(anomaly)), anomaly.shape)
    rows = [(tuple(int(v) for v in at), "strongest anomaly")]
    regions, n = _regions(label if label is not None else seg, spacing, MAX_REGION_ROWS)
    what = "lesion" if label is not None else "segmented region"
    for k, r in enumerate(regions):
        title = f"{what} {k + 1} of {n}: {r['ml']:.2f} ml"
        if label is not None and seg is not None:
            title += f", {100 * float(np.mean(seg[r['box']][r['inside']] > 0)):.0f}% segmented"
        rows.append((r["at"], title))
    if n > len(regions):
        rows[-1] = (rows[-1][0], rows[-1][1] + f" (+{n - len(regions)} smaller not shown)")
    return rows


def case_figure(path: Path, case: Dict[str, Any], row: Dict[str, Any]) -> Path:
    """Write the QC PNG of one case; `case` holds the sitk images (load_case), `row` its metrics. Row 1: three
    slices through the strongest anomaly; then three through each labelled lesion (each segmented region when
    the case has no label), largest first."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    reoriented = sitk.DICOMOrient(case["anomaly"], "LPS")
    sx, sy, sz = reoriented.GetSpacing()
    anomaly = sitk.GetArrayFromImage(reoriented).astype(np.float32)
    seg, label, image = _lps(case["seg"]), _lps(case["label"]), _lps(case["image"])
    figure_rows = _figure_rows(anomaly, seg, label, (sx, sy, sz))
    positive = anomaly[anomaly > 0]
    vmax = float(np.quantile(positive, 0.999)) if positive.size else 1.0
    low = 0.1 * vmax  # below this the overlay is transparent
    grey = image if image is not None else anomaly
    nz = grey[grey > 0]
    g_lo, g_hi = (np.quantile(nz, [0.01, 0.995]) if nz.size else (0.0, 1.0))
    aspects = [sy / sx, sz / sx, sz / sy]
    origins = ["upper", "lower", "lower"]  # superior up in coronal and sagittal

    n_rows = len(figure_rows)
    fig, axes = plt.subplots(n_rows, 3, figsize=(12, 4.4 if n_rows == 1 else 3.8 * n_rows), dpi=72,
                             facecolor="black", squeeze=False)
    overlay = None
    for (at, row_title), row_axes in zip(figure_rows, axes):
        for k, ax in enumerate(row_axes):
            g = _slices(grey, at)[k]
            ax.imshow(g, cmap="gray", vmin=g_lo, vmax=g_hi, aspect=aspects[k], origin=origins[k],
                      interpolation="nearest")
            if image is not None:
                a = _slices(anomaly, at)[k]
                overlay = ax.imshow(np.ma.masked_less(a, low), cmap="inferno", vmin=low, vmax=vmax, alpha=0.6,
                                    aspect=aspects[k], origin=origins[k], interpolation="nearest")
            for mask, colour in ((seg, SEG_COLOUR), (label, LABEL_COLOUR)):
                if mask is not None:
                    m = _slices(mask, at)[k] > 0
                    if m.any() and not m.all():
                        # default origin: Z[i, j] at (j, i), the pixel centres imshow uses in either orientation
                        ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
            prefix = f"{row_title}\n" if k == 0 else "\n"
            ax.set_title(prefix + ["axial", "coronal", "sagittal"][k] + f" {['z', 'y', 'x'][k]}={at[k]}",
                         color="white", fontsize=10, loc="left" if k == 0 else "center")
            ax.axis("off")
    handles = [Line2D([], [], color=SEG_COLOUR, label="segmentation")]
    if label is not None:
        handles.append(Line2D([], [], color=LABEL_COLOUR, label="label"))
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, labelcolor="white", fontsize=10)
    if overlay is not None:
        cb = fig.colorbar(overlay, ax=list(axes.ravel()), fraction=0.015, pad=0.01)
        cb.ax.tick_params(colors="white", labelsize=8)
        cb.set_label("anomaly", color="white")
    what = "image + anomaly overlay" if image is not None else "anomaly map (grey)"
    fig.suptitle(f"{row['case']}   score {_fmt(row.get('volume_score'), 4)}   {_fmt(row.get('detection'))}   "
                 f"Dice {_fmt(row.get('dice'))}   [{what}; R on left]", color="white", fontsize=11)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor(), bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path


CSS = """body{font-family:sans-serif;background:#111;color:#ddd;margin:16px}a{color:#7cf}
table{border-collapse:collapse;margin-bottom:12px}td,th{border:1px solid #444;padding:3px 8px;text-align:right}
th{text-align:left}.case{border:1px solid #333;margin:10px 0;padding:8px;background:#1a1a1a}
.case img{max-width:100%;height:auto;display:block}.oracle{color:#aaa;font-style:italic}
.pos{color:#f96}.neg{color:#8d8}.warn{color:#fc4}"""


def _summary_table(summary: Dict[str, Any]) -> str:
    seg, vox = summary.get("segmentation", {}), summary.get("voxel_ranking", {})
    det, hfp = summary.get("detection", {}), summary.get("healthy_voxel_fpr", {})
    best = summary.get("best_global_threshold_on_labels", {})
    rows = [("pooled Dice (calibrated segmentation)", seg.get("pooled_dice")),
            ("mean case Dice (lesion cases)", seg.get("mean_case_dice")),
            ("pooled precision / recall", f"{_fmt(seg.get('pooled_precision'))} / {_fmt(seg.get('pooled_recall'))}"),
            ("pooled voxel AUROC / AUPRC", f"{_fmt(vox.get('pooled_auroc'))} / {_fmt(vox.get('pooled_auprc'))}"),
            ("detection AUROC / AUPRC (volume score)", f"{_fmt(det.get('auroc'))} / {_fmt(det.get('auprc'))}"),
            ("healthy voxel FPR (target alpha)", f"{_fmt(hfp.get('voxel_fpr'))} ({_fmt(hfp.get('alpha'))})")]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    body += (f"<tr class='oracle'><th>Dice of the best single global threshold on these labels (chosen on the "
             f"labels: not a result)</th><td>{html.escape(_fmt(best.get('dice')))}</td></tr>")
    resampled = summary.get("resampled_labels") or []
    if resampled:
        body += (f"<tr class='warn'><th>labels resampled to the prediction's grid</th>"
                 f"<td>{html.escape(', '.join(r['case'] for r in resampled))}</td></tr>")
    return f"<table>{body}</table>"


def write_index(qc_dir: Path, rows: List[Dict[str, Any]], summary: Dict[str, Any]) -> Path:
    """qc/index.html: cases by volume score (descending), with figure, score, decision, Dice and links."""
    def key(r: Dict[str, Any]) -> float:
        s = r.get("volume_score")
        return -float(s) if isinstance(s, (int, float)) else math.inf
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>itermask QC</title><style>{CSS}</style>"
             "</head><body><h1>itermask QC report</h1>",
             f"<p>{len(rows)} case(s), sorted by volume score (most anomalous first). Files: "
             "<a href='../summary.json'>summary.json</a>, <a href='../metrics_per_case.csv'>metrics_per_case.csv"
             "</a>. Cyan: segmentation, green: label.</p>", _summary_table(summary)]
    for r in sorted(rows, key=key):
        c = html.escape(r["case"])
        decision = r.get("detection")
        cls = "pos" if decision else "neg"
        dice = f" &middot; Dice {_fmt(r.get('dice'))}" if r.get("has_lesion") else " &middot; no lesion in label"
        files = (r.get("info") or {}).get("files") or {}  # the input's format with --output_format input
        links = " ".join(f"<a href='../{html.escape(f)}'>{n}</a>" for n, f in (
            ("json", f"{r['case']}.json"), ("anomaly", files.get("anomaly", f"{r['case']}_anomaly.nii.gz")),
            ("seg", files.get("seg", f"{r['case']}_seg.nii.gz"))))
        fig = html.escape(r.get("figure", f"{r['case']}.png"))
        warnings = r.get("input_warnings") or []
        ood = (f"<p class='warn'>&#9888; input outside the training data: {html.escape('; '.join(warnings))}. "
               "The score may reflect that, not an anomaly.</p>" if warnings else "")
        parts.append(f"<div class='case' id='{c}'><h3>{c}</h3><p>score {_fmt(r.get('volume_score'), 4)} &middot; "
                     f"<span class='{cls}'>{_fmt(decision)}</span>{dice} &middot; {links} &middot; "
                     f"<a href='{fig}'>figure</a></p>{ood}<img src='{fig}' alt='{c}'></div>")
    parts.append("</body></html>\n")
    path = Path(qc_dir) / "index.html"
    with atomic_path(path, ".html") as tmp:
        tmp.write_text("\n".join(parts))
    return path
