"""Evaluate an itermask_predict output folder against lesion labels: per case and pooled.

Honesty rule: the segmentation evaluated is the one itermask_predict wrote with the threshold calibrated on healthy
validation data. The best single global threshold chosen on the test labels is reported only beside it, as
"best_global_threshold_on_labels": not a result, and not an upper bound (per-subject thresholds can beat it)."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from itermask_auto.evaluation import metrics as M
from itermask_auto.evaluation.grids import Resampled, on_grid
from itermask_auto.evaluation.training_cases import refuse_labelled_training_cases
from itermask_auto.imageio.errors import InputError, SetupError
from itermask_auto.utilities.atomic import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

NIFTI = ".nii.gz"
ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")   # what itermask_predict reads and (--output_format input) writes
SUMMARY_FILE = "summary.json"
CSV_FILE = "metrics_per_case.csv"
DEFAULT_ALPHA = 0.01
CSV_COLUMNS = ("case", "has_lesion", "volume_score", "detection", "dice", "precision", "recall", "auroc", "auprc",
               "tp", "fp", "fn", "label_voxels", "seg_voxels", "brain_voxels", "lesion_volume_mm3", "n_lesions",
               "n_lesions_detected", "voxel_fpr", "brain_source", "label_resampled")


def find_file(folder: Path, stem: str) -> Path:
    """folder/stem + the first ending present (NIfTI if none is: the name a missing-file message shows)."""
    return next((Path(folder) / f"{stem}{e}" for e in ENDINGS if (Path(folder) / f"{stem}{e}").is_file()),
                Path(folder) / f"{stem}{NIFTI}")


def _stem(name: str, suffix: str) -> Optional[str]:
    ending = next((e for e in ENDINGS if name.endswith(suffix + e)), None)
    return name[: -len(suffix + ending)] if ending else None


def list_prediction_cases(pred_dir: Path) -> List[str]:
    """Finished itermask_predict cases: CASE_anomaly and CASE_seg (NIfTI, or the input's format) and CASE.json."""
    pred_dir = Path(pred_dir)
    stems = {_stem(p.name, "_anomaly") for p in pred_dir.glob("*_anomaly.*")} - {None}
    cases = sorted(c for c in stems if find_file(pred_dir, f"{c}_seg").is_file() and (pred_dir / f"{c}.json").is_file())
    if not cases:
        raise SetupError(pred_dir, "no finished predictions (CASE_anomaly.nii.gz + CASE_seg.nii.gz + CASE.json)")
    return cases


BRAIN_FROM_FILE = "brain mask file"   # a case's brain_source when -brain held its mask


def _read(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(path, f"cannot read image ({str(e).strip().splitlines()[-1][:120]})") from None


def load_case(pred_dir: Path, case: str, ref_dir: Optional[Path], brain_dir: Optional[Path],
              images_dir: Optional[Path], resampled: Optional[List[Resampled]] = None) -> Dict[str, Any]:
    """sitk images of one case on the prediction's grid: anomaly, seg, label (None without ref_dir), brain,
    image (None without images_dir), plus the CASE.json content. Files resampled on the way go to `resampled`."""
    anomaly = sitk.Cast(_read(find_file(pred_dir, f"{case}_anomaly")), sitk.sitkFloat32)
    seg_path = find_file(pred_dir, f"{case}_seg")
    seg = on_grid(_read(seg_path), anomaly, seg_path, "segmentation", case, resampled)
    info = read_json(pred_dir / f"{case}.json")
    label = None
    if ref_dir is not None:
        path = find_file(ref_dir, case)
        if not path.is_file():
            raise InputError(path, f"label missing for predicted case '{case}'")
        label = on_grid(_read(path), anomaly, path, "label", case, resampled)
    brain, source = None, "anomaly > 0 or segmentation"
    if brain_dir is not None:
        path = find_file(brain_dir, case)
        if path.is_file():
            brain, source = on_grid(_read(path), anomaly, path, "brain mask", case, resampled), BRAIN_FROM_FILE
        else:
            logger.warning("%s: no brain mask; using anomaly > 0 as the brain", path)
    image = None
    if images_dir is not None:
        path = find_file(images_dir, f"{case}_0000")
        if path.is_file():
            image = on_grid(sitk.Cast(_read(path), sitk.sitkFloat32), anomaly, path, "image", case, resampled)
        else:
            logger.warning("%s: image missing; the QC figure shows the anomaly map instead", path)
    return {"anomaly": anomaly, "seg": seg, "label": label, "brain": brain, "brain_source": source,
            "image": image, "info": info}


def arrays(c: Dict[str, Any]) -> Dict[str, np.ndarray]:
    a = sitk.GetArrayFromImage(c["anomaly"])
    seg = sitk.GetArrayFromImage(c["seg"]) > 0
    label = sitk.GetArrayFromImage(c["label"]) > 0 if c["label"] is not None else np.zeros(a.shape, bool)
    # without a mask file the brain is where the map is defined: export fills 0 outside the brain
    brain = sitk.GetArrayFromImage(c["brain"]) > 0 if c["brain"] is not None else (a > 0) | seg
    return {"anomaly": a, "seg": seg, "label": label, "brain": brain}


def warn_rim_without_brain_masks(rows: List[Dict[str, Any]]) -> None:
    """Without a brain mask file the scored brain is where the map is > 0: a brain-rim margin (CASE.json
    brain_erosion_mm) then drops the lesion voxels at the brain's edge from the ranking metrics instead of counting
    them as missed."""
    rim = {r["case"]: float(r["info"].get("brain_erosion_mm") or 0.0) for r in rows
           if r["brain_source"] != BRAIN_FROM_FILE}
    rim = {case: mm for case, mm in rim.items() if mm > 0}
    if rim:
        logger.warning("%d case(s) (e.g. %s) scored without a brain mask file while their maps leave out a %g mm "
                       "brain-rim margin: lesion voxels there are not counted in AUROC/AUPRC; pass -brain MASKS to "
                       "score the whole brain", len(rim), sorted(rim)[0], max(rim.values()))


def decision(info: Dict[str, Any]) -> Optional[bool]:
    for key in ("detection", "anomalous"):  # predictor versions used either name
        if info.get(key) is not None:
            return bool(info[key])
    return None


def case_metrics(a: Dict[str, np.ndarray], voxel_mm3: float) -> Dict[str, Any]:
    """Metrics of one case; ranking metrics use the continuous map inside the brain only."""
    c = M.confusion(a["seg"], a["label"])
    scores, y = a["anomaly"][a["brain"]], a["label"][a["brain"]]
    normal = a["brain"] & ~a["label"]
    les = M.lesions(a["label"], a["seg"], voxel_mm3)
    return {"has_lesion": bool(a["label"].any()), **{k: c[k] for k in ("tp", "fp", "fn")},
            "dice": M.dice_from_counts(c["tp"], c["fp"], c["fn"]),
            "precision": M.precision_from_counts(c["tp"], c["fp"]), "recall": M.recall_from_counts(c["tp"], c["fn"]),
            "auroc": M.auroc(scores, y), "auprc": M.average_precision(scores, y),
            "label_voxels": int(a["label"].sum()), "seg_voxels": int(a["seg"].sum()),
            "brain_voxels": int(a["brain"].sum()), "label_voxels_outside_brain": int((a["label"] & ~a["brain"]).sum()),
            "lesion_volume_mm3": float(a["label"].sum() * voxel_mm3), "n_lesions": len(les),
            "n_lesions_detected": sum(lesion["detected"] for lesion in les), "lesions": les,
            "voxel_fpr": float((a["seg"] & normal).sum() / max(int(normal.sum()), 1)),
            "seg_in_brain": int((a["seg"] & a["brain"]).sum())}


def model_calibration(infos: List[Dict[str, Any]]) -> tuple[str, Dict[str, Any]]:
    """(path, contents) of calibration.json in the first model folder named by the CASE.json records that has one;
    ("", {}) if none."""
    for info in infos:
        cal = Path(str(info.get("model_folder") or "")) / "calibration.json"
        if info.get("model_folder") and cal.is_file():
            return str(cal), read_json(cal)
    return "", {}


def resolve_alpha(infos: List[Dict[str, Any]], calibration: tuple[str, Dict[str, Any]],
                  alpha: Optional[float]) -> tuple[float, str]:
    """Calibration target: CASE.json 'alpha' > the model's calibration.json > the --alpha argument > 0.01."""
    for info in infos:
        if isinstance(info.get("alpha"), (int, float)):
            return float(info["alpha"]), "CASE.json"
    path, cal = calibration
    if isinstance(cal.get("alpha"), (int, float)):
        return float(cal["alpha"]), path
    return (float(alpha), "--alpha") if alpha is not None else (DEFAULT_ALPHA, "default")


def one_model(infos: List[Dict[str, Any]]) -> bool:
    """Whether every prediction names the same model folder: one model's healthy thresholds cut every map only
    then (folds are different models with their own error scales)."""
    folders = {str(i["model_folder"]) for i in infos if i.get("model_folder")}
    if len(folders) > 1:
        logger.warning("predictions from %d model folders: dice_at_healthy_thresholds left empty (each model's "
                       "thresholds fit its own maps only; evaluate each model's predictions on their own)",
                       len(folders))
    return len(folders) <= 1


def healthy_thresholds(calibration: Dict[str, Any]) -> Dict[str, float]:
    """The voxel thresholds the model's calibration set on healthy validation scans: "alpha_A" (the
    segmentation's) and "healthy_fpr_F" for each level of voxel_thresholds."""
    out = {f"healthy_fpr_{float(k):g}": float(v) for k, v in (calibration.get("voxel_thresholds") or {}).items()
           if isinstance(v, (int, float))}
    if isinstance(calibration.get("voxel_threshold"), (int, float)):
        out[f"alpha_{float(calibration.get('alpha', DEFAULT_ALPHA)):g}"] = float(calibration["voxel_threshold"])
    return out


def _clean(obj: Any) -> Any:
    """NaN -> None so summary.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                            (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})


BEST_GLOBAL_KEY = "best_global_threshold_on_labels"
BEST_GLOBAL_NOTE = ("best single global threshold on these test labels (pooled in-brain sweep). Chosen on the labels, "
                    "so not a result; and not an upper bound: per-subject thresholds (the calibrated segmentation) "
                    "can score higher. Shown beside segmentation.pooled_dice only")


class PooledVoxels:
    """In-brain anomaly values and labels of all cases, for pooled AUROC / AUPRC and the best global threshold."""

    def __init__(self) -> None:
        self.scores: List[np.ndarray] = []
        self.labels: List[np.ndarray] = []

    def add(self, a: Dict[str, np.ndarray]) -> None:
        self.scores.append(a["anomaly"][a["brain"]].astype(np.float32))
        self.labels.append(a["label"][a["brain"]])

    def dice_at(self, thresholds: Dict[str, float]) -> Dict[str, Dict[str, Any]]:
        """Pooled Dice / precision / recall of map > threshold, per named threshold (before compute frees the maps)."""
        out = {}
        for name, threshold in thresholds.items():
            tp = fp = fn = 0
            for s, y in zip(self.scores, self.labels):
                hit = s > threshold
                tp, fp, fn = tp + int((hit & y).sum()), fp + int((hit & ~y).sum()), fn + int((~hit & y).sum())
            out[name] = {"threshold": float(threshold), "pooled_dice": M.dice_from_counts(tp, fp, fn),
                         "pooled_precision": M.precision_from_counts(tp, fp),
                         "pooled_recall": M.recall_from_counts(tp, fn)}
        return out

    def compute(self) -> tuple[Dict[str, Any], Dict[str, Any]]:
        """(voxel ranking metrics, best single global threshold on the labels) from one sort of the pooled map."""
        s, y = np.concatenate(self.scores), np.concatenate(self.labels)
        self.scores, self.labels = [], []  # free the memory
        r = M.ranking_metrics(s, y)
        ranking = {"pooled_auroc": r["auroc"], "pooled_auprc": r["auprc"],
                   "prevalence": float(y.mean()) if y.size else M.NAN, "n_voxels": int(y.size)}
        best = {"dice": r["oracle_dice"], "threshold": r["oracle_threshold"], "note": BEST_GLOBAL_NOTE}
        return ranking, best


def lesion_size_tertiles(lesion_rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Lesion-wise detection rate by tertile of lesion volume (lesions pooled over cases), and per-case Dice by
    tertile of the case's total lesion volume (lesion load)."""
    out: Dict[str, Any] = {"definition": "lesion = 26-connected component of the label; detected = overlaps the "
                                         "segmentation; tertiles = 1/3, 2/3 quantiles of the volumes (mm3)"}
    lesions = [lesion for r in lesion_rows for lesion in r["lesions"]]
    if lesions:
        edges = M.tertile_edges([lesion["volume_mm3"] for lesion in lesions])
        out["lesion_volume_edges_mm3"] = list(edges)
        for t in ("small", "medium", "large"):
            group = [lesion for lesion in lesions if M.tertile_of(lesion["volume_mm3"], edges) == t]
            out[f"lesions_{t}"] = {"n": len(group), "detected": sum(lesion["detected"] for lesion in group),
                                   "detection_rate": M.nanmean([float(lesion["detected"]) for lesion in group])}
        edges = M.tertile_edges([r["lesion_volume_mm3"] for r in lesion_rows])
        out["case_lesion_load_edges_mm3"] = list(edges)
        for t in ("small", "medium", "large"):
            group = [r for r in lesion_rows if M.tertile_of(r["lesion_volume_mm3"], edges) == t]
            out[f"cases_{t}"] = {"n": len(group), "mean_dice": M.nanmean([r["dice"] for r in group])}
    return out


def detection_metrics(rows: List[Dict[str, Any]], healthy: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Case-level detection by the volume score: lesion cases positive; healthy-folder cases and lesion-free
    test cases negative."""
    pos = [r for r in rows if r["has_lesion"]]
    neg = [r for r in rows if not r["has_lesion"]] + healthy
    valid = [r for r in pos + neg if isinstance(r.get("volume_score"), (int, float))]
    s = np.asarray([r["volume_score"] for r in valid], float)
    y = np.asarray([r.get("has_lesion", False) for r in valid], bool)
    dec = [(r.get("has_lesion", False), r["detection"]) for r in pos + neg if r.get("detection") is not None]
    out = {"n_positive": len(pos), "n_negative": len(neg), "auroc": M.auroc(s, y),
           "auprc": M.average_precision(s, y), "fpr_at_tpr_0.8": M.fpr_at_tpr(s, y, 0.8),
           "fpr_at_tpr_0.9": M.fpr_at_tpr(s, y, 0.9)}
    if dec:  # the calibrated decision itermask_predict made
        out["calibrated_sensitivity"] = M.nanmean([float(d) for p, d in dec if p])
        out["calibrated_false_positive_rate"] = M.nanmean([float(d) for p, d in dec if not p])
    return out


def healthy_fpr(rows: List[Dict[str, Any]], healthy: List[Dict[str, Any]], alpha: float,
                alpha_source: str) -> Dict[str, Any]:
    """Fraction of healthy brain voxels segmented (healthy-folder and lesion-free test cases), against alpha."""
    neg = [r for r in rows if not r["has_lesion"]] + healthy
    seg, brain = sum(r["seg_in_brain"] for r in neg), sum(r["brain_voxels"] for r in neg)
    fpr = seg / brain if brain else M.NAN
    return {"n_cases": len(neg), "voxel_fpr": fpr, "alpha": alpha, "alpha_source": alpha_source,
            "ratio_to_alpha": fpr / alpha if alpha else M.NAN,
            "per_case": {r["case"]: r["seg_in_brain"] / max(r["brain_voxels"], 1) for r in neg}}


def _healthy_records(healthy_dir: Path, brain_dir: Optional[Path],
                     resampled: List[Resampled]) -> List[Dict[str, Any]]:
    rows = []
    for case in list_prediction_cases(healthy_dir):
        c = load_case(healthy_dir, case, None, brain_dir, None, resampled)
        a = arrays(c)
        rows.append({"case": case, "source": "healthy", "volume_score": c["info"].get("volume_score"),
                     "detection": decision(c["info"]), "seg_in_brain": int((a["seg"] & a["brain"]).sum()),
                     "brain_voxels": int(a["brain"].sum()), "brain_source": c["brain_source"], "info": c["info"],
                     "map_in_brain": a["anomaly"][a["brain"]].astype(np.float32)})
    return rows


def with_healthy_fpr(at_thresholds: Dict[str, Dict[str, Any]], healthy: List[Dict[str, Any]]) -> None:
    """Adds to each named threshold the fraction of the healthy cases' brain voxels whose map exceeds it (what the
    map cut there marks in healthy scans), then frees the healthy maps."""
    brain = sum(r["brain_voxels"] for r in healthy)
    for entry in at_thresholds.values():
        above = sum(int((r["map_in_brain"] > entry["threshold"]).sum()) for r in healthy)
        entry["healthy_voxel_fpr"] = above / brain if brain else M.NAN
    for r in healthy:
        r.pop("map_in_brain", None)


def evaluate_folder(pred_dir: str | Path, ref_dir: str | Path, healthy_dir: str | Path | None = None,
                    brain_dir: str | Path | None = None, images_dir: str | Path | None = None, report: bool = True,
                    alpha: Optional[float] = None, healthy_brain_dir: str | Path | None = None) -> Dict[str, Any]:
    """Evaluate every finished case of `pred_dir` against `ref_dir`/CASE.nii.gz; writes summary.json,
    metrics_per_case.csv (and qc/ with report=True) into pred_dir. Returns the summary. The healthy scans' brain
    masks come from healthy_brain_dir, else from brain_dir."""
    from itermask_auto.evaluation.report import case_figure, write_index
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    if not ref_dir.is_dir():
        raise SetupError(ref_dir, "label folder not found")
    if not pred_dir.is_dir():
        raise SetupError(pred_dir, "prediction folder not found")
    refuse_labelled_training_cases([pred_dir] + ([Path(healthy_dir)] if healthy_dir else []))
    brain_dir = Path(brain_dir) if brain_dir else None
    images_dir = Path(images_dir) if images_dir else None
    rows: List[Dict[str, Any]] = []
    resampled: List[Resampled] = []
    pooled = PooledVoxels()
    for case in list_prediction_cases(pred_dir):
        c = load_case(pred_dir, case, ref_dir, brain_dir, images_dir, resampled)
        a = arrays(c)
        voxel_mm3 = float(np.prod(c["anomaly"].GetSpacing()))
        row = {"case": case, "source": "test", "volume_score": c["info"].get("volume_score"),
               "detection": decision(c["info"]), "brain_source": c["brain_source"], "info": c["info"],
               "input_warnings": (c["info"].get("input_check") or {}).get("warnings", []),
               "label_resampled": any(r.case == case and r.kind == "label" for r in resampled),
               **case_metrics(a, voxel_mm3)}
        pooled.add(a)
        if report:
            row["figure"] = case_figure(pred_dir / "qc" / f"{case}.png", c, row).name
        rows.append(row)
        logger.info("%s: dice %.3f auroc %.3f score %s", case, row["dice"], row["auroc"], row["volume_score"])
    healthy_brain = Path(healthy_brain_dir) if healthy_brain_dir else brain_dir
    healthy = _healthy_records(Path(healthy_dir), healthy_brain, resampled) if healthy_dir else []
    infos = [r["info"] for r in rows + healthy]
    warn_rim_without_brain_masks(rows)
    calibration = model_calibration(infos)   # read once: alpha and the healthy thresholds
    alpha_value, alpha_source = resolve_alpha(infos, calibration, alpha)
    at_healthy_thresholds = pooled.dice_at(healthy_thresholds(calibration[1]) if one_model(infos) else {})
    with_healthy_fpr(at_healthy_thresholds, healthy)
    ranking, best_global = pooled.compute()
    tot = {k: sum(r[k] for r in rows) for k in ("tp", "fp", "fn")}
    lesion_rows = [r for r in rows if r["has_lesion"]]
    summary = {
        "pred_dir": str(pred_dir), "ref_dir": str(ref_dir), "healthy_dir": str(healthy_dir) if healthy_dir else None,
        "n_cases": len(rows), "n_lesion_cases": len(lesion_rows), "n_healthy_cases": len(healthy),
        "segmentation": {
            "pooled_dice": M.dice_from_counts(tot["tp"], tot["fp"], tot["fn"]),
            "pooled_precision": M.precision_from_counts(tot["tp"], tot["fp"]),
            "pooled_recall": M.recall_from_counts(tot["tp"], tot["fn"]),
            "mean_case_dice": M.nanmean([r["dice"] for r in lesion_rows]),
            "mean_case_precision": M.nanmean([r["precision"] for r in lesion_rows]),
            "mean_case_recall": M.nanmean([r["recall"] for r in lesion_rows]), **tot},
        "voxel_ranking": {**ranking, "mean_case_auroc": M.nanmean([r["auroc"] for r in lesion_rows]),
                          "mean_case_auprc": M.nanmean([r["auprc"] for r in lesion_rows])},
        # the map cut at the thresholds calibration set on healthy scans: beside CASE_seg, whose rule may be the
        # method's own (IterMask3D's final mask, the constrained methods' label-free threshold)
        "dice_at_healthy_thresholds": at_healthy_thresholds,
        BEST_GLOBAL_KEY: best_global,
        "resampled_labels": [r.to_dict() for r in resampled if r.kind == "label"],
        "resampled_other_files": [r.to_dict() for r in resampled if r.kind != "label"],
        "lesion_size": lesion_size_tertiles(lesion_rows),
        "detection": detection_metrics(rows, healthy),
        "healthy_voxel_fpr": healthy_fpr(rows, healthy, alpha_value, alpha_source),
        "cases": [{k: v for k, v in r.items() if k not in ("info", "lesions")} for r in rows],
    }
    summary = _clean(summary)
    write_json(pred_dir / SUMMARY_FILE, summary)
    write_csv(pred_dir / CSV_FILE, rows)
    if report:
        write_index(pred_dir / "qc", rows, summary)
    logger.info("wrote %s and %s", pred_dir / SUMMARY_FILE, pred_dir / CSV_FILE)
    return summary
