"""itermask_auto: self-configuring unsupervised anomaly segmentation for brain MRI (IterMask3D)."""
__version__ = "0.1.0"
