"""Evaluation metrics as plain numpy functions (no scikit-learn dependency).

Conventions: `scores` are continuous (higher = more anomalous), `labels` are boolean (True = lesion / positive).
Undefined quantities (no positives, empty prediction and empty reference, ...) are NaN, never a made-up 0 or 1."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

NAN = float("nan")


# ---- overlap of binary masks ---------------------------------------------------------------------------------
def confusion(pred: np.ndarray, ref: np.ndarray) -> Dict[str, int]:
    """Voxel counts tp, fp, fn, tn of a binary prediction against a binary reference."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size) - tp - fp - fn}


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """2TP / (2TP + FP + FN); NaN when prediction and reference are both empty."""
    denom = 2 * tp + fp + fn
    return 2.0 * tp / denom if denom else NAN


def precision_from_counts(tp: int, fp: int) -> float:
    return tp / (tp + fp) if tp + fp else NAN


def recall_from_counts(tp: int, fn: int) -> float:
    return tp / (tp + fn) if tp + fn else NAN


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    c = confusion(pred, ref)
    return dice_from_counts(c["tp"], c["fp"], c["fn"])


# ---- ranking metrics of continuous scores ----------------------------------------------------------------------
def _check(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores).ravel()
    if s.dtype not in (np.float32, np.float64):  # float32 maps stay float32: pooled maps are large
        s = s.astype(np.float64)
    y = np.asarray(labels, bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in size")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    return s, y


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties count 1/2
    (Mann-Whitney U with average ranks). NaN if one class is absent."""
    s, y = _check(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = rankdata(s)  # average ranks handle ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """AUROC, AUPRC and the oracle (best-on-these-labels) Dice threshold from a single sort (for pooled maps)."""
    tp, fp, thr = _operating_points(scores, labels)
    n_pos, n_neg = (int(tp[-1]), int(fp[-1])) if tp.size else (0, 0)
    out = {"auroc": NAN, "auprc": NAN, "oracle_dice": NAN, "oracle_threshold": NAN}
    if n_pos and n_neg:  # trapezoids over the ROC steps = Mann-Whitney with ties counted 1/2
        tpr, fpr = np.r_[0.0, tp / n_pos], np.r_[0.0, fp / n_neg]
        out["auroc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    if n_pos:
        out["auprc"] = float(np.sum(np.diff(np.r_[0.0, tp / n_pos]) * tp / (tp + fp)))
        d = 2.0 * tp / (tp + fp + n_pos)
        k = int(np.argmax(d))
        out["oracle_dice"], out["oracle_threshold"] = float(d[k]), float(thr[k])
    return out


def _operating_points(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (tp, fp, threshold) for the rule `score >= threshold` at every distinct score, descending."""
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tp = np.cumsum(y, dtype=np.int64)[last]
    fp = (last + 1) - tp
    return tp, fp, s[last]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf."""
    tp, fp, thr = _operating_points(scores, labels)
    n_pos, n_neg = (tp[-1], fp[-1]) if tp.size else (0, 0)
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.full(tp.size + 1, NAN)
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.full(tp.size + 1, NAN)
    return fpr, tpr, np.r_[np.inf, thr]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUPRC as average precision: sum over distinct thresholds of (R_k - R_{k-1}) * P_k (step-wise, no
    interpolation; the scikit-learn definition). Constant scores give the prevalence. NaN without positives."""
    tp, fp, _ = _operating_points(scores, labels)
    return average_precision_from_counts(tp, fp)


def average_precision_from_counts(tp: np.ndarray, fp: np.ndarray) -> float:
    """Average precision from cumulative true- and false-positive counts at thresholds in descending order (one
    entry per distinct threshold, or per bin of a histogram). NaN without positives."""
    if tp.size == 0 or tp[-1] == 0:
        return NAN
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(scores: np.ndarray, labels: np.ndarray, target_tpr: float) -> float:
    """Smallest false-positive rate over thresholds that reach a true-positive rate >= target_tpr."""
    fpr, tpr, _ = roc_curve(scores, labels)
    if np.isnan(tpr).any() or np.isnan(fpr).any():
        return NAN
    ok = tpr >= target_tpr - 1e-12
    return float(fpr[ok].min())


def best_dice_threshold(scores: np.ndarray, labels: np.ndarray) -> Tuple[float, float]:
    """(Dice, threshold) of the best rule `score >= threshold` chosen ON THE LABELS: never a result, and no upper
    bound of a rule with a threshold per subject."""
    tp, fp, thr = _operating_points(scores, labels)
    if tp.size == 0 or tp[-1] == 0:
        return NAN, NAN
    d = 2.0 * tp / (tp + fp + tp[-1])  # 2TP / (2TP + FP + FN) with FN = P - TP
    k = int(np.argmax(d))
    return float(d[k]), float(thr[k])


# ---- lesion-wise analysis --------------------------------------------------------------------------------------
STRUCTURE_26 = np.ones((3, 3, 3), bool)  # lesions touching at a corner are one lesion


def lesions(label: np.ndarray, seg: np.ndarray, voxel_volume_mm3: float) -> List[Dict[str, float]]:
    """Connected components (26-connectivity) of the label; each with its volume (mm³) and whether any segmented
    voxel overlaps it ("detected")."""
    lab, n = ndimage.label(np.asarray(label, bool), structure=STRUCTURE_26)
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(lab, np.int64), lab, idx)
    hits = ndimage.sum_labels(np.asarray(seg, bool).astype(np.int64), lab, idx)
    return [{"volume_mm3": float(v * voxel_volume_mm3), "voxels": int(v), "detected": bool(h > 0),
             "overlap_fraction": float(h / v)} for v, h in zip(sizes, hits)]


def tertile_edges(values: Sequence[float]) -> Tuple[float, float]:
    """The 1/3 and 2/3 quantiles: small = v <= q1, medium = q1 < v <= q2, large = v > q2."""
    q1, q2 = np.quantile(np.asarray(values, float), [1 / 3, 2 / 3])
    return float(q1), float(q2)


def tertile_of(value: float, edges: Tuple[float, float]) -> str:
    return "small" if value <= edges[0] else ("medium" if value <= edges[1] else "large")


def nanmean(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x is not None], float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else NAN
