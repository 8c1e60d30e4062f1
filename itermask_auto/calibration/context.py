"""What a method's calibration hook works with: the healthy validation cases, this rank's share of them, loading
(with the scoring margin applied to the brain mask), merging across ranks, a progress bar on rank 0, and a
per-rank scratch space. A case id may name a variant ("CASE@automatic": the same healthy scan preprocessed with
an automatic brain mask), loaded by `loader`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from tqdm import tqdm

from itermask_auto.inference.scoring_region import erode_brain
from itermask_auto.preprocessing.storage import load_case
from itermask_auto.utilities.distributed import SINGLE, Ranks, gather_dict

VARIANT_SEPARATOR = "@"


@dataclass
class CalibrationContext:
    cases: List[str]                          # every healthy validation case (and variant) of the fold
    data_folder: Path                         # the configuration's preprocessed arrays
    ranks: Ranks = SINGLE
    erosion_mm: float = 0.0                   # scoring margin applied to every loaded brain mask
    spacing: Sequence[float] = (1.0, 1.0, 1.0)
    loader: Optional[Callable[[str], tuple]] = None   # loads "CASE@variant" ids
    state: Dict[str, Any] = field(default_factory=dict)          # a method's scratch space (this rank only)
    # the method keys of an earlier calibration of the same fold on nearly the same maps (the scoring with no margin,
    # before a brain-rim margin was chosen): a method may start its searches there; empty on a first calibration
    earlier: Dict[str, Any] = field(default_factory=dict)
    extra_seconds: Dict[str, float] = field(default_factory=dict)  # time a method spent on a case in `calibrate`

    @property
    def my_cases(self) -> List[str]:
        """This rank's share: every world_size-th case."""
        return self.cases[self.ranks.rank::self.ranks.world_size]

    def load_unscored(self, case: str):
        """(data, hf, whole brain bool, properties)."""
        if VARIANT_SEPARATOR in case:
            data, hf, brain, props = self.loader(case)
        else:
            data, hf, brain, props = load_case(self.data_folder, case)
        return data, hf, brain.astype(bool), props

    def load(self, case: str):
        """(data, hf, scored brain region bool, properties): the brain eroded by the scoring margin."""
        data, hf, brain, props = self.load_unscored(case)
        return data, hf, erode_brain(brain, self.erosion_mm, self.spacing), props

    def gather(self, local: Dict[str, Any]) -> Dict[str, Any]:
        """Merge the per-case dicts of every rank (on every rank)."""
        return gather_dict(local, self.ranks)

    def progress(self, items: Iterable, desc: str) -> Iterable:
        return tqdm(items, desc=desc, unit="case", disable=None if self.ranks.is_main else True)
