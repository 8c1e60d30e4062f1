"""Progress display of itermask_predict: a bar over the cases and, under it, a counter of the network passes of
the case being predicted (one case can take minutes: the pass counter is where the wait shows).

Both are drawn only when stderr is a terminal: in a log file or a pipe a redrawn bar is noise."""
from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm import tqdm


def show_progress(wanted: bool) -> bool:
    return wanted and sys.stderr.isatty()


def case_bar(cases: Iterable[str], total: int, enabled: bool) -> tqdm:
    return tqdm(cases, total=total, desc="itermask_predict", unit="case", disable=not enabled, file=sys.stderr)


class PassCounter:
    """Called by Predictor.on_pass after every network pass; one counter line per case, removed when it ends."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Optional[tqdm] = None

    def start(self, case: str) -> None:
        self.close()
        if self.enabled:
            # mininterval 0: a pass takes seconds, so drawing every one costs nothing and never lags behind
            self.bar = tqdm(total=None, desc=f"  {case}", leave=False, position=1, file=sys.stderr, mininterval=0,
                            miniters=1, bar_format="{desc}: {n} network passes [{elapsed}, {rate_inv_fmt}]",
                            unit="pass")

    def __call__(self, passes: int) -> None:
        # one call per pass: counted here, because itermask2's two networks each count their own passes
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
