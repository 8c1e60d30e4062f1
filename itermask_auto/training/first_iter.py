"""IterMask2's first-iteration network: reconstructs the image channels from their high-frequency channels only.

Trained with the same loop, data, augmentation and recipe as the masked autoencoder (`trainer.py`), on the same
fold, after it; saved in `fold_N/first_iter/` (checkpoint_{latest,best,final}.pth, progress.png), so `--c`
resumes either network. Its network is the planned one with input_channels = C (the hf channels) instead of 2C;
the loss is the plain MSE over the patch, validation the MSE inside the brain."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Dict

import torch

from itermask_auto.experiment_planning.plans import ConfigurationPlan, Plans
from itermask_auto.imageio.errors import InputError
from itermask_auto.training.model_folder import load_checkpoint, plans_as_stored
from itermask_auto.training.network import build_network, count_parameters
from itermask_auto.training.schedule import build_optimizer
from itermask_auto.training.trainer import Trainer

logger = logging.getLogger(__name__)

FIRST_ITER_DIR = "first_iter"


def first_iter_configuration(config: ConfigurationPlan) -> ConfigurationPlan:
    """The planned configuration with input = the C high-frequency channels (output = the C image channels)."""
    return dataclasses.replace(config, network=dataclasses.replace(
        config.network, input_channels=config.network.output_channels))


class FirstIterTrainer(Trainer):
    """The masked-AE trainer with the network swapped and the input reduced to hf (no mask, no noise)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.network = build_network(first_iter_configuration(self.config)).to(self.device)
        self.model = torch.compile(self.network) if kwargs.get("compile") else self.network
        self.optimizer = build_optimizer(self.network.parameters(), self.tp)
        logger.info("first-iteration network (input: %d hf channel(s)): %.2f M parameters",
                    self.config.network.output_channels, count_parameters(self.network) / 1e6)

    def _forward(self, batch: Dict[str, torch.Tensor], generator: torch.Generator):
        image, hf, mask = (batch[k].to(self.device, non_blocking=True) for k in ("image", "hf", "mask"))
        with self._autocast():
            output = self.model(hf)
        # an empty mask: plain MSE in the loss, brain MSE in validation
        return output.float(), image, torch.zeros_like(mask)


def train_first_iter(fold_dir: Path, *args, continue_training: bool = False, **kwargs) -> Path:
    """Train (or continue) the first-iteration network of a fold; arguments as Trainer's after fold_dir."""
    sub = Path(fold_dir) / FIRST_ITER_DIR
    sub.mkdir(parents=True, exist_ok=True)
    plans, configuration, method, fold = args[:4]
    trainer = FirstIterTrainer(plans, configuration, method, fold, sub, *args[4:], **kwargs)
    trainer.run(continue_training=continue_training)
    return sub


def load_first_iter_network(fold_dir: str | Path, plans: Plans, configuration: str,
                            checkpoint: str = "checkpoint_final.pth",
                            device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained first-iteration network of an itermask2 fold, eval() on `device`."""
    path = Path(fold_dir) / FIRST_ITER_DIR / checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found - an itermask2 model needs its first-iteration network "
                                f"(itermask_train ... -m itermask2 trains both)")
    ckpt = load_checkpoint(path, device)
    if plans_as_stored(Plans.from_dict(ckpt["meta"]["plans"])) != plans_as_stored(plans) \
            or ckpt["meta"]["configuration"] != configuration:
        raise InputError(path, "was trained with another plan or configuration than its fold's plans.json")
    network = build_network(first_iter_configuration(plans.configuration(configuration)))
    try:
        network.load_state_dict(ckpt["network"])
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit the planned first-iteration network: {str(e).splitlines()[0]}")
    return network.to(device).eval()
