"""Choosing the brain-mask erosion on healthy validation maps: the smallest margin whose outer shell no longer
holds more than its share of the healthy exceedances (the brain's rim is where healthy scans make most of their
false positives; MMCCD and the constrained-attention method erode their masks for that reason)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

SHELL_MM = 2.0          # thickness of the outer shell examined for each candidate
RIM_EXCESS_LIMIT = 1.5  # accepted: the shell's share of exceedances <= 1.5 x its share of the scored voxels


def rim_excess(maps: Sequence[np.ndarray], edges: Sequence[np.ndarray], erosion_mm: float,
               alpha: float) -> Tuple[float, float]:
    """(excess ratio, share of exceedances in the shell) for scoring beyond `erosion_mm` from the brain's edge.

    maps/edges: per case, the map values and edge distances (mm) of the same brain voxels."""
    kept = [(m[e > erosion_mm], e[e > erosion_mm]) for m, e in zip(maps, edges)]
    values = np.concatenate([m for m, _ in kept])
    if values.size == 0:
        return float("inf"), 1.0
    threshold = np.quantile(values, 1 - alpha, method="higher")
    shell = np.concatenate([e <= erosion_mm + SHELL_MM for _, e in kept])
    over = values > threshold
    share_over = float(over[shell].sum() / max(int(over.sum()), 1))
    share_voxels = float(shell.mean())
    return (share_over / share_voxels if share_voxels > 0 else float("inf")), share_over


def choose_erosion(maps: Sequence[np.ndarray], edges: Sequence[np.ndarray], candidates: Sequence[float],
                   alpha: float) -> Tuple[float, List[Dict[str, float]]]:
    """The smallest candidate whose shell excess is within RIM_EXCESS_LIMIT (else the candidate with the least
    excess), and the table of every candidate."""
    table = []
    for r in sorted(candidates):
        ratio, share = rim_excess(maps, edges, r, alpha)
        table.append({"erosion_mm": float(r), "shell_excess": round(ratio, 3), "shell_share_of_exceedances":
                      round(share, 3)})
    ok = [row for row in table if row["shell_excess"] <= RIM_EXCESS_LIMIT]
    chosen = ok[0] if ok else min(table, key=lambda row: row["shell_excess"])
    return chosen["erosion_mm"], table
