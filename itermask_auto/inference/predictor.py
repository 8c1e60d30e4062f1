"""Python API of prediction: load a trained fold once, predict arrays, files or a whole folder.

    p = Predictor.from_model_folder(fold_dir, device="cpu")
    case = p.predict_files([Path("sub_0000.nii.gz")])      # CasePrediction, original geometry
    result = p.predict_arrays(data, hf, brain_mask, properties)

The method (methods/<name>/) turns the preprocessed arrays into an anomaly map and says how it segments; the
Predictor owns the networks, device, precision, calibration and the case summary. Segmentation rules: itermask3d
with a calibrated γ → its own final mask (per-subject τ); itermask2 → its final mask (calibrated τ); otherwise
{map > calibrated voxel_threshold} in the brain; no calibration.json → the method's own final mask.
Detection = volume score (the method's, default "top1_mean") > calibrated detection threshold."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np
import SimpleITK as sitk
import torch

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.inference.components import check_component_filter, drop_small_components
from itermask_auto.inference.map_filter import filter_result
from itermask_auto.inference.result import InferenceResult
from itermask_auto.inference.scoring_region import erode_brain
from itermask_auto.methods.registry import get_method
from itermask_auto.utilities.atomic import read_json

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"


@dataclass
class CasePrediction:
    anomaly: np.ndarray                    # float32 (z, y, x): preprocessed grid, or original if `images`
    segmentation: np.ndarray               # uint8, same grid
    summary: Dict[str, Any]
    result: Optional[InferenceResult] = None
    images: Dict[str, sitk.Image] = field(default_factory=dict)   # "anomaly", "seg" in the input's geometry


def load_calibration(fold_dir: Path) -> Optional[Dict[str, Any]]:
    path = Path(fold_dir) / CALIBRATION_FILE
    return read_json(path) if path.is_file() else None


class Predictor:
    def __init__(self, networks: Union[torch.nn.Module, Mapping[str, torch.nn.Module]], plans: Plans,
                 configuration: str, method: str, fold_dir: Optional[Path] = None, device: str | torch.device = "cpu",
                 amp: Optional[str] = None, batch_size: Optional[int] = None,
                 calibration: Optional[Dict[str, Any]] = None):
        """networks: {stage name: trained network} (a single network = the method's first stage)."""
        self.plans, self.configuration, self.method = plans, configuration, method
        self.spec = get_method(method)
        if isinstance(networks, torch.nn.Module):
            networks = {self.spec.stages(plans, configuration)[0].name: networks}
        self.networks: Dict[str, torch.nn.Module] = dict(networks)
        self.config = plans.configuration(configuration)
        self.fold_dir = Path(fold_dir) if fold_dir else None
        self._component_mode_warned = False   # the component filter's mode warning, once per predictor
        self.device = torch.device(device)
        self.amp = amp or plans.training.mixed_precision
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else max(1, self.config.batch_size))
        self.calibration = calibration
        self.on_pass: Optional[Callable[[int], None]] = None  # progress hook: called after every network pass

    @property
    def brain_erosion_mm(self) -> float:
        """The scoring margin: the calibrated one (calibration.json) if any, else the plan's."""
        cal = self.calibration or {}
        return float(cal.get("brain_erosion_mm", self.plans.inference.brain_erosion_mm))

    def scoring_region(self, brain_mask: np.ndarray) -> np.ndarray:
        return erode_brain(brain_mask, self.brain_erosion_mm, self.config.spacing)

    @property
    def network(self) -> torch.nn.Module:
        """The first stage's network (the only one for most methods)."""
        return next(iter(self.networks.values()))

    @classmethod
    def from_model_folder(cls, fold_dir: str | Path, device: str = "cpu", checkpoint: str = "checkpoint_final.pth",
                          amp: Optional[str] = None, batch_size: Optional[int] = None,
                          use_calibration: bool = True) -> "Predictor":
        from itermask_auto.training.checkpoint import read_fold
        networks, plans, configuration, method = read_fold(fold_dir, checkpoint, device)
        calibration = load_calibration(Path(fold_dir)) if use_calibration else None
        if calibration is not None:
            try:
                method.check_calibration(plans, calibration)
            except ValueError as e:   # one line naming the fold, before any case is read
                raise ValueError(f"{Path(fold_dir) / 'calibration.json'}: {e}") from None
            try:
                check_component_filter(plans.inference.component_filter)
            except ValueError as e:
                raise ValueError(f"{Path(fold_dir) / 'plans.json'}: {e}") from None
            if plans.inference.component_filter != "off" and "min_component_voxels" not in calibration:
                logger.warning("%s: the plan's inference.component_filter is '%s' but this calibration has no "
                               "min_component_voxels (calibrated before the key): segmentations keep every "
                               "component; recalibrate with itermask_train --calibrate_only",
                               Path(fold_dir) / "calibration.json", plans.inference.component_filter)
        return cls(networks, plans, configuration, method.name, fold_dir, device, amp, batch_size, calibration)

    # ---- core -------------------------------------------------------------------------------------------
    def infer(self, data: np.ndarray, hf: np.ndarray, brain_mask: np.ndarray,
              keep_masks: bool = False) -> tuple[InferenceResult, Dict]:
        """Run the method's inference on preprocessed arrays; returns (result, timing/count stats)."""
        start = time.perf_counter()
        region = self.scoring_region(brain_mask)
        result = self.postprocess(self.spec.infer(self, data, hf, region, keep_masks=keep_masks), region)
        stats = {"seconds": time.perf_counter() - start, "network_passes": result.passes, "windows": result.windows}
        return result, stats

    def postprocess(self, result: InferenceResult, region: np.ndarray) -> InferenceResult:
        """What the engine does to every method's result, in prediction and calibration alike: the planned
        median filter of the map (inference.map_median_mm)."""
        return filter_result(result, region, self.plans.inference.map_median_mm, self.config.spacing)

    def segment(self, result: InferenceResult, brain_mask: np.ndarray) -> tuple[np.ndarray, str]:
        """The method's segmentation; without the components smaller than calibration's min_component_voxels
        where the plan's inference.component_filter asks and calibration chose one (inference/components.py)."""
        seg, rule = self.spec.segment(self, result, self.scoring_region(brain_mask))
        cal = self.calibration or {}
        min_voxels = int(cal.get("min_component_voxels") or 0)
        if min_voxels > 1 and self.plans.inference.component_filter != "off":
            chosen_for = (cal.get("min_component_choice") or {}).get("inference_mode", self.plans.inference.mode)
            if chosen_for != self.plans.inference.mode:   # e.g. itermask_predict -mode: sizes of the other masks
                if not self._component_mode_warned:
                    logger.warning("segmentation components kept: min_component_voxels was chosen for inference mode "
                                   "'%s', this prediction runs '%s'", chosen_for, self.plans.inference.mode)
                    self._component_mode_warned = True
                return seg, rule
            seg = drop_small_components(seg, min_voxels)
            rule += f"; components under {min_voxels} voxels dropped (their size from the healthy validation cases)"
        return seg, rule

    def volume_score(self, result: InferenceResult) -> float:
        return float(result.scores[self.spec.volume_score_name])

    def summarize(self, result: InferenceResult, stats: Dict, seg_rule: str) -> Dict[str, Any]:
        cal = self.calibration
        score = self.volume_score(result)
        detection = None
        if cal is not None and cal.get("detection_threshold") is not None:
            detection = bool(score > cal["detection_threshold"])
        return {
            "method": self.method, "procedure": result.procedure, "configuration": self.configuration,
            "model_folder": str(self.fold_dir) if self.fold_dir else None,
            "volume_score": score, "volume_score_name": self.spec.volume_score_name, "scores": result.scores,
            "anomalous": detection,
            "detection_threshold": cal.get("detection_threshold") if cal else None,
            "voxel_threshold": cal.get("voxel_threshold") if cal else None,
            "segmentation_rule": seg_rule, "calibrated": cal is not None,
            # maps and segmentations are 0 within this margin of the brain's edge (calibration/rim.py)
            "brain_erosion_mm": self.brain_erosion_mm,
            "tau": result.tau, "tau_fit": result.fit, "sweep_i": result.sweep_i, "sweep_t": result.sweep_t,
            "shrink_iterations": result.shrink_iterations, "network_passes": stats["network_passes"],
            "windows": stats["windows"], "seconds": round(stats["seconds"], 3),
            "final_mask_voxels": int(result.final_mask.sum()),
        }

    # ---- public -----------------------------------------------------------------------------------------
    def predict_arrays(self, data: np.ndarray, hf: np.ndarray, brain_mask: np.ndarray,
                       properties: Optional[Dict[str, Any]] = None, keep_masks: bool = False) -> CasePrediction:
        """Arrays on the preprocessed grid; with `properties` (from preprocess_case) also the output images."""
        result, stats = self.infer(data, hf, brain_mask, keep_masks=keep_masks)
        seg, rule = self.segment(result, brain_mask)
        pred = CasePrediction(result.anomaly_map.astype(np.float32), seg, self.summarize(result, stats, rule), result)
        if properties is not None and "original" in properties:
            from itermask_auto.preprocessing.export import to_original_geometry
            pred.images = {"anomaly": to_original_geometry(pred.anomaly, properties, order=1),
                           "seg": to_original_geometry(seg, properties, order=0)}
        return pred

    def predict_files(self, channel_paths, mask_path: Optional[str | Path] = None,
                      keep_masks: bool = False) -> CasePrediction:
        """Raw channel files -> prediction in the input's geometry (arrays from the output images)."""
        from itermask_auto.preprocessing.preprocessor import preprocess_case
        data, hf, brain, props = preprocess_case([Path(p) for p in channel_paths], self.plans, self.configuration,
                                                 Path(mask_path) if mask_path else None)
        pred = self.predict_arrays(data, hf, brain, props, keep_masks=keep_masks)
        pred.anomaly = sitk.GetArrayFromImage(pred.images["anomaly"]).astype(np.float32)
        pred.segmentation = sitk.GetArrayFromImage(pred.images["seg"]).astype(np.uint8)
        return pred
