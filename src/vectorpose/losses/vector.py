"""Vector Prediction loss with a wrap-around azimuth term (Zhang et al., ISBI 2023, section 2).

L1 on ``r̂`` and on ``θ̂``, and for the azimuth ``φ̂`` (in ``(-1, 1]``, i.e. ``φ/π``) the L1 distance
on the circle: ``min(|p - t|, |p - (t + 2)|, |p - (t - 2)|)``, so that ``φ = π`` and ``φ = -π``,
the same direction, cost nothing.
"""

from __future__ import annotations

import torch


def circular_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise distance on a circle of circumference 2 (values ``φ/π``), any matching shapes."""
    d = (pred - target).abs()
    return torch.minimum(d, torch.minimum((pred - target - 2.0).abs(), (pred - target + 2.0).abs()))


def vector_loss(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-term means over batch and the 9 vectors; ``pred`` and ``target`` of shape ``(B, 9, 3)``.

    Returns ``{"r": ..., "theta": ..., "phi": ..., "total": r + theta + phi}``.
    """
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and target must share a shape (..., 3), got {tuple(pred.shape)} and {tuple(target.shape)}")
    r = (pred[..., 0] - target[..., 0]).abs().mean()
    theta = (pred[..., 1] - target[..., 1]).abs().mean()
    phi = circular_l1(pred[..., 2], target[..., 2]).mean()
    return {"r": r, "theta": theta, "phi": phi, "total": r + theta + phi}
