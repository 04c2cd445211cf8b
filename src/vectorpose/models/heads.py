"""Task heads on top of :class:`~vectorpose.models.backbone.UNetBackbone` (Zhang et al., ISBI 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..pretext.vectors import NUM_POINTS


class VectorHead(nn.Module):
    """Vector Prediction head: pooled coarse features -> 9 vectors as ``(r̂, θ̂, φ̂)``.

    Average-pools the bottleneck and the two coarsest decoder levels (``in_channels`` channels in
    all) to a ``grid³`` layout each, concatenates them (``in_channels * grid³`` features), and runs
    dropout → linear → norm → ReLU → linear → norm → ReLU → linear to 27 numbers. Outputs
    ``(B, 9, 3)``: sigmoid for ``r̂`` and ``θ̂`` (in ``[0, 1]``), tanh for ``φ̂`` (in ``[-1, 1]``).

    Our choices: the paper pools globally (``grid = 1``). Behind instance norm the global mean of a
    feature map says little, and a global mean is blind to where in the patch a feature lies, which
    is what the orientation-dependent targets need; ``grid = 2`` keeps which octant each feature
    came from. LayerNorm behaves the same at any batch size.
    """

    def __init__(self, in_channels: int, hidden: int = 256, dropout: float = 0.2, grid: int = 2):
        super().__init__()
        if in_channels < 1 or hidden < 1 or grid < 1:
            raise ValueError(f"in_channels, hidden and grid must be positive, got {in_channels}, {hidden}, {grid}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.grid = grid
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_channels * grid**3, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, NUM_POINTS * 3),
        )

    def forward(self, coarse: tuple[torch.Tensor, ...]) -> torch.Tensor:
        pooled = torch.cat([F.adaptive_avg_pool3d(f, self.grid).flatten(1) for f in coarse], dim=1)
        raw = self.mlp(pooled).view(-1, NUM_POINTS, 3)
        return torch.cat([torch.sigmoid(raw[..., :2]), torch.tanh(raw[..., 2:])], dim=-1)


class VoxelHead(nn.Module):
    """A 1×1×1 convolution from the decoder's full-resolution features to ``out_channels`` maps.

    Used with a sigmoid for restoration (restored crop, boundary map) and as raw logits for
    segmentation; it is the one layer that never transfers between tasks.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.conv(decoded)
