"""VectorPOSE (Zhang et al., ISBI 2023) and its two halves as ablations.

- ``vectorpose``: Vector Prediction + Boundary-Focused Reconstruction, weights 1, 1, 1.
- ``vp``: Vector Prediction alone.
- ``bfr``: Boundary-Focused Reconstruction alone (restoration + boundary map).
"""

from .base import PretextMethod, register

VECTORPOSE = register(
    PretextMethod(
        "vectorpose",
        "Vector Prediction + Boundary-Focused Reconstruction (the full method)",
        vector_weight=1.0,
        reconstruction_weight=1.0,
        boundary_weight=1.0,
    )
)
VP = register(PretextMethod("vp", "Vector Prediction only", vector_weight=1.0))
BFR = register(
    PretextMethod(
        "bfr",
        "Boundary-Focused Reconstruction only (restored crop + edge map)",
        reconstruction_weight=1.0,
        boundary_weight=1.0,
    )
)
