"""Folder-to-folder prediction (`itermask_predict`): find the trained fold, list the input cases, preprocess,
check each input against the training data, predict and export each case, and write the folder summary. One
broken case never stops the folder; Ctrl-C stops it with `PredictionInterrupted` (finished cases are kept)."""
from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.inference.input_listing import INPUT_ENDINGS, InputCase
from itermask_auto.inference.predictor import Predictor

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "input")
# itermask_train's words for the same mistake (training/schedule.py resolve_device)
NO_CUDA = "device 'cuda' requested but torch sees no CUDA GPU (use -device cpu)"


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during a folder: how many of this run's cases were finished (their files are complete)."""

    def __init__(self, finished: int, total: int):
        super().__init__(f"interrupted after {finished} of {total} cases")
        self.finished, self.total = finished, total


def check_device(device: str) -> None:
    """Before the checkpoint is loaded: torch.load onto a missing GPU would blame the checkpoint."""
    import torch
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device '{device}' (cpu|cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(NO_CUDA)


def resolve_model_folder(dataset: str | int, configuration: Optional[str], fold: str | int, method: str,
                         plans_name: Optional[str] = None) -> Path:
    """$ITERMASK_results/DatasetXXX/<method>__<plans>__<configuration>/fold_N (plans name guessed if unique)."""
    from itermask_auto.methods.registry import get_method
    from itermask_auto.paths import results_root
    from itermask_auto.utilities.dataset import find_dataset
    get_method(method)  # an unknown method is named with the registered ones, never suggested for training
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


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C reaches the whole process group; the main process alone handles it (workers
    would each print a traceback), then shuts the pools down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _no_op() -> None:
    return None


def _worker_pool(n: int, context) -> ProcessPoolExecutor:
    """n spawned workers, all started now while this process ignores SIGINT. A spawned child keeps an ignored
    SIGINT through exec and Python's start-up, so a Ctrl-C that lands while a worker still imports torch/MONAI
    (seconds on a loaded machine, before `_ignore_sigint` runs) cannot print its traceback. The parent ignores
    SIGINT only for the milliseconds the starts take; off the main thread signals cannot be changed, and the
    workers then start unprotected as before."""
    pool = ProcessPoolExecutor(n, mp_context=context, initializer=_ignore_sigint)
    if threading.current_thread() is not threading.main_thread():
        return pool
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for _ in range(n):  # each submit with no idle worker starts one process
            pool.submit(_no_op)
    finally:
        signal.signal(signal.SIGINT, previous)
    return pool


def find_mask(masks_dir: Optional[str | Path], case: str) -> Optional[Path]:
    if not masks_dir:
        return None
    return next((Path(masks_dir) / f"{case}{e}" for e in INPUT_ENDINGS if (Path(masks_dir) / f"{case}{e}").is_file()),
                None)


def unchanged_since_written(out: Path, case: InputCase) -> bool:
    """--continue: a case counts as finished only if its outputs were computed from these very input files."""
    from itermask_auto.inference.export_results import is_case_done, read_case_summary
    if not is_case_done(out, case.case):
        return False
    recorded = read_case_summary(out, case.case).get("input_sha256")
    if recorded is None:
        logger.info("%s: CASE.json records no input checksum (an older itermask_predict): predicted again", case.case)
        return False
    if recorded != case.checksum():
        logger.warning("%s: the input files changed since its outputs were written: predicted again", case.case)
        return False
    return True


def predict_folder(input_dir: str | Path, output_dir: str | Path, dataset: str | int | None = None,
                   configuration: Optional[str] = None, fold: str | int = 0, method: str = "itermask3d",
                   device: str = "cpu",
                   *, model_dir: Optional[str | Path] = None, checkpoint: str = "checkpoint_final.pth",
                   plans_name: Optional[str] = None, continue_prediction: bool = False, num_parts: int = 1,
                   part_id: int = 0, save_masks: bool = False, npp: int = 1, nps: int = 1,
                   masks_dir: Optional[str | Path] = None, mode: Optional[str] = None,
                   progress: bool = True, output_format: str = "nifti",
                   dicom_channels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Predict every case of `input_dir` into `output_dir`; a bad case is logged with its one-line error and
    skipped. Returns the predictions.json header with this run's "cases" and "failures"."""
    from itermask_auto.inference.export_results import read_case_summary, write_folder_summary
    from itermask_auto.inference.input_check import TrainingRanges
    from itermask_auto.inference.input_listing import list_prediction_inputs

    if not 0 <= part_id < num_parts:
        raise ValueError(f"--part_id {part_id} must be in 0..{num_parts - 1}")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format '{output_format}' ({'|'.join(OUTPUT_FORMATS)})")
    check_device(device)
    fold_dir = Path(model_dir) if model_dir else resolve_model_folder(dataset, configuration, fold, method, plans_name)
    predictor = Predictor.from_model_folder(fold_dir, device, checkpoint)
    if mode:  # "itermask3d" (per-subject τ) | "itermask2" (calibrated τ, no sweep)
        predictor.plans.inference.mode = mode
    plans, out = predictor.plans, Path(output_dir)
    listing_problems: Dict[str, str] = {}  # misnamed images, wrong channel counts: reported, the rest still runs
    cases = list_prediction_inputs(Path(input_dir), list(plans.channel_names.values()), out, listing_problems,
                                   dicom_channels)
    out.mkdir(parents=True, exist_ok=True)
    for problem in listing_problems.values():
        logger.error("%s", problem)
    ids = sorted(cases)[part_id::num_parts]
    done = [c for c in ids if continue_prediction and unchanged_since_written(out, cases[c])]
    if done:
        logger.info("--continue: %d finished case(s) skipped", len(done))
    run = FolderRun(predictor, out, cases, TrainingRanges.load(fold_dir, plans.dataset_name), save_masks,
                    masks_dir, output_format)
    run.summaries.update({c: read_case_summary(out, c) for c in done})
    listed_here = listing_problems if part_id == 0 else {}  # part 0 reports the folder's listing problems
    run.failures.update(listed_here)
    run.predict([c for c in ids if c not in done], npp, nps, progress)
    header = {"model_folder": str(fold_dir), "method": predictor.method, "configuration": predictor.configuration,
              "checkpoint": checkpoint, "calibrated": predictor.calibration is not None,
              "part": f"{part_id + 1}/{num_parts}"}
    write_folder_summary(out, header, list(ids) + list(listed_here), run.failures)
    return {**header, "cases": run.summaries, "failures": run.failures}


class FolderRun:
    """The case loop of one predict_folder call: preprocessing (here or in -npp workers), inference, input
    check, export (here or in -nps workers); summaries and one-line failures per case."""

    def __init__(self, predictor: Predictor, out: Path, cases: Dict[str, InputCase], ranges, save_masks: bool,
                 masks_dir: Optional[str | Path], output_format: str):
        self.predictor, self.out, self.cases, self.ranges = predictor, out, cases, ranges
        self.save_masks, self.masks_dir, self.output_format = save_masks, masks_dir, output_format
        self.summaries: Dict[str, Dict[str, Any]] = {}
        self.failures: Dict[str, str] = {}
        self.exports: Dict[str, Any] = {}   # case -> Future of an export running in a worker

    def predict(self, todo: List[str], npp: int, nps: int, progress: bool) -> None:
        import multiprocessing

        from itermask_auto.inference.progress import PassCounter, case_bar, show_progress
        spawn = multiprocessing.get_context("spawn")  # fork after torch threads started can deadlock
        pools = [_worker_pool(n, spawn) if n > 1 else None for n in (npp, nps)]
        shown = show_progress(progress)
        passes = PassCounter(shown)
        self.predictor.on_pass = passes if shown else None
        finished_before, interrupted = len(self.summaries), False
        try:
            self._loop(todo, npp, pools, case_bar(todo, len(todo), shown), passes)
            self._collect_exports()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            passes.close()
            self.predictor.on_pass = None
            for pool in pools:
                if pool:  # running jobs end (workers ignore Ctrl-C), queued ones are dropped
                    pool.shutdown(cancel_futures=True)
        if interrupted:
            finished = len(self.summaries) - finished_before + sum(
                1 for f in self.exports.values() if f.done() and not f.cancelled() and f.exception() is None)
            raise PredictionInterrupted(finished, len(todo)) from None

    def _loop(self, todo: List[str], npp: int, pools: list, bar, passes) -> None:
        plans = self.predictor.plans
        pre_pool, exp_pool = pools
        pending = deque()
        queue = iter(todo)

        def submit_next() -> None:
            case = next(queue, None)
            if case is not None:
                pending.append(pre_pool.submit(_preprocess, self.cases[case].channels,
                                               find_mask(self.masks_dir, case), plans.to_dict(),
                                               self.predictor.configuration))
        for _ in range(2 * npp if pre_pool else 0):
            submit_next()
        for case in bar:
            try:
                if pre_pool:
                    future = pending.popleft()
                    submit_next()
                    prepared = future.result()
                else:
                    prepared = _preprocess(self.cases[case].channels, find_mask(self.masks_dir, case),
                                           plans.to_dict(), self.predictor.configuration)
                passes.start(case)
                args = self._infer(case, *prepared)
                passes.close()
                if exp_pool:
                    self.exports[case] = exp_pool.submit(_export, *args)
                else:
                    self.summaries[case] = _export(*args)
            except Exception as e:  # noqa: BLE001 - one broken case must not stop the folder
                self._failed(case, e)

    def _infer(self, case: str, data, hf, brain, props) -> tuple:
        """Inference, segmentation and the case summary; returns the export_case arguments."""
        from itermask_auto.inference.input_check import input_check_record
        source = self.cases[case]
        checksum = source.checksum()
        props["channel_files"] = source.described  # a DICOM channel: its folder and series, not one slice file
        reasons = self.ranges.check(props, data, brain) if self.ranges is not None else []
        if reasons:
            logger.warning("%s: outside the training data (%s): its score may reflect that, not an anomaly",
                           case, "; ".join(reasons))
        p = self.predictor
        result, stats = p.infer(data, hf, brain, keep_masks=self.save_masks)
        seg, rule = p.segment(result, brain)
        summary = {**p.summarize(result, stats, rule), "input_sha256": checksum,
                   "input_check": input_check_record(self.ranges, reasons)}
        ending = source.ending if self.output_format == "input" else ".nii.gz"
        return (self.out, case, result.anomaly_map, seg, props, summary,
                result.masks if self.save_masks else None, ending)

    def _collect_exports(self) -> None:
        for case, future in self.exports.items():
            try:
                self.summaries[case] = future.result()
            except Exception as e:  # noqa: BLE001
                self._failed(case, e, prefix="export failed: ")

    def _failed(self, case: str, error: Exception, prefix: str = "") -> None:
        from itermask_auto.imageio.errors import InputError
        if isinstance(error, InputError):
            self.failures[case] = f"{prefix}{error}"
        else:
            first = str(error).splitlines()[0] if str(error) else ""
            self.failures[case] = f"{prefix}{type(error).__name__}: {first}"
        logger.error("%s: %s", case, self.failures[case],
                     exc_info=logger.isEnabledFor(logging.DEBUG) and not isinstance(error, InputError))


def _export(*args):
    """Top-level (picklable) for -nps workers."""
    from itermask_auto.inference.export_results import export_case
    return export_case(*args)
