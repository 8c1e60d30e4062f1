"""Is one method's lead over another on a test set larger than what its few cases resolve?

Reads the predictions of two methods on the same labelled test set (folders of itermask_predict outputs) and prints,
for the pooled voxel AUPRC (inside the brain) and the pooled Dice of each method's own segmentation (the calibrated
rule; over the whole volume, as itermask_evaluate counts both): each method's figure, the difference A − B, and a
95 % interval of that difference from a paired bootstrap over CASES
(the unit that was sampled: a voxel bootstrap would ignore that voxels of one scan move together), with the share
of resamples in which A is at least B. The AUPRC of a resample is computed from per-case histograms of the map
(`--bins` quantile bins of each method's pooled map, so each method's own ranking is kept up to ties inside a
bin); the binned figure of the full set is printed beside the exact one so the binning's error is visible.
Nothing is tuned; labels are read only to score.

    python benchmarks/paired_bootstrap.py -a PRED_A -b PRED_B -l LABELS -brain MASKS [--reps 2000]
                                          [--bins 4096] [--seed 0] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itermask_auto.evaluation import metrics as M  # noqa: E402
from itermask_auto.evaluation.evaluate import arrays, find_file, list_prediction_cases, load_case  # noqa: E402


def binned_average_precision(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Average precision from counts per score bin (bins in ascending score order; a bin's voxels tie)."""
    return M.average_precision_from_counts(np.cumsum(positives[::-1]), np.cumsum(negatives[::-1]))


class MethodCases:
    """One method's per-case score histograms and segmentation counts on the test set."""

    def __init__(self, scores: List[np.ndarray], labels: List[np.ndarray], counts: np.ndarray, bins: int):
        pooled = np.concatenate(scores)
        self.exact_auprc = M.average_precision(pooled, np.concatenate(labels))
        edges = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        index = [np.searchsorted(edges, s, side="right") for s in scores]
        self.positives = np.stack([np.bincount(i[y], minlength=edges.size + 1) for i, y in zip(index, labels)])
        self.negatives = np.stack([np.bincount(i[~y], minlength=edges.size + 1) for i, y in zip(index, labels)])
        self.counts = counts     # per case: tp, fp, fn of the method's segmentation (whole volume, as evaluated)

    def auprc(self, weights: np.ndarray) -> float:
        """Pooled AUPRC of the cases drawn `weights` times each."""
        return binned_average_precision(weights @ self.positives, weights @ self.negatives)

    def dice(self, weights: np.ndarray) -> float:
        """Pooled Dice of the segmentation over the cases drawn `weights` times each."""
        tp, fp, fn = weights @ self.counts
        return M.dice_from_counts(tp, fp, fn)


def load_method(pred_dir: Path, cases: List[str], labels_dir: Path, brain_dir: Path, bins: int) -> MethodCases:
    scores, labels, counts = [], [], []
    for case in cases:
        if not find_file(brain_dir, case).is_file():   # a per-method fallback region would unpair the comparison
            raise SystemExit(f"{find_file(brain_dir, case)}: brain mask missing for case '{case}'")
        a = arrays(load_case(pred_dir, case, labels_dir, brain_dir, None))
        brain = a["brain"]
        scores.append(a["anomaly"][brain].astype(np.float64))   # the ranking: inside the brain, as evaluated
        labels.append(a["label"][brain])
        c = M.confusion(a["seg"], a["label"])                     # the segmentation: the whole volume, as evaluated
        counts.append((c["tp"], c["fp"], c["fn"]))
    return MethodCases(scores, labels, np.asarray(counts, np.int64), bins)


def interval(values: np.ndarray) -> List[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def compare(a: MethodCases, b: MethodCases, reps: int, seed: int) -> Dict[str, Dict[str, object]]:
    n = a.counts.shape[0]
    ones = np.ones(n)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)
    out = {}
    for name in ("auprc", "dice"):
        fig_a, fig_b = getattr(a, name), getattr(b, name)
        diffs = np.array([fig_a(w) - fig_b(w) for w in draws])
        defined = diffs[np.isfinite(diffs)]   # a resample without lesion voxels has no AUPRC
        if not defined.size:
            raise SystemExit(f"no resample has a defined {name} (no lesion voxel in the labels?)")
        full_a, full_b = fig_a(ones), fig_b(ones)
        out[name] = {"a": full_a, "b": full_b, "difference": full_a - full_b,
                     "interval_95": interval(defined), "share_a_at_least_b": float(np.mean(defined >= 0)),
                     "undefined_resamples": int(diffs.size - defined.size)}
    out["auprc"].update({"a_exact": a.exact_auprc, "b_exact": b.exact_auprc})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-a", type=Path, required=True, help="predictions of method A (CASE_anomaly, CASE_seg, CASE.json)")
    p.add_argument("-b", type=Path, required=True, help="predictions of method B on the same cases")
    p.add_argument("-l", "--labels", type=Path, required=True, help="label folder (CASE.nii.gz)")
    p.add_argument("-brain", type=Path, required=True,
                   help="brain-mask folder (CASE.nii.gz): the one region both maps are scored in")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples of the cases (default 2000)")
    p.add_argument("--bins", type=int, default=4096, help="quantile bins of each pooled map (default 4096)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    cases = list_prediction_cases(args.a)
    missing = sorted(set(cases) - set(list_prediction_cases(args.b)))
    if missing:
        p.error(f"{args.b}: no prediction for {len(missing)} case(s) of {args.a}, e.g. {missing[0]}")
    a, b = (load_method(d, cases, args.labels, args.brain, args.bins) for d in (args.a, args.b))
    result = compare(a, b, args.reps, args.seed)
    print(f"{len(cases)} cases, {args.reps} paired case resamples; A = {args.a}, B = {args.b}")
    for name, r in result.items():
        exact = (f" (exact {r['a_exact']:.4f} / {r['b_exact']:.4f})" if "a_exact" in r else "")
        lo, hi = r["interval_95"]
        undefined = f" ({r['undefined_resamples']} undefined)" if r["undefined_resamples"] else ""
        print(f"{name:6s} A {r['a']:.4f}  B {r['b']:.4f}{exact}  A−B {r['difference']:+.4f}, 95 % interval "
              f"[{lo:+.4f}, {hi:+.4f}], A ≥ B in {100 * r['share_a_at_least_b']:.1f} % of resamples{undefined}")
    if args.json:
        figures = json.loads(json.dumps(result), parse_constant=lambda constant: None)   # NaN -> null: strict JSON
        args.json.write_text(json.dumps({"cases": cases, "a": str(args.a), "b": str(args.b), **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
