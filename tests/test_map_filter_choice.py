"""benchmarks/map_filter_choice.py: the committed rule that decides a median-filter width from validation draws."""
from __future__ import annotations

from benchmark_scripts import load_benchmark

mfc = load_benchmark("map_filter_choice")


def _table(**widths):
    """widths: name -> {draw: (dice, auprc)}."""
    return {w.replace("w", ""): {d: {"dice": v[0], "auprc": v[1]} for d, v in draws.items()}
            for w, draws in widths.items()}


def test_a_width_must_gain_dice_on_the_deciding_draw_without_losing_auprc():
    base = {"design": (0.40, 0.30), "large": (0.2, 0.5)}
    assert mfc.choose(_table(w0=base, w5={"design": (0.43, 0.30), "large": (0.1, 0.1)}), ["design"]) == "5"
    assert mfc.choose(_table(w0=base, w5={"design": (0.41, 0.40), "large": (0.9, 0.9)}), ["design"]) == "0"
    assert mfc.choose(_table(w0=base, w5={"design": (0.50, 0.29)}), ["design"]) == "0"    # AUPRC -0.01
    # of several that pass, the one ahead most in Dice
    assert mfc.choose(_table(w0=base, w3={"design": (0.45, 0.3)}, w5={"design": (0.48, 0.3)}), ["design"]) == "5"


def test_further_deciding_draws_must_not_lose():
    base = {"large": (0.50, 0.50), "small": (0.20, 0.10)}
    gain = (0.60, 0.60)
    assert mfc.choose(_table(w0=base, w5={"large": gain, "small": (0.19, 0.096)}), ["large", "small"]) == "5"
    assert mfc.choose(_table(w0=base, w5={"large": gain, "small": (0.17, 0.10)}), ["large", "small"]) == "0"
    assert mfc.choose(_table(w0=base, w5={"large": gain, "small": (0.20, 0.09)}), ["large", "small"]) == "0"
    assert mfc.choose(_table(w0=base, w5={"large": gain, "small": (0.17, 0.10)}), ["large"]) == "5"
