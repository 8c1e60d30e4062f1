"""Healthy-only calibration: one home, called by training (after the last stage) and by `--calibrate_only`."""
