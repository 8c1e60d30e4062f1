"""Method `mmccd`: masked modality cycles with conditional diffusion (Liang et al. 2023); see method.py."""
