"""Preprocessed volumes made straight from a label map, without the preprocessing cache (shared by the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vectorpose.data.io import ImageGeometry
from vectorpose.data.preprocessing import PreprocessedVolume

EYE = tuple(tuple(float(v) for v in r) for r in np.eye(4))


def label_volume(folder: Path, name: str, label: np.ndarray) -> PreprocessedVolume:
    """A 1 mm RAS volume whose image and label map are both ``label`` (saved once as ``name.npy``)."""
    np.save(folder / f"{name}.npy", label)
    geometry = ImageGeometry(EYE, label.shape, ("R", "A", "S"), EYE, label.shape, (1.0, 1.0, 1.0))
    return PreprocessedVolume(name, folder / f"{name}.nii.gz", folder / f"{name}.npy", geometry, (0.0, 1.0),
                              label_path=folder / f"{name}.npy", source_label=folder / f"{name}_label.nii.gz",
                              label_values=tuple(np.unique(label).tolist()))
