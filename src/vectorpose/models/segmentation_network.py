"""The segmentation network: the pretrained backbone plus a 1×1×1 output layer of class logits."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import AnyBackboneConfig, build_backbone
from .heads import VoxelHead


class SegmentationNetwork(nn.Module):
    """``forward(x)``: ``(B, C_in, X, Y, Z)`` -> logits ``(B, num_classes, X, Y, Z)``.

    Its ``backbone.*`` tensors have the same names and shapes as a
    :class:`~vectorpose.models.pretext_network.PretextNetwork`'s of the same backbone (VectorPOSE's
    U-Net or MONAI's DynUNet, see :mod:`~vectorpose.models.backbones`), so pretrained weights transfer
    one to one; ``head.*`` is always new.
    """

    def __init__(self, backbone: AnyBackboneConfig, num_classes: int):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and at least one structure), got {num_classes}")
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone)
        self.head = VoxelHead(backbone.channels[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).decoded)
