"""Folder-to-folder prediction (`itermask_predict`): find the trained fold, list the input cases, preprocess,
predict and export each case, and write the folder summary. One broken case never stops the folder."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.inference.predictor import Predictor

logger = logging.getLogger(__name__)


def resolve_model_folder(dataset: str | int, configuration: Optional[str], fold: str | int, method: str,
                         plans_name: Optional[str] = None) -> Path:
    """$ITERMASK_results/DatasetXXX/<method>__<plans>__<configuration>/fold_N (plans name guessed if unique)."""
    from itermask_auto.paths import results_root
    from itermask_auto.utilities.dataset import find_dataset
    ds = find_dataset(results_root(), dataset)
    if configuration is None:  # the only configuration trained, else the plan's default
        trained = sorted({p.parent.name.rsplit("__", 1)[-1]
                          for p in ds.glob(f"{method}__{plans_name or '*'}__*/fold_{fold}") if p.is_dir()})
        configuration = trained[0] if len(trained) == 1 else None
        if configuration is None and trained:
            plans_file = next(ds.glob(f"{method}__{plans_name or '*'}__*/fold_{fold}/plans.json"), None)
            configuration = Plans.load(plans_file).default_configuration if plans_file else trained[0]
        configuration = configuration or "3d"
    pattern = f"{method}__{plans_name or '*'}__{configuration}"
    found = sorted(p / f"fold_{fold}" for p in ds.glob(pattern) if (p / f"fold_{fold}").is_dir())
    if not found:
        raise FileNotFoundError(f"no trained model {ds}/{pattern}/fold_{fold}: train it with itermask_train "
                                f"-d {dataset} -c {configuration} -f {fold} -m {method}")
    if len(found) > 1:
        raise FileNotFoundError(f"several plans for {pattern}: {[p.parent.name for p in found]}; pass -p PLANS")
    return found[0]


def _preprocess(paths: List[Path], mask_path: Optional[Path], plans_dict: Dict[str, Any], configuration: str):
    """Top-level (picklable) so -npp can run it in worker processes."""
    from itermask_auto.preprocessing.preprocessor import preprocess_case
    return preprocess_case(paths, Plans.from_dict(plans_dict), configuration, mask_path)


def predict_folder(input_dir: str | Path, output_dir: str | Path, dataset: str | int | None = None,
                   configuration: Optional[str] = None, fold: str | int = 0, method: str = "itermask3d",
                   device: str = "cpu",
                   *, model_dir: Optional[str | Path] = None, checkpoint: str = "checkpoint_final.pth",
                   plans_name: Optional[str] = None, continue_prediction: bool = False, num_parts: int = 1,
                   part_id: int = 0, save_masks: bool = False, npp: int = 1, nps: int = 1,
                   masks_dir: Optional[str | Path] = None, mode: Optional[str] = None,
                   progress: bool = True) -> Dict[str, Any]:
    """Predict every case of `input_dir` (CASE_0000.nii.gz, ...) into `output_dir`; a bad case is logged with
    its one-line error and skipped. Returns the predictions.json content (with "failures")."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from itermask_auto.imageio.errors import InputError
    from itermask_auto.inference.export_results import (export_case, is_case_done, read_case_summary,
                                                        write_folder_summary)
    from itermask_auto.utilities.dataset import list_cases

    if not 0 <= part_id < num_parts:
        raise ValueError(f"--part_id {part_id} must be in 0..{num_parts - 1}")
    fold_dir = Path(model_dir) if model_dir else resolve_model_folder(dataset, configuration, fold, method, plans_name)
    predictor = Predictor.from_model_folder(fold_dir, device, checkpoint)
    if mode:  # "itermask3d" (per-subject τ) | "itermask2" (calibrated τ, no sweep)
        predictor.plans.inference.mode = mode
    plans, out = predictor.plans, Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    listing_problems: Dict[str, str] = {}  # misnamed files, wrong channel counts: reported, the rest still runs
    cases = list_cases(Path(input_dir), plans.num_channels, plans.file_ending, problems=listing_problems)
    for key, problem in listing_problems.items():
        logger.error("%s", problem)
    ids = sorted(cases)[part_id::num_parts]
    done = {c for c in ids if continue_prediction and is_case_done(out, c)}
    if done:
        logger.info("--continue: %d finished case(s) skipped", len(done))
    summaries = {c: read_case_summary(out, c) for c in done}
    failures: Dict[str, str] = dict(listing_problems) if part_id == 0 else {}
    todo = [c for c in ids if c not in done]

    def mask_of(case: str) -> Optional[Path]:
        p = Path(masks_dir) / f"{case}{plans.file_ending}" if masks_dir else None
        return p if p is not None and p.is_file() else None

    spawn = multiprocessing.get_context("spawn")  # fork after torch threads started can deadlock
    pre_pool = ProcessPoolExecutor(npp, mp_context=spawn) if npp > 1 else None
    exp_pool = ProcessPoolExecutor(nps, mp_context=spawn) if nps > 1 else None
    pending, exports = deque(), {}
    try:
        queue = iter(todo)

        def submit_next() -> None:
            case = next(queue, None)
            if case is not None:
                pending.append((case, pre_pool.submit(_preprocess, cases[case], mask_of(case), plans.to_dict(),
                                                      predictor.configuration)))
        for _ in range(2 * npp if pre_pool else 0):
            submit_next()
        for case in tqdm(todo, desc="itermask_predict", unit="case", disable=not progress):
            try:
                if pre_pool:
                    _, future = pending.popleft()
                    submit_next()
                    data, hf, brain, props = future.result()
                else:
                    data, hf, brain, props = _preprocess(cases[case], mask_of(case), plans.to_dict(),
                                                         predictor.configuration)
                result, stats = predictor.infer(data, hf, brain, keep_masks=save_masks)
                seg, rule = predictor.segment(result, brain)
                args = (out, case, result.anomaly_map, seg, props, predictor.summarize(result, stats, rule),
                        result.masks if save_masks else None)
                if exp_pool:
                    exports[case] = exp_pool.submit(export_case, *args)
                else:
                    summaries[case] = export_case(*args)
            except InputError as e:
                failures[case] = str(e)
                logger.error("%s: %s", case, e)
            except Exception as e:  # noqa: BLE001 - one broken case must not stop the folder
                failures[case] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                logger.error("%s: %s", case, failures[case], exc_info=logger.isEnabledFor(logging.DEBUG))
        for case, future in exports.items():
            try:
                summaries[case] = future.result()
            except Exception as e:  # noqa: BLE001
                failures[case] = f"export failed: {type(e).__name__}: {e}"
                logger.error("%s: %s", case, failures[case])
    finally:
        for pool in (pre_pool, exp_pool):
            if pool:
                pool.shutdown(cancel_futures=True)
    header = {"model_folder": str(fold_dir), "method": predictor.method, "configuration": predictor.configuration,
              "checkpoint": checkpoint, "calibrated": predictor.calibration is not None,
              "part": f"{part_id + 1}/{num_parts}"}
    write_folder_summary(out, header, summaries, failures)
    return {**header, "cases": summaries, "failures": failures}
