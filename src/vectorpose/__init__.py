"""VectorPOSE: spatially-aware self-supervised pretraining of 3D segmentation networks.

Zhang, Gu, Sapkota, Zheng, Liang, Chen, "A Point in the Right Direction: Vector Prediction for
Spatially-aware Self-supervised Volumetric Representation Learning", ISBI 2023 (arXiv 2211.08533).
"""

__version__ = "0.1.0"
