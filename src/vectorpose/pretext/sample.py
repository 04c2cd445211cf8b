"""One pretext training sample: crop, re-orient, corrupt, and the targets of both tasks.

Pipeline (VectorPOSE, Zhang et al., ISBI 2023): draw a crop geometry, cut and resize the crop to
``P^3``, draw a flip/rotation and apply it to the patch and the vectors together, map the clean
patch to ``[0, 1]`` with the volume's own intensity range, corrupt it (Models Genesis family), and
map the corrupted patch back to the normalised intensity units that fine-tuning and inference use,
so the network sees one input distribution across all stages. The boundary target is computed later
on the whole batch, on the training device (:func:`~vectorpose.pretext.boundary.boundary_target`).

With ``masking`` (masked image modelling, :mod:`~vectorpose.pretext.masking`) the same crop and
orientation are drawn, and random blocks are hidden instead of corrupting the patch: for one seed,
every method then trains on the same crops and differs only in what it does to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..settings import setting
from .corruption import CorruptionConfig, corrupt
from .crop_geometry import CropGeometry, extract_crop, sample_crop_geometry
from .masking import MaskingConfig, block_mask, mask_patch
from .orientation import Orientation, sample_orientation
from .vectors import vector_targets


@dataclass(frozen=True)
class PretextConfig:
    """Sampling and augmentation settings of the pretext tasks."""

    patch_size: int = setting(32, "Patch side P (crops are resized to P^3).", flag="patch")
    scale_range: tuple[float, float] = setting((0.5, 1.5), "Crop scale range s_min,s_max.")
    flip_prob: float = setting(0.5, "Probability of flipping each axis of a crop.")
    rotate: bool = setting(True, "Turn each crop by one of the cube's 24 rotations.")
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)

    def __post_init__(self):
        if self.patch_size < 4:
            raise ValueError(f"patch_size must be at least 4, got {self.patch_size}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {self.scale_range}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must lie in [0, 1], got {self.flip_prob}")

    def to_json(self) -> dict:
        return {
            "patch_size": self.patch_size,
            "scale_range": list(self.scale_range),
            "flip_prob": self.flip_prob,
            "rotate": self.rotate,
            "corruption": dict(vars(self.corruption)),
        }

    @classmethod
    def from_json(cls, d: dict) -> PretextConfig:
        return cls(
            patch_size=int(d["patch_size"]),
            scale_range=tuple(float(v) for v in d["scale_range"]),  # type: ignore[arg-type]
            flip_prob=float(d["flip_prob"]),
            rotate=bool(d["rotate"]),
            corruption=CorruptionConfig(**d["corruption"]),
        )


@dataclass(frozen=True)
class PretextSample:
    """Tensors of one sample (``P`` = patch side) and the geometry they came from.

    input: ``(1, P, P, P)`` corrupted (or block-masked) patch in normalised intensity units (the network input).
    clean: ``(1, P, P, P)`` re-oriented clean patch in ``[0, 1]`` (the restoration target).
    vectors: ``(9, 3)`` encoded vector targets.
    mask: ``(1, P, P, P)`` bool, ``True`` where a voxel was hidden; ``None`` for a corrupted patch.
    """

    input: torch.Tensor
    clean: torch.Tensor
    vectors: torch.Tensor
    geometry: CropGeometry
    orientation: Orientation
    mask: torch.Tensor | None = None


def make_pretext_sample(
    volume: np.ndarray,
    intensity_range: tuple[float, float],
    rng: np.random.Generator,
    config: PretextConfig = PretextConfig(),
    masking: MaskingConfig | None = None,
) -> PretextSample:
    """Draw one sample from a normalised RAS+ volume of shape ``(X, Y, Z)``.

    ``intensity_range`` is the volume's ``(min, max)``: ``min`` is the background that pads crops
    sticking out of the volume, and the range maps intensities to ``[0, 1]`` for the corruptions.
    With ``masking`` the patch is block-masked instead of corrupted (``config.corruption`` is unused).
    """
    vmin, vmax = intensity_range
    if not vmax > vmin:
        raise ValueError(f"intensity_range must satisfy min < max, got {intensity_range}")
    geometry = sample_crop_geometry(volume.shape, config.patch_size, rng, config.scale_range)
    orientation = sample_orientation(rng, config.flip_prob, config.rotate)
    crop = extract_crop(volume, geometry, pad_value=vmin)[0]
    clean = orientation.apply_to_patch(((crop - vmin) / (vmax - vmin)).clamp_(0.0, 1.0)).contiguous()
    if masking is None:
        mask = None
        changed = corrupt(clean.numpy(), rng, config.corruption)
    else:
        mask = block_mask(config.patch_size, masking, rng)
        changed = mask_patch(clean.numpy(), mask)
    network_input = torch.from_numpy(changed) * (vmax - vmin) + vmin
    return PretextSample(
        input=network_input[None].float(),
        clean=clean[None],
        vectors=torch.from_numpy(vector_targets(geometry, orientation)),
        geometry=geometry,
        orientation=orientation,
        mask=None if mask is None else torch.from_numpy(mask.copy())[None],
    )
