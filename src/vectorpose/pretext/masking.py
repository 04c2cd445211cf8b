"""Block masking for masked image modelling with a convolutional network (the ``mae`` method).

Masked image modelling hides most of an image and trains the network to fill in what was hidden.
Carried over from vision transformers to CNNs (the SparK line of work, and "Revisiting MAE
pre-training for 3D medical image segmentation", which nnU-Net's self-supervised companion follows),
it hides a random subset of the cubic blocks of a regular grid over the patch, and the loss counts
only the hidden voxels. This module is our own implementation of that idea for a dense CNN: no
sparse convolutions, so the hidden blocks have to be filled with something.

Shapes: a patch is ``(P, P, P)``, cut into ``(P / b)^3`` blocks of side ``b`` (``block_size``,
in voxels of the patch, i.e. after the crop is resized to ``P^3``). Exactly
``round(ratio * (P / b)^3)`` blocks are masked, drawn without replacement, so every patch hides
the same number of voxels.

Fill value (our choice): hidden voxels take the mean of the patch's *visible* voxels. Not 0: in the
normalised units a network sees, 0 is the volume's mean intensity for MRI (z-scored) but air for CT
(clipped to [-1000, 1000] HU, scaled to [0, 1]), so zero-filled blocks would look like anatomy in CT.
Not the mean of the whole patch: that would leak the hidden voxels' mean into the input. The mean of
the visible voxels is known to the network anyway, is neutral in both modalities, and is the same
constant over every hidden block of a patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..settings import setting


@dataclass(frozen=True)
class MaskingConfig:
    """Block size (voxels at the patch resolution) and the fraction of blocks hidden."""

    block_size: int = setting(4, "Side of the masked blocks, in voxels of the patch (mae only; must divide --patch).",
                              flag="mask-block")
    ratio: float = setting(0.6, "Fraction of the blocks that are masked (mae only).", flag="mask-ratio")

    def __post_init__(self):
        if self.block_size < 1:
            raise ValueError(f"mask block size must be positive, got {self.block_size!r}")
        # written so that NaN fails too
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {self.ratio!r}")

    def grid(self, patch_size: int) -> int:
        """Blocks per side of a ``patch_size^3`` patch; refuses a block that does not tile the patch or a
        ratio that would hide no block or every block."""
        if patch_size % self.block_size:
            raise ValueError(f"mask block size {self.block_size} must divide the patch size {patch_size}")
        grid = patch_size // self.block_size
        hidden = self.hidden_blocks(grid)
        if not 0 < hidden < grid**3:
            raise ValueError(f"mask ratio {self.ratio} hides {hidden} of the {grid**3} blocks of side {self.block_size} "
                             f"in a patch of {patch_size}; it must hide at least one and leave at least one visible")
        return grid

    def hidden_blocks(self, grid: int) -> int:
        """How many of the ``grid^3`` blocks are masked."""
        return int(round(self.ratio * grid**3))

    def to_json(self) -> dict:
        return {"block_size": self.block_size, "ratio": self.ratio}

    @classmethod
    def from_json(cls, d: dict) -> MaskingConfig:
        return cls(block_size=int(d["block_size"]), ratio=float(d["ratio"]))


def block_mask(patch_size: int, config: MaskingConfig, rng: np.random.Generator) -> np.ndarray:
    """A boolean ``(P, P, P)`` mask, ``True`` where a voxel is hidden; its blocks are drawn from ``rng``."""
    grid = config.grid(patch_size)
    hidden = np.zeros(grid**3, dtype=bool)
    hidden[rng.permutation(grid**3)[: config.hidden_blocks(grid)]] = True
    b = config.block_size
    # each block flag spread over its b^3 voxels: (g, 1, g, 1, g, 1) -> (g, b, g, b, g, b) -> (P, P, P)
    blocks = hidden.reshape(grid, 1, grid, 1, grid, 1)
    return np.broadcast_to(blocks, (grid, b, grid, b, grid, b)).reshape(patch_size, patch_size, patch_size)


def mask_patch(clean: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``clean`` ``(P, P, P)`` with the voxels where ``mask`` is ``True`` set to the mean of the others (a new float32 array)."""
    if clean.shape != mask.shape:
        raise ValueError(f"patch and mask shapes differ: {clean.shape} and {mask.shape}")
    visible = ~mask
    if not visible.any():
        raise ValueError("the mask hides every voxel; nothing is left to fill it from")
    fill = np.float32(clean[visible].mean(dtype=np.float64))
    return np.where(mask, fill, clean).astype(np.float32)
