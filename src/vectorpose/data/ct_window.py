"""The CT intensity window a run clips to, given (``LO,HI`` in HU) or derived from the data (``auto``).

``auto`` follows nnU-Net's CT normalisation: the 0.5th and 99.5th percentiles of the labelled
(foreground) voxels of the training scans, so that the organs to segment span the input range
instead of a few percent of a fixed [-1000, 1000] window. Scans without labels (pretraining) use the
voxels above -500 HU instead (the body, not the air around it). Each scan contributes up to
:data:`SAMPLE_PER_SCAN` voxels, drawn with a fixed seed and cached beside the preprocessed arrays, so
the window is the same on every run over the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.files import write_json
from .datasets import Case
from .io import load_image
from .preprocessing import cache_key, cached_entry, check_label_geometry, default_cache_dir, save_array, scan_digest

WINDOW_PERCENTILES = (0.5, 99.5)
BODY_HU = -500.0
SAMPLE_PER_SCAN = 10_000
CT_WINDOW_HELP = ("CT intensity window LO,HI in HU, or auto: the 0.5th and 99.5th percentiles of the labelled voxels of the "
                  "training scans (of the voxels above -500 HU in scans without labels), as nnU-Net's CT normalisation.")


def parse_ct_window(text: str) -> str | tuple[float, float]:
    """``"auto"`` or ``(lo, hi)`` from ``"LO,HI"`` (HU, ``lo < hi``)."""
    value = str(text).strip().lower()
    if value == "auto":
        return value
    try:
        bounds = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"ct window must be auto or LO,HI in HU, got {text!r}") from None
    if len(bounds) != 2 or not all(np.isfinite(bounds)) or not bounds[0] < bounds[1]:
        raise ValueError(f"ct window needs LO,HI with LO < HI, got {text!r}")
    return bounds  # type: ignore[return-value]


def intensity_sample(case: Case, use_label: bool, cache_dir: str | Path | None = None) -> np.ndarray:
    """Up to :data:`SAMPLE_PER_SCAN` raw intensities of ``case``: of its labelled voxels if ``use_label``
    (and it has a label map), else of its voxels above :data:`BODY_HU` (float32, cached)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    labelled = use_label and case.label is not None
    source = scan_digest(case.image, cache_dir) + (scan_digest(case.label, cache_dir) if labelled else "")  # type: ignore[arg-type]
    key = cache_key(source, "foreground sample" if labelled else "body sample", {"n": SAMPLE_PER_SCAN, "body_hu": BODY_HU})
    if cached_entry(cache_dir, key) is not None:
        return np.load(cache_dir / f"{key}.npy")
    image, geometry = load_image(case.image)
    if labelled:
        label, label_geometry = load_image(case.label)  # type: ignore[arg-type]
        check_label_geometry(case, geometry, label_geometry)
        values = image[np.asarray(label) > 0]
    else:
        values = image[image > BODY_HU]
    values = np.asarray(values, dtype=np.float32)
    values = values[np.isfinite(values)]  # preprocessing reports non-finite voxels; they must not decide the window
    if len(values) > SAMPLE_PER_SCAN:
        values = values[np.sort(np.random.default_rng(0).choice(len(values), SAMPLE_PER_SCAN, replace=False))]
    save_array(cache_dir / f"{key}.npy", values)
    write_json(cache_dir / f"{key}.json", {"source": str(case.image), "voxels": int(len(values))})
    return values


def ct_window_from_data(cases: list[Case], use_labels: bool, cache_dir: str | Path | None = None,
                        skip_bad: bool = False) -> tuple[float, float]:
    """The :data:`WINDOW_PERCENTILES` of the pooled samples of ``cases`` (labelled voxels if ``use_labels``);
    with ``skip_bad`` an unreadable scan is left out (preprocessing reports it)."""
    samples = []
    for case in cases:
        try:
            samples.append(intensity_sample(case, use_labels, cache_dir))
        except DataError:
            if not skip_bad:
                raise
    pooled = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if pooled.size == 0:
        raise DataError(cases[0].image.parent if cases else Path("."),
                        "no voxel to derive a CT window from (no labelled voxel, or none above -500 HU); pass --ct-window LO,HI")
    lo, hi = (float(v) for v in np.percentile(pooled, WINDOW_PERCENTILES))
    if not lo < hi:
        raise DataError(cases[0].image.parent, f"the CT window from the data is empty ({lo:g} HU both ends); pass --ct-window LO,HI")
    return lo, hi


def resolve_ct_window(choice: str, modality: str, cases: list[Case], use_labels: bool, cache_dir: str | Path | None = None,
                      skip_bad: bool = False) -> tuple[float, float] | None:
    """The window a CT run clips to (``None`` for other modalities, which do not use one)."""
    if modality != "CT":
        return None
    parsed = parse_ct_window(choice)
    return ct_window_from_data(cases, use_labels, cache_dir, skip_bad) if parsed == "auto" else parsed  # type: ignore[return-value]
