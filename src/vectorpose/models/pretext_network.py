"""The pretraining network: backbone plus the heads a pretext method needs."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import AnyBackboneConfig, build_backbone
from .heads import VectorHead, VoxelHead


class PretextNetwork(nn.Module):
    """Backbone (VectorPOSE's U-Net or an nnU-Net network, see :mod:`~vectorpose.models.backbones`) + optional Vector Prediction head + optional voxel head (restoration, boundary).

    ``forward(x)`` with ``x`` of shape ``(B, C_in, P, P, P)`` returns a dict with ``"vectors"``
    ``(B, 9, 3)`` when ``vector_head``, ``"restored"`` ``(B, 1, P, P, P)`` in ``[0, 1]`` when
    ``restoration``, and ``"boundary"`` ``(B, 1, P, P, P)`` in ``[0, 1]`` when ``boundary``.
    """

    def __init__(self, backbone: AnyBackboneConfig, vector_head: bool, restoration: bool, boundary: bool):
        super().__init__()
        if boundary and not restoration:
            raise ValueError("boundary=True needs restoration=True: both come from the same voxel head")
        if not (vector_head or restoration):
            raise ValueError("a pretext network needs at least one head")
        self.backbone = build_backbone(backbone)
        self.vector_head = VectorHead(sum(backbone.coarse_channels)) if vector_head else None
        self.boundary = boundary
        self.voxel_head = VoxelHead(backbone.channels[0], 2 if boundary else 1) if restoration else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        out: dict[str, torch.Tensor] = {}
        if self.vector_head is not None:
            out["vectors"] = self.vector_head(features.coarse)
        if self.voxel_head is not None:
            maps = torch.sigmoid(self.voxel_head(features.decoded))
            out["restored"] = maps[:, :1]
            if self.boundary:
                out["boundary"] = maps[:, 1:2]
        return out
