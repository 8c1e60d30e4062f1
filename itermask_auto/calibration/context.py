"""What a method's calibration hook works with: the fold's healthy validation cases, this rank's share of them,
loading, merging across ranks, a progress bar on rank 0, and a per-rank scratch space."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List

from tqdm import tqdm

from itermask_auto.preprocessing.storage import load_case
from itermask_auto.utilities.distributed import SINGLE, Ranks, gather_dict


@dataclass
class CalibrationContext:
    cases: List[str]                          # every healthy validation case of the fold
    data_folder: Path                         # the configuration's preprocessed arrays
    ranks: Ranks = SINGLE
    state: Dict[str, Any] = field(default_factory=dict)          # a method's scratch space (this rank only)
    extra_seconds: Dict[str, float] = field(default_factory=dict)  # time a method spent on a case in `calibrate`

    @property
    def my_cases(self) -> List[str]:
        """This rank's share: every world_size-th case."""
        return self.cases[self.ranks.rank::self.ranks.world_size]

    def load(self, case: str):
        """(data, hf, brain bool, properties) of a preprocessed case."""
        data, hf, brain, props = load_case(self.data_folder, case)
        return data, hf, brain.astype(bool), props

    def gather(self, local: Dict[str, Any]) -> Dict[str, Any]:
        """Merge the per-case dicts of every rank (on every rank)."""
        return gather_dict(local, self.ranks)

    def progress(self, items: Iterable, desc: str) -> Iterable:
        return tqdm(items, desc=desc, unit="case", disable=None if self.ranks.is_main else True)
