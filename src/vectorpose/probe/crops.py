"""Clean probe crops with known geometry, and their labels (position, scale, orientation, "up").

The paper's claim (Zhang et al., "A Point in the Right Direction", ISBI 2023) is that Vector Prediction
teaches the encoder *where a crop is, how big it is and which way is up*. A linear probe measures that
head on, and needs crops whose answers are known. They are drawn exactly as the pretext task draws its
crops (:func:`~vectorpose.pretext.crop_geometry.sample_crop_geometry`,
:func:`~vectorpose.pretext.crop_geometry.extract_crop`, :func:`~vectorpose.pretext.orientation.sample_orientation`)
but left clean (no corruption), in the normalised intensity units the network saw.

Two sets per case, each of ``n`` crops of the network's patch side ``P``:

- *canonical* crops (identity orientation), labelled with the crop centre divided by the volume
  shape per axis (``(n, 3)``, in ``[0, 1]``) and the drawn scale ``s`` (``(n,)``);
- *re-oriented* crops (a pretext flip/rotation each), labelled with the orientation's index among
  the 48 signed axis permutations (:data:`ORIENTATIONS`, chance 1/48) and with "up": which of the 6
  signed patch axes the volume's longitudinal axis (array axis 2, +z) points along after
  re-orientation (:data:`UP_NAMES`, chance 1/6).

Patches are float32 tensors of shape ``(n, 1, P, P, P)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..pretext.crop_geometry import extract_crop, sample_crop_geometry
from ..pretext.orientation import Orientation, sample_orientation

# every signed axis permutation of the cube, in a fixed order: permutations outer, flips inner
ORIENTATIONS: tuple[Orientation, ...] = tuple(
    Orientation(perm, flip) for perm in itertools.permutations((0, 1, 2)) for flip in itertools.product((False, True), repeat=3)
)
_INDEX = {(o.perm, o.flip): i for i, o in enumerate(ORIENTATIONS)}
# "up" classes: class 2*d (+patch axis d) and 2*d + 1 (-patch axis d)
UP_NAMES: tuple[str, ...] = ("+x", "-x", "+y", "-y", "+z", "-z")


def orientation_index(orientation: Orientation) -> int:
    """Index of ``orientation`` in :data:`ORIENTATIONS` (0..47)."""
    return _INDEX[(orientation.perm, orientation.flip)]


def up_label(orientation: Orientation) -> int:
    """Which signed patch axis the volume's +z (array axis 2) becomes after ``orientation``.

    Output axis ``d`` holds input axis ``perm[d]`` (reversed when ``flip[d]``), so +z lands on the
    ``d`` with ``perm[d] == 2``, pointing the negative way when that axis is flipped. Returns
    ``2 * d + flip[d]``, an index into :data:`UP_NAMES`.
    """
    d = orientation.perm.index(2)
    return 2 * d + int(orientation.flip[d])


@dataclass(frozen=True)
class ProbeCrops:
    """The crops of one or more cases; ``n`` rows, ``P`` the patch side.

    canonical: ``(n, 1, P, P, P)`` identity-oriented crops; position ``(n, 3)``; scale ``(n,)``.
    oriented: ``(n, 1, P, P, P)`` re-oriented crops; orientation ``(n,)`` in 0..47; up ``(n,)`` in 0..5.
    case: ``(n,)`` the case id of each row (the same for both sets).
    """

    canonical: torch.Tensor
    position: np.ndarray
    scale: np.ndarray
    oriented: torch.Tensor
    orientation: np.ndarray
    up: np.ndarray
    case: np.ndarray

    def __len__(self) -> int:
        return len(self.case)

    @staticmethod
    def concatenate(parts: list[ProbeCrops]) -> ProbeCrops:
        if not parts:
            raise ValueError("no crops to concatenate")
        return ProbeCrops(
            canonical=torch.cat([p.canonical for p in parts]), position=np.concatenate([p.position for p in parts]),
            scale=np.concatenate([p.scale for p in parts]), oriented=torch.cat([p.oriented for p in parts]),
            orientation=np.concatenate([p.orientation for p in parts]), up=np.concatenate([p.up for p in parts]),
            case=np.concatenate([p.case for p in parts]),
        )


def draw_case_crops(volume: np.ndarray, intensity_range: tuple[float, float], case_id: str, n: int, patch_size: int,
                    scale_range: tuple[float, float], rng: np.random.Generator) -> ProbeCrops:
    """Draw ``n`` canonical and ``n`` re-oriented clean crops of one normalised RAS+ volume ``(X, Y, Z)``.

    Crops sticking out of the volume are padded with its minimum, as in pretraining. Both sets use
    independent draws of :func:`sample_crop_geometry`; the re-oriented set adds :func:`sample_orientation`
    (each of the cube's 48 symmetries with probability 1/48).
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    pad = float(intensity_range[0])
    shape = np.asarray(volume.shape, dtype=np.float64)
    canonical, position, scale = [], [], []
    for _ in range(n):
        g = sample_crop_geometry(volume.shape, patch_size, rng, scale_range)
        canonical.append(extract_crop(volume, g, pad_value=pad))
        position.append(g.centre / shape)
        scale.append(g.scale)
    oriented, orientation, up = [], [], []
    for _ in range(n):
        g = sample_crop_geometry(volume.shape, patch_size, rng, scale_range)
        o = sample_orientation(rng)
        oriented.append(o.apply_to_patch(extract_crop(volume, g, pad_value=pad)).contiguous())
        orientation.append(orientation_index(o))
        up.append(up_label(o))
    return ProbeCrops(
        canonical=torch.stack(canonical), position=np.asarray(position), scale=np.asarray(scale),
        oriented=torch.stack(oriented), orientation=np.asarray(orientation, dtype=np.int64), up=np.asarray(up, dtype=np.int64),
        case=np.asarray([case_id] * n, dtype=object),
    )
