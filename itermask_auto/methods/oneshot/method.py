"""Ablation `oneshot`: IterMask3D's masked-reconstruction training, inferred in one pass with the whole brain masked.
Segmentation: the map above the calibrated healthy voxel threshold."""
from __future__ import annotations

from itermask_auto.inference.result import InferenceResult
from itermask_auto.methods.masked_reconstruction.method import MaskedReconstruction
from itermask_auto.methods.masked_reconstruction.procedures import oneshot


class OneShot(MaskedReconstruction):
    name = "oneshot"
    description = "one-shot masked reconstruction (whole brain masked, one pass)"
    inference = "oneshot"

    def infer(self, predictor, data, hf, brain, keep_masks: bool = False) -> InferenceResult:
        plan = self.effective_plan(predictor)
        rec = self.reconstructor(predictor, data, hf, plan)
        result = oneshot(rec, data, brain, plan)
        result.windows = rec.windows
        return result
