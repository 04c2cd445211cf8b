"""The segmentation network: the pretrained backbone plus a 1×1×1 output layer of class logits, and
optionally deep supervision (nnU-Net; Isensee et al., Nature Methods 2021): one more 1×1×1 output layer
on each decoder level below full resolution but the coarsest (nnU-Net's rule), whose losses train the
decoder's coarse levels directly."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import AnyBackboneConfig, build_backbone
from .heads import VoxelHead

DEEP_HEADS = "deep_heads."


class SegmentationNetwork(nn.Module):
    """``forward(x)``: ``(B, C_in, X, Y, Z)`` -> logits ``(B, num_classes, X, Y, Z)``;
    ``forward_levels(x)``: those logits, then with ``deep_supervision`` those of each decoder level
    below full resolution but the coarsest, fine to coarse (``(B, num_classes, X / 2^k, ...)`` on the
    strided axes for the k-th).

    Its ``backbone.*`` tensors have the same names and shapes as a
    :class:`~vectorpose.models.pretext_network.PretextNetwork`'s of the same backbone (VectorPOSE's
    U-Net or MONAI's DynUNet, see :mod:`~vectorpose.models.backbones`), so pretrained weights transfer
    one to one; ``head.*`` and ``deep_heads.*`` are always new, and ``deep_heads.*`` serve training
    only (model files leave them out: :func:`inference_state`).
    """

    def __init__(self, backbone: AnyBackboneConfig, num_classes: int, deep_supervision: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and at least one structure), got {num_classes}")
        levels = backbone.level_channels
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone)
        self.head = VoxelHead(backbone.channels[0], num_classes)
        supervised = max(0, len(levels) - 2) if deep_supervision else 0
        self.deep_heads = nn.ModuleList(VoxelHead(levels[-2 - k], num_classes) for k in range(supervised))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).decoded)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(x)
        return [self.head(features.decoded)] + [head(features.levels[-2 - k]) for k, head in enumerate(self.deep_heads)]


def inference_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the deep-supervision layers, which inference never uses."""
    return {k: v for k, v in state.items() if not k.startswith(DEEP_HEADS)}
