"""The model card of a trained fold: what it was trained on, how, and what it measured on healthy validation data.

Written into an exported model (MODEL_CARD.md for people, model_card.json for programs) from the fold folder
alone: plans.json, splits.json, dataset_fingerprint.json, the final checkpoints' histories, calibration.json and,
where a method records one, its training-data note (e.g. a labelled dataset added to a supervised stage)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from itermask_auto import __version__
from itermask_auto.experiment_planning.plans import FINGERPRINT_FILE, Plans
from itermask_auto.methods.registry import get_method
from itermask_auto.utilities.atomic import read_json

TRAINING_DATA_NOTE = "training_data.json"   # optional, written by a method: what else its stages read


def _json(path: Path) -> Dict[str, Any]:
    return read_json(path) if path.is_file() else {}


CALIBRATION_KEYS = ("alpha", "alpha_achieved", "voxel_threshold", "voxel_thresholds", "detection_threshold",
                    "detection_rule", "healthy_detection_fpr", "volume_score_name", "healthy_final_mask_fraction",
                    "case_source")


def _calibration_summary(cal: Dict[str, Any]) -> Dict[str, Any]:
    """The card's calibration keys; `anomaly_map` only where a method with several maps (sadm) recorded the one
    its thresholds belong to."""
    summary = {k: cal.get(k) for k in CALIBRATION_KEYS}
    if "anomaly_map" in cal:
        summary["anomaly_map"] = cal["anomaly_map"]
    return summary


def model_card(fold_dir: Path) -> Dict[str, Any]:
    fold_dir = Path(fold_dir)
    plans = Plans.load(fold_dir / "plans.json")
    split, cal = _json(fold_dir / "splits.json"), _json(fold_dir / "calibration.json")
    fingerprint = _json(fold_dir / FINGERPRINT_FILE).get("aggregate", {})
    meta = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=True)["meta"]
    method = get_method(meta["method"])
    stages = {}
    for stage in method.stages(plans, meta["configuration"]):
        ckpt = torch.load(fold_dir / stage.folder / "checkpoint_final.pth", map_location="cpu", weights_only=True)
        history = ckpt["history"]
        stages[stage.name] = {"epochs": ckpt["epoch"],
                              "iterations_per_epoch": ckpt["scheduler"].get("iterations_per_epoch"),
                              "final_train_loss": history["train_loss"][-1] if history["train_loss"] else None,
                              "final_validation": history["val_loss"][-1] if history["val_loss"] else None,
                              "best_validation": ckpt["best_val_loss"], "validation_measure": stage.validation_label,
                              "ranks": ckpt["meta"].get("world_size", 1)}
    return {
        "itermask_auto_version": __version__,
        "method": method.name, "method_description": method.description,
        "configuration": meta["configuration"], "fold": meta["fold"], "plans_name": plans.plans_name,
        "profile": plans.profile,
        "training_data": {"dataset": meta["dataset_name"], "channels": plans.channel_names,
                          "training_cases": len(split.get("train", [])),
                          "healthy_validation_cases": len(split.get("val", [])),
                          "median_spacing_mm": fingerprint.get("median_spacing"),
                          "cases_in_fingerprint": fingerprint.get("num_cases"),
                          **_json(fold_dir / TRAINING_DATA_NOTE)},
        "recipe": {"training": plans.to_dict()["training"], "method_plan": method.method_plan(plans),
                   "stages": stages},
        "calibration": _calibration_summary(cal) if cal else None,
    }


def model_card_markdown(card: Dict[str, Any]) -> str:
    data, cal = card["training_data"], card["calibration"]
    lines = [f"# {card['method']} model ({card['configuration']}, fold {card['fold']})", "",
             card["method_description"], "",
             "## Training data",
             f"- dataset: {data['dataset']}, channels {', '.join(data['channels'].values())}",
             f"- {data['training_cases']} healthy training cases, {data['healthy_validation_cases']} healthy "
             f"validation cases; median spacing {data.get('median_spacing_mm')} mm"]
    if data.get("labelled_dataset"):
        lines.append(f"- **weakly supervised**: lesion labels of {data['labelled_dataset']} were used in training "
                     f"({data.get('labelled_cases')} cases); evaluation refuses cases of that dataset")
    lines += ["", "## Recipe", f"- plan {card['plans_name']} (profile {card['profile']})"]
    for name, s in card["recipe"]["stages"].items():
        lines.append(f"- stage {name}: {s['epochs']} epochs, final training loss {s['final_train_loss']}, "
                     f"validation {s['validation_measure']} {s['final_validation']} (best {s['best_validation']})")
    lines += ["", "## Calibration (healthy validation cases only)"]
    if cal:
        lines += [f"- voxel threshold {cal['voxel_threshold']} for healthy voxel FPR α = {cal['alpha']} "
                  f"(achieved {cal['alpha_achieved']})",
                  f"- detection threshold {cal['detection_threshold']} on {cal['volume_score_name']} "
                  f"({cal['detection_rule']}; healthy validation FPR {cal['healthy_detection_fpr']})"]
        if cal.get("anomaly_map"):   # a method offering several maps records the one its thresholds belong to
            lines.append(f"- anomaly map: {cal['anomaly_map']}")
    else:
        lines.append("- not calibrated")
    lines += ["", f"itermask_auto {card['itermask_auto_version']}", ""]
    return "\n".join(lines)
