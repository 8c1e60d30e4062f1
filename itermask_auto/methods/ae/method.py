"""Baseline `ae`: a plain reconstruction autoencoder — the U-Net's stages and features without skip connections
(a U-Net would copy its input), fed [x, hf] like the masked methods so input and capacity match; nothing is
masked in training or inference. One pass; segmentation = map above the calibrated healthy voxel threshold."""
from __future__ import annotations

from itermask_auto.inference.result import InferenceResult
from itermask_auto.methods.masked_reconstruction.method import MaskedReconstruction
from itermask_auto.methods.masked_reconstruction.procedures import plain


class PlainAutoencoder(MaskedReconstruction):
    name = "ae"
    description = "plain reconstruction autoencoder (no mask, no skip connections, one pass)"
    training_mask = "none"
    network = "autoencoder"
    inference = "plain"

    def infer(self, predictor, data, hf, brain, keep_masks: bool = False) -> InferenceResult:
        plan = self.effective_plan(predictor)
        rec = self.reconstructor(predictor, data, hf, plan)
        result = plain(rec, data, brain, plan)
        result.windows = rec.windows
        return result
