"""Which backbone a configuration describes: VectorPOSE's own U-Net, MONAI's DynUNet or an nnU-Net v2 network.

All return :class:`~vectorpose.models.backbone.BackboneFeatures` (``decoded`` ``(B, c_0, P, P, P)``
and three coarse feature maps) and all configurations expose ``channels`` (``channels[0]`` is the
width of ``decoded``), ``coarse_channels``, ``size_divisor`` and ``to_json``. Metadata tells them
apart by ``kind``: ``"dynunet"``, ``"nnunet"``, or none for the U-Net.
"""

from __future__ import annotations

from typing import Union

from torch import nn

from .backbone import BackboneConfig, UNetBackbone
from .dynunet_backbone import KIND as DYNUNET, DynUNetBackbone, DynUNetBackboneConfig
from .nnunet_backbone import KIND as NNUNET, NnUNetBackbone, NnUNetBackboneConfig

AnyBackboneConfig = Union[BackboneConfig, DynUNetBackboneConfig, NnUNetBackboneConfig]


def backbone_from_json(d: dict) -> AnyBackboneConfig:
    """The backbone configuration saved by ``to_json``."""
    if not isinstance(d, dict):
        raise TypeError(f"backbone settings must be an object, got {type(d).__name__}")
    if d.get("kind") == NNUNET:
        return NnUNetBackboneConfig.from_json(d)
    if d.get("kind") == DYNUNET:
        return DynUNetBackboneConfig.from_json(d)
    return BackboneConfig.from_json(d)


def build_backbone(config: AnyBackboneConfig) -> nn.Module:
    """The backbone module of ``config``."""
    if isinstance(config, NnUNetBackboneConfig):
        return NnUNetBackbone(config)
    if isinstance(config, DynUNetBackboneConfig):
        return DynUNetBackbone(config)
    return UNetBackbone(config)
