"""The fixed training loop: masked reconstruction of healthy patches, validated on held-out healthy cases.

Loss: MSE over the patch (masked voxels weighted by masked_loss_weight), always in fp32. Validation: MSE inside
the training masks on the fold's validation cases with a fixed seed (comparable across epochs); for methods
without masks, MSE inside the brain. On CPU with num_workers=0 a run is fully determined by the seed, including
across a stop and `--c` (the checkpoint carries every RNG state)."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from itermask_auto.experiment_planning.plans import Plans
from itermask_auto.methods.registry import MethodSpec
from itermask_auto.training.data import CaseStore, PatchSampler, make_loader
from itermask_auto.training.model_folder import load_checkpoint, plans_as_stored, save_checkpoint
from itermask_auto.training.network import build_network, count_parameters, unwrap
from itermask_auto.training.progress import new_history, save_progress_plot
from itermask_auto.training.schedule import autocast_dtype, build_optimizer, learning_rate
from itermask_auto.utilities.masking import masked_network_input

logger = logging.getLogger(__name__)

GRAD_CLIP = 12.0  # nnU-Net's gradient-norm clip
CHECKPOINTS = ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth")


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        masked_weight: float = 1.0) -> torch.Tensor:
    """MSE over the whole patch in fp32; voxels under the mask count `masked_weight` times."""
    err = (output.float() - target.float()) ** 2
    if masked_weight == 1.0:
        return err.mean()
    weight = 1.0 + (masked_weight - 1.0) * mask.unsqueeze(1).float()
    return (err * weight).mean()


def _np_state_to_plain(state: tuple) -> list:
    return [state[0], state[1].tolist(), *state[2:]]   # no ndarray: loadable with weights_only=True


class Trainer:
    def __init__(self, plans: Plans, configuration: str, method: MethodSpec, fold: int | str, fold_dir: Path,
                 dataset_name: str, data_folder: Path, train_cases: Sequence[str], val_cases: Sequence[str],
                 device: torch.device, num_epochs: Optional[int] = None, iterations: Optional[int] = None,
                 num_workers: int = 0, compile: bool = False):
        self.plans, self.configuration, self.method, self.fold = plans, configuration, method, fold
        self.fold_dir, self.dataset_name, self.device = Path(fold_dir), dataset_name, device
        self.config = plans.configuration(configuration)
        self.tp = plans.training
        self.num_epochs = int(num_epochs or self.tp.num_epochs)
        self.iterations = int(iterations or self.tp.iterations_per_epoch)
        self.num_workers = num_workers
        self.seed = self.tp.seed + (int(fold) if str(fold) != "all" else self.tp.num_folds)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2 ** 32)

        self.network = build_network(self.config, method.network).to(device)
        self.model = torch.compile(self.network) if compile else self.network
        self.optimizer = build_optimizer(self.network.parameters(), self.tp)
        self.amp_dtype = autocast_dtype(device, self.tp.mixed_precision)
        self.scaler = torch.amp.GradScaler("cuda") if (self.amp_dtype == torch.float16 and device.type == "cuda") \
            else None
        self.noise = torch.Generator(device=device).manual_seed(self.seed + 1)

        self.store = CaseStore(data_folder, sorted(set(train_cases) | set(val_cases)))
        self.val_cases = list(val_cases)
        self.train_sampler = self._sampler(train_cases, augment=True, seed=self.seed)
        self.epoch, self.best_val_loss, self.history = 0, math.inf, new_history()
        logger.info("%s, configuration %s, fold %s: %d train / %d val cases, patch %s, batch %d, %.2f M parameters, "
                    "%s, %d epochs x %d iterations", method.name, configuration, fold, len(train_cases),
                    len(val_cases), self.config.patch_size, self.config.batch_size,
                    count_parameters(self.network) / 1e6, f"autocast {self.amp_dtype}" if self.amp_dtype else "fp32",
                    self.num_epochs, self.iterations)

    def _sampler(self, cases: Sequence[str], augment: bool, seed: int) -> PatchSampler:
        return PatchSampler(self.store, cases, self.plans, self.configuration, self.method.training_mask,
                            self.config.batch_size, augment=augment, seed=seed)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def _forward(self, batch: Dict[str, torch.Tensor], generator: torch.Generator):
        image, hf, mask = (batch[k].to(self.device, non_blocking=True) for k in ("image", "hf", "mask"))
        net_input = masked_network_input(image, hf, mask, generator)
        with self._autocast():
            output = self.model(net_input)
        return output.float(), image, mask

    def train_step(self, batch: Dict[str, torch.Tensor]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        output, image, mask = self._forward(batch, self.noise)
        loss = reconstruction_loss(output, image, mask, self.plans.training_masks.masked_loss_weight)
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
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> float:
        """Masked-region MSE over validation_iterations fixed batches (same patches and masks every epoch)."""
        self.model.eval()
        sampler = self._sampler(self.val_cases, augment=False, seed=self.seed + 10_000)
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 10_001)
        masked_sum = masked_n = brain_sum = brain_n = 0.0
        for _ in range(max(1, self.tp.validation_iterations)):
            batch = sampler.next_batch()
            output, image, mask = self._forward(batch, generator)
            err = ((output - image) ** 2).mean(1)
            brain = batch["brain"].to(self.device)
            masked_sum += float(err[mask].sum())
            masked_n += float(mask.sum())
            brain_sum += float(err[brain].sum())
            brain_n += float(brain.sum())
        self.model.train()
        if masked_n > 0:
            return masked_sum / masked_n
        return brain_sum / max(brain_n, 1.0)

    def run(self, continue_training: bool = False) -> None:
        if continue_training:
            latest = self.fold_dir / CHECKPOINTS[0]
            if latest.is_file():
                self.load(latest)
            else:
                logger.warning("--c: no %s yet, starting from scratch", latest)
        if self.epoch >= self.num_epochs:
            logger.info("already trained %d of %d epochs", self.epoch, self.num_epochs)
        loader = make_loader(self.train_sampler, self.num_workers, pin_memory=self.device.type == "cuda") \
            if self.epoch < self.num_epochs else None
        self.model.train()
        while self.epoch < self.num_epochs:
            lr = learning_rate(self.epoch, self.num_epochs, self.tp)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            start = time.perf_counter()
            losses = [self.train_step(next(loader)) for _ in tqdm(
                range(self.iterations), desc=f"epoch {self.epoch + 1}/{self.num_epochs}", leave=False, disable=None)]
            val_loss = self.validate()
            self._record(float(np.mean(losses)), val_loss, lr, time.perf_counter() - start)
        del loader
        save_checkpoint(self.fold_dir / CHECKPOINTS[2], self.checkpoint())
        logger.info("training finished: %s", self.fold_dir / CHECKPOINTS[2])

    def _record(self, train_loss: float, val_loss: float, lr: float, seconds: float) -> None:
        h = self.history
        for key, value in zip(("epoch", "train_loss", "val_loss", "lr", "epoch_time"),
                              (self.epoch, train_loss, val_loss, lr, seconds)):
            h[key].append(value)
        self.epoch += 1
        if not math.isfinite(train_loss):
            logger.warning("epoch %d: non-finite training loss", self.epoch)
        logger.info("epoch %d/%d: train loss %.5f, val masked-region MSE %.5f, lr %.2e, %.1f s", self.epoch,
                    self.num_epochs, train_loss, val_loss, lr, seconds)
        is_best = val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss = val_loss
        payload = self.checkpoint()
        save_checkpoint(self.fold_dir / CHECKPOINTS[0], payload)
        if is_best:
            save_checkpoint(self.fold_dir / CHECKPOINTS[1], payload)
        try:
            save_progress_plot(h, self.fold_dir / "progress.png")
        except Exception as e:  # noqa: BLE001 - a plotting failure must never stop training
            logger.warning("progress.png not written: %s", e)

    def _rng_state(self) -> Dict[str, Any]:
        return {"numpy": _np_state_to_plain(np.random.get_state()), "torch": torch.get_rng_state(),
                "sampler": self.train_sampler.rng.bit_generator.state, "noise": self.noise.get_state()}

    def checkpoint(self) -> Dict[str, Any]:
        return {
            "network": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": {"lr_schedule": self.tp.lr_schedule, "epoch": self.epoch, "num_epochs": self.num_epochs},
            "epoch": self.epoch, "num_epochs": self.num_epochs, "best_val_loss": self.best_val_loss,
            "history": self.history, "rng": self._rng_state(),
            "meta": {"method": self.method.name, "configuration": self.configuration, "fold": str(self.fold),
                     "dataset_name": self.dataset_name, "plans_name": self.plans.plans_name,
                     "plans": plans_as_stored(self.plans)},
        }

    def load(self, path: Path) -> None:
        """Resume: weights, optimiser, scaler, history and RNG states; the next epoch is ckpt['epoch']."""
        ckpt = load_checkpoint(path, self.device)
        meta = ckpt["meta"]
        # compared after loading through the dataclasses: keys added later (with defaults) do not break a resume
        if plans_as_stored(Plans.from_dict(meta["plans"])) != plans_as_stored(self.plans) \
                or meta["configuration"] != self.configuration \
                or meta["method"] != self.method.name:
            raise ValueError(f"{path}: was written by another plan/configuration/method; cannot continue from it")
        unwrap(self.model).load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("grad_scaler"):
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.epoch, self.best_val_loss, self.history = ckpt["epoch"], ckpt["best_val_loss"], ckpt["history"]
        rng = ckpt["rng"]
        np_state = rng["numpy"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
        torch.set_rng_state(rng["torch"].cpu())
        self.train_sampler.rng.bit_generator.state = rng["sampler"]
        self.noise.set_state(rng["noise"].cpu())
        logger.info("continuing from %s at epoch %d", path, self.epoch + 1)
