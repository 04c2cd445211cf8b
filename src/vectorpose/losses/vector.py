"""Vector Prediction loss with a wrap-around azimuth term (Zhang et al., ISBI 2023, section 2).

L1 on ``r̂`` and on ``θ̂``, and for the azimuth ``φ̂`` (in ``(-1, 1]``, i.e. ``φ/π``) the L1 distance
on the circle: ``min(|p - t|, |p - (t + 2)|, |p - (t - 2)|)``, so that ``φ = π`` and ``φ = -π``,
the same direction, cost nothing. The azimuth of a vector along the polar axis is undefined, and
close to it a sub-voxel shift turns it by up to 180°: the ``φ̂`` term counts only vectors with
``sin θ >= AZIMUTH_MIN_SIN`` (read from the target), and averages over those.
"""

from __future__ import annotations

import math

import torch

# sin(theta) below this (within about 3° of the polar axis) leaves the azimuth out of the loss
AZIMUTH_MIN_SIN = 0.05


def circular_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise distance on a circle of circumference 2 (values ``φ/π``), any matching shapes."""
    d = (pred - target).abs()
    return torch.minimum(d, torch.minimum((pred - target - 2.0).abs(), (pred - target + 2.0).abs()))


def azimuth_defined(target: torch.Tensor) -> torch.Tensor:
    """Boolean mask, shape ``(...)``, of targets ``(..., 3)`` whose azimuth enters the loss."""
    return torch.sin(target[..., 1] * math.pi) >= AZIMUTH_MIN_SIN


def vector_loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-term means over batch and the 9 vectors; ``pred`` and ``target`` of shape ``(B, 9, 3)``.

    Returns ``{"r": ..., "theta": ..., "phi": ..., "total": r + theta + phi}``; ``phi`` is the mean
    over the vectors whose azimuth is defined (0 when there is none).
    """
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and target must share a shape (..., 3), got {tuple(pred.shape)} and {tuple(target.shape)}")
    r = (pred[..., 0] - target[..., 0]).abs().mean()
    theta = (pred[..., 1] - target[..., 1]).abs().mean()
    defined = azimuth_defined(target).to(pred.dtype)
    phi = (circular_l1(pred[..., 2], target[..., 2]) * defined).sum() / defined.sum().clamp(min=1.0)
    return {"r": r, "theta": theta, "phi": phi, "total": r + theta + phi}
