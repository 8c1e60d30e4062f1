"""Training progress for humans: progress.png (losses, learning rate, epoch time) and training_log.txt."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Dict, Iterator, List

from itermask_auto.utilities.atomic import atomic_path

logger = logging.getLogger(__name__)

LOG_FILE = "training_log.txt"
PROGRESS_FILE = "progress.png"


def new_history() -> Dict[str, List[float]]:
    return {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "epoch_time": []}


def save_progress_plot(history: Dict[str, List[float]], path: Path,
                       validation_label: str = "masked-region MSE") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(epochs, history["train_loss"], "b-", label="train loss")
    axes[0].plot(epochs, history["val_loss"], "r-", label=f"validation: {validation_label}")
    values = [v for v in history["train_loss"] + history["val_loss"] if v == v]
    axes[0].set_yscale("log" if values and min(values) > 0 else "symlog")  # some methods' losses go negative
    axes[0].legend()
    axes[1].plot(epochs, history["lr"], "g-", label="learning rate")
    axes[1].legend()
    axes[2].plot(epochs, history["epoch_time"], "k-", label="epoch time (s)")
    axes[2].set_xlabel("epoch")
    axes[2].legend()
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


@contextlib.contextmanager
def file_logging(fold_dir: Path, level: int = logging.INFO, enabled: bool = True) -> Iterator[Path]:
    """Append the package's log records to fold_dir/training_log.txt while the block runs (enabled=False: no
    file, e.g. on every rank but 0)."""
    path = Path(fold_dir) / LOG_FILE
    if not enabled:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("itermask_auto")
    old_level = package_logger.level
    if package_logger.getEffectiveLevel() > level:
        package_logger.setLevel(level)
    package_logger.addHandler(handler)
    try:
        yield path
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
        handler.close()
