"""The engine's training loop for one stage of a method: epochs of sampled batches, the method's loss, validation
on fixed healthy batches, atomic checkpoints with resume, progress.png and the log.

Distributed (torchrun): the network is wrapped in DistributedDataParallel; each rank draws its own share of every
global batch (training/data.py), gradients are averaged, and only rank 0 writes files. Batch rule: the planned
batch B is the global batch; each of W ranks takes ceil(B / W) samples, and when that makes the global batch G
larger than B (W does not divide B) the learning rate is scaled by G / B. A checkpoint does not depend on W, so
`--c` may resume with another number of ranks: the samples are the same (they are indexed globally).

On CPU with num_workers=0 a run is fully determined by the seed, also across a stop and `--c`."""
from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.methods.base import Method, Stage, StepContext, stage_batch_size, with_recipe
from itermask_auto.training.checkpoint import load_checkpoint, plans_as_stored, same_plan, save_checkpoint
from itermask_auto.training.data import CaseStore, PatchSampler, make_loader
from itermask_auto.training.network import count_parameters, unwrap
from itermask_auto.training.progress import new_history, save_progress_plot
from itermask_auto.training.schedule import autocast_dtype, build_optimizer, learning_rate
from itermask_auto.utilities.distributed import SINGLE, Ranks, all_reduce_sum, gather_dict

logger = logging.getLogger(__name__)

GRAD_CLIP = 12.0  # nnU-Net's gradient-norm clip
CHECKPOINTS = ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth")
LOG_EVERY_S = 60.0  # without a terminal, a log line inside long epochs at most this often
VALIDATION_SEED_OFFSET = 10_000


def rank_batch(planned_batch: int, world_size: int) -> tuple[int, int, float]:
    """(per-rank batch, global batch, learning-rate factor) for `world_size` ranks (see the module doc)."""
    per_rank = max(1, math.ceil(planned_batch / world_size))
    global_batch = per_rank * world_size
    return per_rank, global_batch, global_batch / planned_batch


def weights_digest(network: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal digests = bit-identical weights."""
    h = hashlib.sha1()
    for p in network.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    def __init__(self, plans: Plans, configuration: str, method: Method, fold: int | str, fold_dir: Path,
                 dataset_name: str, data_folder: Path, train_cases: Sequence[str], val_cases: Sequence[str],
                 device: torch.device, num_epochs: Optional[int] = None, iterations: Optional[int] = None,
                 num_workers: int = 0, compile: bool = False, stage: Optional[Stage] = None,
                 frozen: Optional[Dict[str, torch.nn.Module]] = None, ranks: Ranks = SINGLE,
                 verify_replicas: bool = False, labelled: Optional[Any] = None):
        self.plans, self.configuration, self.method, self.fold = plans, configuration, method, fold
        self.stage = stage or method.stages(plans, configuration)[0]
        self.fold_dir, self.dataset_name, self.device, self.ranks = Path(fold_dir), dataset_name, device, ranks
        self.frozen = dict(frozen or {})
        self.labelled = labelled   # `--labelled` data for the method's steps (StepContext.labelled)
        self.config = plans.configuration(configuration)
        self.tp = with_recipe(plans.training, self.stage, num_epochs, iterations)
        self.num_epochs, self.iterations = int(self.tp.num_epochs), int(self.tp.iterations_per_epoch)
        self.num_workers, self.verify_replicas = num_workers, verify_replicas
        self.seed = self.tp.seed + (int(fold) if str(fold) != "all" else self.tp.num_folds)
        torch.manual_seed(self.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        np.random.seed(self.seed % 2 ** 32)

        self.network = method.build_network(self.stage, plans, configuration).to(device)
        if device.type == "cpu" and any(isinstance(m, torch.nn.Conv3d) for m in self.network.modules()):
            # oneDNN's channels-last 3-D convolutions: -23 % CPU time per step on the IXI plan (AVX2 reference CPU,
            # 1.59 -> 1.22 s, benchmarks/train_speed.py); the weights are saved in the usual layout
            self.network = self.network.to(memory_format=torch.channels_last_3d)
        self.model = self.network
        if ranks.distributed:
            # find_unused_parameters: some networks hold parameters a step does not use (PlainConvUNet's
            # deep-supervision heads); without it their gradient buckets are never reduced and the ranks drift apart
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)
        if compile:
            self.model = torch.compile(self.model)
        planned_batch = stage_batch_size(self.stage, plans, configuration)
        self.batch_size, self.global_batch, self.lr_factor = rank_batch(planned_batch, ranks.world_size)
        self.optimizer = build_optimizer(self.network.parameters(), self.tp)
        self.amp_dtype = autocast_dtype(device, self.tp.mixed_precision)
        self.scaler = torch.amp.GradScaler("cuda") if (self.amp_dtype == torch.float16 and device.type == "cuda") \
            else None

        self.store = CaseStore(data_folder, sorted(set(train_cases) | set(val_cases)))
        self.val_cases = list(val_cases)
        self.train_sampler = self._sampler(train_cases, augment=True, seed=self.seed, batch=self.batch_size,
                                           offset=ranks.rank * self.batch_size, global_batch=self.global_batch)
        self.epoch, self.best_val_loss, self.history = 0, math.inf, new_history()
        self.replica_checks = 0
        logger.info("%s stage '%s', configuration %s, fold %s: %d train / %d val cases, patch %s, batch %d "
                    "(%d rank(s) x %d%s), %.2f M parameters, %s, %d epochs x %d iterations", method.name,
                    self.stage.name, configuration, fold, len(train_cases), len(val_cases), self.config.patch_size,
                    self.global_batch, ranks.world_size, self.batch_size,
                    f", lr x{self.lr_factor:g}" if self.lr_factor != 1 else "", count_parameters(self.network) / 1e6,
                    f"autocast {self.amp_dtype}" if self.amp_dtype else "fp32", self.num_epochs, self.iterations)

    def _sampler(self, cases: Sequence[str], augment: bool, seed: int, batch: int, offset: int = 0,
                 global_batch: Optional[int] = None) -> PatchSampler:
        return PatchSampler(self.store, cases, self.plans, self.configuration, self.stage.training_mask, batch,
                            augment=augment, seed=seed, patch_centre=self.stage.patch_centre, offset=offset,
                            global_batch=global_batch)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def step_context(self, training: bool = True) -> StepContext:
        return StepContext(device=self.device, plans=self.plans, configuration=self.configuration, epoch=self.epoch,
                           num_epochs=self.num_epochs, frozen=self.frozen, autocast=self._autocast, training=training,
                           labelled=self.labelled)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.method.loss(self.stage, self.model, batch, self.step_context())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP)
            self.optimizer.step()
        if self.verify_replicas and self.ranks.distributed:
            self._check_replicas()
        return float(loss.detach())

    def _check_replicas(self) -> None:
        """Debug (--verify_replicas): every rank's weights must be bit-identical after every step."""
        digests = gather_dict({str(self.ranks.rank): weights_digest(self.network)}, self.ranks)
        if len(set(digests.values())) != 1:
            raise RuntimeError(f"ranks hold different weights after step {self.replica_checks + 1}: {digests}")
        self.replica_checks += 1

    @torch.no_grad()
    def validate(self) -> float:
        """The method's validation error over validation_iterations fixed batches (the same every epoch), the
        batches shared out over the ranks; on the unwrapped network (no DDP collective on a partial share)."""
        self.network.eval()
        sampler = self._sampler(self.val_cases, augment=False, seed=self.seed + VALIDATION_SEED_OFFSET,
                                batch=stage_batch_size(self.stage, self.plans, self.configuration))
        ctx = self.step_context(training=False)
        total = count = 0.0
        for n in range(self.ranks.rank, max(1, self.tp.validation_iterations), self.ranks.world_size):
            s, c = self.method.validation_error(self.stage, self.network, sampler.batch(n), ctx)
            total, count = total + s, count + c
        total, count = all_reduce_sum([total, count], self.ranks)
        self.network.train()
        return total / max(count, 1e-12)

    def _iterations(self):
        desc = f"{self.stage.name} epoch {self.epoch + 1}/{self.num_epochs}"
        quiet = not self.ranks.is_main or not sys.stderr.isatty()
        return tqdm(range(self.iterations), desc=desc, leave=False, disable=quiet), quiet

    def run(self, continue_training: bool = False) -> None:
        if continue_training:
            latest = self.fold_dir / CHECKPOINTS[0]
            if latest.is_file():
                self.load(latest)
            else:
                # a first run under --c (benchmarks resume by default) or a later stage not yet begun: nothing lost
                logger.info("--c: no %s yet, starting from scratch", latest)
        if self.epoch >= self.num_epochs:
            logger.info("stage '%s': already trained %d of %d epochs", self.stage.name, self.epoch, self.num_epochs)
        loader = None
        if self.epoch < self.num_epochs:
            self.train_sampler.next_index = self.epoch * self.iterations
            loader = make_loader(self.train_sampler, self.num_workers, pin_memory=self.device.type == "cuda")
        self.model.train()
        while self.epoch < self.num_epochs:
            lr = learning_rate(self.epoch, self.num_epochs, self.tp) * self.lr_factor
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            start = last_log = time.perf_counter()
            bar, quiet = self._iterations()
            losses = []
            for it in bar:
                losses.append(self.train_step(next(loader)))
                if quiet and self.ranks.is_main and time.perf_counter() - last_log > LOG_EVERY_S:
                    last_log = time.perf_counter()
                    logger.info("%s epoch %d/%d: iteration %d/%d, loss %.5f, %.0f s", self.stage.name,
                                self.epoch + 1, self.num_epochs, it + 1, self.iterations, float(np.mean(losses)),
                                last_log - start)
            loss_sum, loss_n = all_reduce_sum([float(np.sum(losses)), float(len(losses))], self.ranks)
            val_loss = self.validate()
            if self.verify_replicas and self.ranks.distributed:
                logger.info("replica check: replicas bit-identical after %d steps (%d ranks, checked after each)",
                            self.replica_checks, self.ranks.world_size)
            self._record(loss_sum / loss_n, val_loss, lr, time.perf_counter() - start)
        del loader
        if self.ranks.is_main:
            save_checkpoint(self.fold_dir / CHECKPOINTS[2], self.checkpoint())
            logger.info("stage '%s' finished: %s", self.stage.name, self.fold_dir / CHECKPOINTS[2])

    def _record(self, train_loss: float, val_loss: float, lr: float, seconds: float) -> None:
        h = self.history
        for key, value in zip(("epoch", "train_loss", "val_loss", "lr", "epoch_time"),
                              (self.epoch, train_loss, val_loss, lr, seconds)):
            h[key].append(value)
        self.epoch += 1
        if not math.isfinite(train_loss):
            logger.warning("epoch %d: non-finite training loss", self.epoch)
        logger.info("%s epoch %d/%d: train loss %.5f, val %s %.5f, lr %.2e, %.1f s", self.stage.name, self.epoch,
                    self.num_epochs, train_loss, self.stage.validation_label, val_loss, lr, seconds)
        is_best = val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss = val_loss
        if not self.ranks.is_main:
            return
        payload = self.checkpoint()
        save_checkpoint(self.fold_dir / CHECKPOINTS[0], payload)
        if is_best:
            save_checkpoint(self.fold_dir / CHECKPOINTS[1], payload)
        try:
            save_progress_plot(h, self.fold_dir / "progress.png", self.stage.validation_label)
        except Exception as e:  # noqa: BLE001 - a plotting failure must never stop training
            logger.warning("progress.png not written: %s", e)

    def checkpoint(self) -> Dict[str, Any]:
        return {
            "network": {k: v.contiguous() for k, v in unwrap(self.network).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": {"lr_schedule": self.tp.lr_schedule, "epoch": self.epoch, "num_epochs": self.num_epochs,
                          "iterations_per_epoch": self.iterations},
            "epoch": self.epoch, "num_epochs": self.num_epochs, "best_val_loss": self.best_val_loss,
            "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "batch_index": self.epoch * self.iterations},
            "meta": {"method": self.method.name, "stage": self.stage.name, "configuration": self.configuration,
                     "fold": str(self.fold), "dataset_name": self.dataset_name, "plans_name": self.plans.plans_name,
                     "plans": plans_as_stored(self.plans), "world_size": self.ranks.world_size,
                     "global_batch": self.global_batch},
        }

    def load(self, path: Path) -> None:
        """Resume: weights, optimiser, scaler, history and the torch RNG; the next epoch is ckpt['epoch']. The
        batches continue from their global index, so the number of ranks may differ from the run that wrote it."""
        ckpt = load_checkpoint(path, self.device)
        meta = ckpt["meta"]
        if not same_plan(meta["plans"], self.plans) or meta["configuration"] != self.configuration \
                or meta["method"] != self.method.name or meta.get("stage", self.stage.name) != self.stage.name:
            raise ValueError(f"{path}: was written by another plan/configuration/method; cannot continue from it")
        unwrap(self.network).load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("grad_scaler"):
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.epoch, self.best_val_loss, self.history = ckpt["epoch"], ckpt["best_val_loss"], ckpt["history"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        previous = meta.get("world_size", 1)
        logger.info("stage '%s': continuing from %s at epoch %d%s", self.stage.name, path, self.epoch + 1,
                    f" (written by {previous} rank(s), now {self.ranks.world_size})"
                    if previous != self.ranks.world_size else "")
