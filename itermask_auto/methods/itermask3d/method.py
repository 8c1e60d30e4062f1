"""IterMask3D (Liang et al., MedIA 2026): masked reconstruction with a per-subject threshold from the sweep's
knee and an iteratively shrinking mask. Training is the family's (blob masks); inference is `procedure.py`;
its knee slope γ is calibrated on the healthy validation cases (`gamma.py`)."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Dict, Tuple

import numpy as np

from itermask_auto.inference.map_filter import majority_mask
from itermask_auto.inference.result import InferenceResult
from itermask_auto.methods.itermask3d.gamma import GAMMA_TARGETS, calibrate_gamma, gamma_target
from itermask_auto.methods.itermask3d.procedure import (ERROR_UNITS, SweepResult, error_scale, itermask3d,
                                                        knee_scale, sweep, sweep_schedule)
from itermask_auto.methods.itermask3d.tau import (FRACTION_TOLERANCE, TAU_TARGETS, WARM_START_FACTOR,
                                                  first_pass_quantile, pooled_fraction, search_tau)
from itermask_auto.methods.masked_reconstruction.method import MaskedReconstruction
from itermask_auto.methods.masked_reconstruction.procedures import shrink, squared_error

logger = logging.getLogger(__name__)


class IterMask3D(MaskedReconstruction):
    name = "itermask3d"
    description = "IterMask3D: masked reconstruction with iterative mask shrinking"
    inference = "iterative"

    def _run(self, predictor, data, hf, brain, plan, keep_masks=False, sweep_result=None,
             reconstruct=None) -> InferenceResult:
        """The procedure with the plan's mode: "itermask3d" (per-subject τ from the sweep) or "itermask2" (the
        calibrated τ, shrink only). `reconstruct` replaces the network (tests)."""
        tau = None
        if plan.mode == "itermask2":   # τ from calibration, shrink only
            cal = predictor.calibration or {}
            tau = cal.get("itermask2_tau")
            if tau is None:
                logger.warning("itermask2 mode needs calibration.json: falling back to the per-subject sweep")
            # τ is read in the unit calibration searched it in (calibrations made before the key: absolute)
            plan = dataclasses.replace(plan, tau_scale=cal.get("itermask2_tau_scale", "absolute"))
        elif plan.mode != "itermask3d":
            raise ValueError(f"unknown inference mode '{plan.mode}' (itermask3d | itermask2)")
        rec = reconstruct or self.reconstructor(predictor, data, hf, plan)
        result = itermask3d(rec, data, brain.astype(bool), plan, tau=tau, keep_masks=keep_masks,
                            sweep_result=sweep_result)
        result.windows = getattr(rec, "windows", 0)
        return result

    def infer(self, predictor, data, hf, brain, keep_masks: bool = False) -> InferenceResult:
        return self._run(predictor, data, hf, brain, self.effective_plan(predictor), keep_masks)

    def segment(self, predictor, result: InferenceResult, brain: np.ndarray) -> Tuple[np.ndarray, str]:
        cal, plans = predictor.calibration, predictor.plans
        if cal is None:
            return result.final_mask.astype(np.uint8), "per-subject tau final mask (no calibration.json)"
        if result.procedure == "itermask2":
            return result.final_mask.astype(np.uint8), "final mask with calibrated itermask2 tau"
        if (plans.inference.segmentation == "final_mask" and cal.get("gamma") is not None
                and plans.inference.gamma_rule == "calibrated"):
            return result.final_mask.astype(np.uint8), "IterMask3D final mask (per-subject tau, calibrated gamma)"
        return super().segment(predictor, result, brain)

    # ---- calibration: γ from the healthy validation cases' own sweeps ----------------------------------------
    def _calibration_plan(self, predictor):
        # calibration must not depend on the τ or γ it is computing
        return dataclasses.replace(predictor.plans.inference, mode="itermask3d")

    def _tau_on_final_masks(self, predictor) -> bool:
        target = predictor.plans.calibration.itermask2_tau_target
        if target not in TAU_TARGETS:
            raise ValueError(f"unknown calibration.itermask2_tau_target '{target}' ({' | '.join(TAU_TARGETS)})")
        return predictor.plans.inference.mode == "itermask2" and target == "final_mask_fraction"

    def calibrate(self, predictor, context) -> Dict[str, Any]:
        keys = self._calibrate_gamma(predictor, context)
        if self._tau_on_final_masks(predictor):
            keys.update(self._calibrate_tau(predictor, context))
        elif predictor.plans.inference.tau_scale != "absolute":   # the first-pass quantile is an absolute τ
            logger.warning("inference.tau_scale '%s' applies to the tau searched on the healthy final masks only "
                           "(calibration.itermask2_tau_target final_mask_fraction with inference.mode itermask2): "
                           "the calibrated tau stays absolute", predictor.plans.inference.tau_scale)
        return keys

    def _calibrate_tau(self, predictor, context) -> Dict[str, Any]:
        """Mode "itermask2": the one τ whose shrink leaves α of the healthy validation brains masked (tau.py)."""
        plan, alpha, start = self._calibration_plan(predictor), predictor.plans.calibration.alpha, time.perf_counter()
        firsts, quantiles, scales = {}, {}, {}
        for case in context.progress(context.my_cases, "tau search: first pass"):
            data, hf, brain, _ = context.load(case)
            swept = context.state.get(case)
            first_recon = swept[0].first_recon if swept else self.reconstructor(predictor, data, hf, plan)(brain)
            firsts[case] = first_recon
            first_error = squared_error(data, first_recon, brain)
            # τ is searched in the unit prediction will read it in (inference.tau_scale)
            scales[case] = error_scale(data, first_recon, brain, plan.tau_scale, plan, "inference.tau_scale")
            quantiles[case] = first_pass_quantile([first_error[brain]], alpha) / scales[case]
        quantiles = context.gather(quantiles)
        step = [0]
        # the per-case calibration lines then log the absolute τ: this τ times the case's own unit
        unit_note = ("" if plan.tau_scale == "absolute"
                     else f" (x each case's {ERROR_UNITS[plan.tau_scale][1]} error)")

        def fraction_at(tau: float) -> float:
            step[0] += 1
            local = {}
            for case in context.progress(context.my_cases, f"tau search {step[0]}"):
                data, hf, brain, _ = context.load(case)
                sh = shrink(self.reconstructor(predictor, data, hf, plan), data, brain, tau * scales[case],
                            plan.convergence_tolerance, plan.max_shrink_passes, first_recon=firsts[case])
                # the mask prediction writes: the engine's planned filter majority-votes it (map_filter.py)
                final = majority_mask(sh.mask, brain, predictor.plans.inference.map_median_mm,
                                      predictor.config.spacing)
                local[case] = (int(final.sum()), int(brain.sum()))
            fraction = pooled_fraction(context.gather(local))
            logger.info("tau search: tau %.4g%s leaves %.3f%% of the healthy brains masked (alpha %.3g%%)",
                        tau, unit_note, 100 * fraction, 100 * alpha)
            return fraction

        usable = [q for q in quantiles.values() if np.isfinite(q) and q > 0]
        if not usable:   # empty brains or a model that reconstructs perfectly: nothing to search from
            logger.warning("tau search: no healthy validation case has a positive first-pass error; no itermask2 "
                           "tau calibrated (prediction falls back to the per-subject sweep)")
            return {}
        earlier = context.earlier.get("itermask2_tau")
        if earlier:   # a second scoring inside a brain-rim margin: the τ found without it is close to the answer
            start_tau, factor, start_rule = float(earlier), WARM_START_FACTOR, "the tau calibrated without the margin"
        else:
            start_tau, factor = float(np.median(usable)), 2.0
            start_rule = f"median per-case first-pass {1 - alpha:g} quantile"
        tau, table = search_tau(fraction_at, start_tau, alpha, predictor.plans.calibration.tau_search_steps, factor)
        context.state["itermask2_first_recon"] = firsts
        unit = ("" if plan.tau_scale == "absolute" else
                f" (tau in units of each case's {ERROR_UNITS[plan.tau_scale][1]} whole-brain-masked error)")
        return {"inference_mode": "itermask2", "itermask2_tau": tau, "itermask2_tau_scale": plan.tau_scale,
                "itermask2_tau_scale_per_case": context.gather(scales),
                "itermask2_tau_rule": f"tau{unit} whose shrink leaves alpha = {alpha:g} of the healthy validation "
                                      "brains masked (pooled voxels; bracketing, then a safeguarded log-log secant "
                                      f"stopping within {FRACTION_TOLERANCE:.0%} of alpha from below; start = "
                                      f"{start_rule}, bracketing factor {factor:g})",
                "itermask2_tau_search": table, "itermask2_tau_search_seconds": round(time.perf_counter() - start, 2)}

    def _calibrate_gamma(self, predictor, context) -> Dict[str, Any]:
        plan = self._calibration_plan(predictor)
        if plan.gamma_rule != "calibrated":
            return {"inference_mode": plan.mode}
        schedule = sweep_schedule(plan.sweep_steps, plan.sweep_max_percent)
        alpha = predictor.plans.calibration.alpha
        # in mode itermask2 with τ searched on the final masks, γ only serves the fallback (no calibrated τ)
        if (predictor.plans.calibration.gamma_target == "sweep_quantile" and not self._tau_on_final_masks(predictor)
                and plan.sweep_max_percent < 100.0 * (1.0 - alpha) - 1e-9):
            logger.warning("the sweep stops at i = %g, short of the alpha target i = %g: healthy final masks cannot "
                           "shrink to alpha = %g; set inference.sweep_max_percent >= %g in the plan",
                           plan.sweep_max_percent, 100 * (1 - alpha), alpha, 100 * (1 - alpha))
        curves = {}
        for case in context.progress(context.my_cases, "calibration sweep"):
            data, hf, brain, _ = context.load(case)
            start, rec = time.perf_counter(), self.reconstructor(predictor, data, hf, plan)
            s = sweep(rec, data, brain, schedule)
            context.state[case] = (s, time.perf_counter() - start)
            scale = knee_scale(data, s.first_recon, brain, plan)
            target = gamma_target(s, brain, alpha, predictor.plans.calibration.gamma_target)
            curves[case] = {"i": s.i.tolist(), "t": (s.t / scale).tolist(), "scale": scale,
                            **{k: v / scale if k == "target" else v for k, v in target.items()}}
        curves = context.gather(curves)
        gamma, per_case = calibrate_gamma(curves, plan, predictor.plans.calibration.gamma_case_quantile)
        logger.info("calibrated gamma %.4g (reference %.4g; per-case median %.4g)", gamma, plan.gamma,
                    float(np.median(list(per_case.values()))))
        return {"inference_mode": plan.mode, "gamma": gamma, "gamma_reference": plan.gamma, "gamma_per_case": per_case,
                "gamma_case_quantile": predictor.plans.calibration.gamma_case_quantile,
                "gamma_target": GAMMA_TARGETS[predictor.plans.calibration.gamma_target].format(q=1 - alpha),
                "knee_scale": plan.knee_scale, "knee_scale_per_case": {c: v["scale"] for c, v in curves.items()}}

    def calibration_infer(self, predictor, case, data, hf, brain, context) -> InferenceResult:
        plan = self.effective_plan(predictor, self._calibration_plan(predictor))
        swept = context.state.pop(case, None)
        if swept:
            context.extra_seconds[case] = swept[1]
        firsts = context.state.get("itermask2_first_recon", {})
        if case in firsts:   # the healthy cases are scored as prediction will run: the calibrated τ, shrink only
            first = SweepResult(np.zeros(0), np.zeros(0), 1, firsts.pop(case), None)
            return self._run(predictor, data, hf, brain, dataclasses.replace(plan, mode="itermask2"),
                             sweep_result=first)
        return self._run(predictor, data, hf, brain, plan, sweep_result=swept[0] if swept else None)
