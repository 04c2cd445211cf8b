"""Reconstruction error on the hidden voxels only, the loss of masked image modelling.

As in masked autoencoders and their CNN versions (SparK; "Revisiting MAE pre-training for 3D medical
image segmentation"), only what the network could not see is scored: restoring visible voxels is a
copy, and counting it would reward the identity map.
"""

from __future__ import annotations

import torch


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the voxels where ``mask`` is true, pooled over the batch.

    ``prediction``, ``target`` and ``mask`` (bool) share one shape, e.g. ``(B, 1, P, P, P)``; the
    result is a scalar. Computed in float32, also under bf16 autocast. An empty mask gives NaN (not
    checked here, which would make the GPU wait every step; the sampler always hides at least one
    block, see :meth:`~vectorpose.pretext.masking.MaskingConfig.grid`).
    """
    if not prediction.shape == target.shape == mask.shape:
        raise ValueError(f"prediction, target and mask must share a shape, got {tuple(prediction.shape)}, "
                         f"{tuple(target.shape)} and {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be boolean, got {mask.dtype}")
    squared = (prediction.float() - target.float()).square()
    # where(), not a product with the mask: a NaN or inf at a visible voxel must not reach the loss
    return torch.where(mask, squared, squared.new_zeros(())).sum() / mask.sum()
