"""Exact flips and 90° rotations of a patch together with its vectors (VectorPOSE, section 2).

Every composition of axis flips and 90° rotations of a cube is a *signed axis permutation*: output
axis ``d`` is input axis ``perm[d]``, reversed when ``flip[d]``. Holding the augmentation in that
form makes applying it to an image (a transpose and flips, no resampling), to a displacement vector
(``w[d] = ±v[perm[d]]``) and to the crop's 2×2×2 grid of corners the same, exactly invertible
operation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Orientation:
    """A signed axis permutation of the three spatial axes.

    Applied to an array ``a`` of spatial shape ``(X, Y, Z)``: ``out = flip(transpose(a, perm))`` over
    the output axes ``d`` with ``flip[d]``.
    """

    perm: tuple[int, int, int] = (0, 1, 2)
    flip: tuple[bool, bool, bool] = (False, False, False)

    def __post_init__(self):
        if sorted(self.perm) != [0, 1, 2]:
            raise ValueError(f"perm must be a permutation of (0, 1, 2), got {self.perm}")
        if len(self.flip) != 3:
            raise ValueError(f"flip must have three entries, got {self.flip}")
        object.__setattr__(self, "perm", tuple(int(p) for p in self.perm))
        object.__setattr__(self, "flip", tuple(bool(f) for f in self.flip))

    @property
    def matrix(self) -> np.ndarray:
        """3×3 signed permutation ``M`` with ``w = M @ v`` for a displacement vector ``v``."""
        m = np.zeros((3, 3))
        for d in range(3):
            m[d, self.perm[d]] = -1.0 if self.flip[d] else 1.0
        return m

    def then(self, other: Orientation) -> Orientation:
        """The orientation that applies ``self`` first, then ``other``."""
        perm = tuple(self.perm[other.perm[d]] for d in range(3))
        flip = tuple(self.flip[other.perm[d]] ^ other.flip[d] for d in range(3))
        return Orientation(perm, flip)  # type: ignore[arg-type]

    def inverse(self) -> Orientation:
        perm = [0, 0, 0]
        flip = [False, False, False]
        for d in range(3):
            perm[self.perm[d]] = d
            flip[self.perm[d]] = self.flip[d]
        return Orientation(tuple(perm), tuple(flip))  # type: ignore[arg-type]

    def apply_to_patch(self, patch: Array) -> Array:
        """Re-orient the last three (spatial) axes of ``patch`` (shape ``(..., X, Y, Z)``)."""
        lead = patch.ndim - 3
        axes = tuple(range(lead)) + tuple(lead + p for p in self.perm)
        flips = tuple(lead + d for d in range(3) if self.flip[d])
        if isinstance(patch, torch.Tensor):
            out = patch.permute(axes)
            return out.flip(flips) if flips else out
        out = np.transpose(patch, axes)
        return np.flip(out, flips) if flips else out

    def apply_to_vectors(self, vectors: Array) -> Array:
        """Express displacement vectors (shape ``(..., 3)``) in the re-oriented frame."""
        sign = [-1.0 if f else 1.0 for f in self.flip]
        if isinstance(vectors, torch.Tensor):
            return vectors[..., list(self.perm)] * vectors.new_tensor(sign)
        return vectors[..., list(self.perm)] * np.asarray(sign)


IDENTITY = Orientation()


def flip_orientation(axis: int) -> Orientation:
    """Reverse one spatial axis (``np.flip(a, axis)``)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    return Orientation((0, 1, 2), tuple(d == axis for d in range(3)))  # type: ignore[arg-type]


def rot90_orientation(k: int, axes: tuple[int, int]) -> Orientation:
    """Rotate by ``k`` quarter turns in the plane ``axes``, exactly as ``np.rot90(a, k, axes)``."""
    a0, a1 = axes
    if a0 == a1 or {a0, a1} - {0, 1, 2}:
        raise ValueError(f"axes must be two different spatial axes, got {axes}")
    perm = [0, 1, 2]
    perm[a0], perm[a1] = a1, a0
    # np.rot90 with k = 1 flips axis a1, then swaps a0 and a1
    quarter = flip_orientation(a1).then(Orientation(tuple(perm), (False, False, False)))  # type: ignore[arg-type]
    out = IDENTITY
    for _ in range(k % 4):
        out = out.then(quarter)
    return out


# One quarter-turn rotation (turns, plane) per face of the cube that axis 0 can be turned onto.
FACE_TURNS: tuple[tuple[int, tuple[int, int]], ...] = (
    (0, (0, 1)), (1, (0, 1)), (2, (0, 1)), (3, (0, 1)), (1, (0, 2)), (3, (0, 2)),
)


def sample_orientation(rng: np.random.Generator, flip_prob: float = 0.5, rotate: bool = True) -> Orientation:
    """Flip each axis with ``flip_prob``, then apply one of the cube's 24 rotations, drawn uniformly.

    A rotation is a spin of ``0..3`` quarter turns about axis 0 followed by one of the 6
    :data:`FACE_TURNS`; each rotation has exactly one such form, so each is drawn with probability
    1/24, and with ``flip_prob`` 0.5 each of the 48 symmetries with probability 1/48. The paper's code
    rotates by 90° or 270° only; using every symmetry is our choice.
    """
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob}")
    out = IDENTITY
    for axis in range(3):
        if rng.random() < flip_prob:
            out = out.then(flip_orientation(axis))
    if rotate:
        spin = int(rng.integers(4))
        turns, plane = FACE_TURNS[int(rng.integers(len(FACE_TURNS)))]
        out = out.then(rot90_orientation(spin, (1, 2))).then(rot90_orientation(turns, plane))
    return out
