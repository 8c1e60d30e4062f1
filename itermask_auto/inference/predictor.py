"""Python API of prediction: load a trained fold once, predict arrays, files or a whole folder.

    p = Predictor.from_model_folder(fold_dir, device="cpu")
    case = p.predict_files([Path("sub_0000.nii.gz")])      # CasePrediction, original geometry
    result = p.predict_arrays(data, hf, brain_mask, properties)

Segmentation rule (the case summary names the one used): itermask3d with a calibrated γ → the procedure's own
final mask (per-subject τ); itermask2 → its final mask (calibrated τ); oneshot/ae, or inference.segmentation
"voxel_threshold" → {map > calibrated voxel_threshold} in the brain; no calibration.json → the final mask at
the plan's γ. Detection = volume score ("top1_mean") > calibrated detection threshold."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from itermask_auto.experiment_planning.plans import InferencePlan, Plans
from itermask_auto.inference.iterative import InferenceResult, run_inference
from itermask_auto.inference.sliding_window import reconstruct_volume
from itermask_auto.methods.registry import get_method
from itermask_auto.utilities.atomic import read_json

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
SCORE_KEY = "top1_mean"
NOISE_SEED = 1234


class NetworkReconstructor:
    """`reconstruct(mask, needed=None)` over one volume; counts passes and windows; seeded noise per pass."""

    def __init__(self, network: torch.nn.Module, data: np.ndarray, hf: np.ndarray, patch_size: Sequence[int],
                 step: float, batch_size: int, device: torch.device, amp: str, seed: int = NOISE_SEED,
                 slice_axis: Optional[int] = None, on_pass: Optional[Callable[[int], None]] = None):
        self.network, self.data, self.hf, self.slice_axis = network, data, hf, slice_axis  # slice_axis: 2d config
        self.on_pass = on_pass  # called with the pass count after every network pass (progress display)
        self.patch_size, self.step, self.batch_size = list(patch_size), step, batch_size
        self.device, self.amp, self.seed = device, amp, seed
        self.passes = 0
        self.windows = 0

    def __call__(self, mask: np.ndarray, needed: Optional[np.ndarray] = None) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.seed + self.passes)
        if self.slice_axis is not None:
            from itermask_auto.inference.slicewise import reconstruct_slicewise
            recon, n = reconstruct_slicewise(self.network, self.data, self.hf, mask, self.patch_size, self.slice_axis,
                                             self.step, self.batch_size, self.device, self.amp, generator, needed)
        else:
            recon, n = reconstruct_volume(self.network, self.data, self.hf, mask, self.patch_size, self.step,
                                          self.batch_size, self.device, self.amp, generator, needed=needed)
        self.passes += 1
        self.windows += n
        if self.on_pass is not None:
            self.on_pass(self.passes)
        return recon


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
    def __init__(self, network: torch.nn.Module, plans: Plans, configuration: str, method: str,
                 fold_dir: Optional[Path] = None, device: str | torch.device = "cpu", amp: Optional[str] = None,
                 batch_size: Optional[int] = None, calibration: Optional[Dict[str, Any]] = None,
                 first_iter_network: Optional[torch.nn.Module] = None):
        self.network, self.plans, self.configuration, self.method = network, plans, configuration, method
        self.first_iter_network = first_iter_network  # method itermask2: reconstructs from hf only
        self.spec = get_method(method)
        self.config = plans.configuration(configuration)
        self.fold_dir = Path(fold_dir) if fold_dir else None
        self.device = torch.device(device)
        self.amp = amp or plans.training.mixed_precision
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else max(1, self.config.batch_size))
        self.calibration = calibration
        self.on_pass: Optional[Callable[[int], None]] = None  # progress hook: called after every network pass

    @classmethod
    def from_model_folder(cls, fold_dir: str | Path, device: str = "cpu", checkpoint: str = "checkpoint_final.pth",
                          amp: Optional[str] = None, batch_size: Optional[int] = None,
                          use_calibration: bool = True) -> "Predictor":
        from itermask_auto.training.model_folder import load_trained_model
        network, plans, configuration, method = load_trained_model(fold_dir, checkpoint, device)
        calibration = load_calibration(Path(fold_dir)) if use_calibration else None
        first_iter = None
        if get_method(method).inference == "itermask2":
            from itermask_auto.training.first_iter import load_first_iter_network
            first_iter = load_first_iter_network(fold_dir, plans, configuration, checkpoint, device)
        return cls(network, plans, configuration, method, fold_dir, device, amp, batch_size, calibration,
                   first_iter)

    # ---- core -------------------------------------------------------------------------------------------
    def effective_plan(self, inference_plan: Optional[InferencePlan] = None) -> InferencePlan:
        """The inference plan with the calibrated γ applied (gamma_rule "calibrated" and calibration.json has one)."""
        plan = inference_plan or self.plans.inference
        gamma = (self.calibration or {}).get("gamma")
        if plan.gamma_rule == "calibrated" and gamma is not None:
            plan = dataclasses.replace(plan, gamma=float(gamma))
        elif plan.gamma_rule not in ("calibrated", "fixed"):
            raise ValueError(f"unknown inference.gamma_rule '{plan.gamma_rule}' (calibrated | fixed)")
        return plan

    def reconstructor(self, data: np.ndarray, hf: np.ndarray, plan: InferencePlan,
                      network: Optional[torch.nn.Module] = None) -> NetworkReconstructor:
        slice_axis = self.config.slice_axis if len(self.config.patch_size) == 2 and data.ndim == 4 else None
        return NetworkReconstructor(network or self.network, data, hf, self.config.patch_size, plan.tile_step_size,
                                    self.batch_size, self.device, self.amp, slice_axis=slice_axis,
                                    on_pass=self.on_pass)

    def infer(self, data: np.ndarray, hf: np.ndarray, brain_mask: np.ndarray, keep_masks: bool = False,
              inference_plan: Optional[InferencePlan] = None) -> tuple[InferenceResult, Dict]:
        """Run the method's inference procedure on preprocessed arrays; returns (result, timing/count stats)."""
        plan = self.effective_plan(inference_plan)
        rec = self.reconstructor(data, hf, plan)
        tau = None
        if self.calibration and plan.mode == "itermask2":
            tau = self.calibration.get("itermask2_tau")
        start = time.perf_counter()
        if self.spec.inference == "itermask2":  # two networks: inference/itermask2.py
            from itermask_auto.inference.itermask2 import itermask2
            from itermask_auto.inference.slicewise import HFOnly
            if self.first_iter_network is None:
                raise ValueError("method itermask2 needs its first-iteration network (load with from_model_folder)")
            first = self.reconstructor(data, hf, plan, HFOnly(self.first_iter_network, data.shape[0]))
            tau = (self.calibration or {}).get("itermask2_tau")
            result = itermask2(rec, first, data, brain_mask.astype(bool), plan, tau, keep_masks)
            rec.passes, rec.windows = rec.passes + first.passes, rec.windows + first.windows
        else:
            result = run_inference(self.spec.inference, rec, data, brain_mask.astype(bool), plan, tau, keep_masks)
        stats = {"seconds": time.perf_counter() - start, "network_passes": rec.passes, "windows": rec.windows}
        if rec.passes != result.passes:
            logger.debug("pass count: reconstructor %d vs procedure %d", rec.passes, result.passes)
        return result, stats

    def segment(self, result: InferenceResult, brain_mask: np.ndarray) -> tuple[np.ndarray, str]:
        cal = self.calibration
        if cal is None:
            return result.final_mask.astype(np.uint8), "per-subject tau final mask (no calibration.json)"
        if result.procedure == "itermask2":
            return result.final_mask.astype(np.uint8), "final mask with calibrated itermask2 tau"
        if (result.procedure == "itermask3d" and self.plans.inference.segmentation == "final_mask"
                and cal.get("gamma") is not None and self.plans.inference.gamma_rule == "calibrated"):
            return result.final_mask.astype(np.uint8), "IterMask3D final mask (per-subject tau, calibrated gamma)"
        seg = (result.anomaly_map > cal["voxel_threshold"]) & brain_mask.astype(bool)
        return seg.astype(np.uint8), "anomaly map > calibrated voxel_threshold"

    def summarize(self, result: InferenceResult, stats: Dict, seg_rule: str) -> Dict[str, Any]:
        cal = self.calibration
        score = float(result.scores[SCORE_KEY])
        detection = None
        if cal is not None and cal.get("detection_threshold") is not None:
            detection = bool(score > cal["detection_threshold"])
        return {
            "method": self.method, "procedure": result.procedure, "configuration": self.configuration,
            "model_folder": str(self.fold_dir) if self.fold_dir else None,
            "volume_score": score, "volume_score_name": SCORE_KEY, "scores": result.scores,
            "anomalous": detection,
            "detection_threshold": cal.get("detection_threshold") if cal else None,
            "voxel_threshold": cal.get("voxel_threshold") if cal else None,
            "segmentation_rule": seg_rule, "calibrated": cal is not None,
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

    def predict_files(self, channel_paths: Sequence[str | Path], mask_path: Optional[str | Path] = None,
                      keep_masks: bool = False) -> CasePrediction:
        """Raw channel files -> prediction in the input's geometry (arrays from the output images)."""
        from itermask_auto.preprocessing.preprocessor import preprocess_case
        data, hf, brain, props = preprocess_case([Path(p) for p in channel_paths], self.plans, self.configuration,
                                                 Path(mask_path) if mask_path else None)
        pred = self.predict_arrays(data, hf, brain, props, keep_masks=keep_masks)
        pred.anomaly = sitk.GetArrayFromImage(pred.images["anomaly"]).astype(np.float32)
        pred.segmentation = sitk.GetArrayFromImage(pred.images["seg"]).astype(np.uint8)
        return pred
