"""Public evaluation API: `evaluate_folder` (per-case + pooled metrics, summary.json, CSV, QC report)."""
from __future__ import annotations

from itermask_auto.evaluation.evaluate import CSV_FILE, SUMMARY_FILE, evaluate_folder, list_prediction_cases
from itermask_auto.evaluation.metrics import (auroc, average_precision, best_dice_threshold, dice, fpr_at_tpr,
                                              roc_curve)

__all__ = ["evaluate_folder", "list_prediction_cases", "SUMMARY_FILE", "CSV_FILE", "dice", "auroc",
           "average_precision", "roc_curve", "fpr_at_tpr", "best_dice_threshold"]
