"""MONAI's ``DynUNet`` (the nnU-Net layout) as a VectorPOSE backbone, so that its weights load into
``monai.networks.nets.DynUNet`` one to one.

Zhang et al. (ISBI 2023) pretrain a 3D U-Net and fine-tune all of it; this backbone is that U-Net in
the form MONAI users train: :class:`DynUNetBackbone` holds a real ``monai.networks.nets.DynUNet``
(under ``net.``) and runs its blocks itself, stopping before the output layer:

- ``input_block`` (stride 1: full resolution), ``downsamples[0 .. n-3]`` and ``bottleneck`` (the
  last stride) go down; ``upsamples[0 .. n-2]`` (transposed convolution, concatenation with the
  skip, two convolutions) come back up, coarsest first;
- ``decoded``: the output of the last up-sampling block, ``(B, c_0, X, Y, Z)``, which is the input of
  DynUNet's ``output_block``;
- ``coarse``: the bottleneck ``(B, c_{n-1}, X/d, Y/d, Z/d)`` (``d`` = product of the strides) and the
  outputs of ``upsamples[0]`` and ``upsamples[1]`` (``c_{n-2}`` and ``c_{n-3}`` channels), which the
  Vector Prediction head pools.

The held DynUNet's ``output_block`` is an identity: the task head (a 1×1×1 convolution,
:class:`~vectorpose.models.heads.VoxelHead`) is the network's last layer, and it has exactly the
shape of DynUNet's ``output_block.conv.conv``, so a fine-tuned segmentation network maps onto a
complete DynUNet (:mod:`vectorpose.export.monai`). DynUNet reaches its blocks a second time through
``skip_layers``; the state dict keeps each tensor once (:mod:`~vectorpose.models.shared_tensors`).

Channels, kernels and strides are one number per level (isotropic), with ``strides[0] = 1`` as in
every nnU-Net plan; :meth:`DynUNetBackboneConfig.for_patch` derives them from a cubic patch as
nnU-Net's planner would. Inputs ``(B, C_in, X, Y, Z)`` need every spatial size divisible by ``d``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import DynUNet
from torch import nn

from .backbone import BackboneFeatures, check_levels
from .shared_tensors import store_each_tensor_once

KIND = "dynunet"
MONAI_CLASS = "monai.networks.nets.DynUNet"
# nnU-Net's planner stops halving a patch before a feature map edge drops below this
MIN_FEATURE_MAP_EDGE = 4
# DynUNet's argument for each norm setting: nnU-Net's instance norm has learned affine parameters
NORM_ARGS = {"instance": ["INSTANCE", {"affine": True}], "batch": ["BATCH", {"affine": True}]}
ACTIVATION_ARGS = ["leakyrelu", {"inplace": True, "negative_slope": 0.01}]


@dataclass(frozen=True)
class DynUNetBackboneConfig:
    """Architecture of the DynUNet; travels inside every model's metadata (``kind: "dynunet"``).

    ``channels[i]``, ``kernel_sizes[i]`` and ``strides[i]`` are level ``i``'s width, kernel and the
    stride of the block that enters it; ``strides[0]`` must be 1 (the input block keeps full
    resolution). ``res_block``: residual blocks (DynUNet's ``UnetResBlock``) instead of plain ones.
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    kernel_sizes: tuple[int, ...] | None = None
    in_channels: int = 1
    res_block: bool = False
    norm: str = "instance"
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        kernels = (3,) * len(self.channels) if self.kernel_sizes is None else self.kernel_sizes
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in kernels))
        check_levels(self.in_channels, self.channels)
        for name in ("strides", "kernel_sizes"):
            if len(getattr(self, name)) != len(self.channels):
                raise ValueError(f"{name} needs one entry per level ({len(self.channels)}), got {getattr(self, name)}")
        if self.strides[0] != 1:
            raise ValueError(f"the first stride must be 1 (full resolution for the voxel head), got strides {self.strides}")
        # nnU-Net's strides; DynUNet's padding rule (and its residual 1x1x1 shortcut) allows no more than 2
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides must be 1 or 2, got {self.strides}")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd and positive, got {self.kernel_sizes}")
        if not isinstance(self.res_block, bool):
            raise ValueError(f"res_block must be true or false, got {self.res_block!r}")
        if self.norm not in NORM_ARGS:
            raise ValueError(f"norm must be one of {', '.join(NORM_ARGS)}, got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @classmethod
    def halving_per_level(cls, channels: tuple[int, ...], **kwargs) -> DynUNetBackboneConfig:
        """nnU-Net's layout for the widths ``channels`` (finest first): stride 1 at full resolution,
        then a halving into every other level."""
        return cls(channels=tuple(channels), strides=(1,) + (2,) * (len(channels) - 1), **kwargs)

    @classmethod
    def for_patch(cls, patch: int, channels: tuple[int, ...], **kwargs) -> DynUNetBackboneConfig:
        """The layout nnU-Net's planner gives a cube of side ``patch``: 3×3×3 kernels, stride 1 at full
        resolution, then as many halvings as keep every feature map edge an integer of at least
        ``MIN_FEATURE_MAP_EDGE``, at most ``len(channels) - 1``; ``channels`` gives the widths of the
        levels used, finest first."""
        if patch < 1 or not channels:
            raise ValueError(f"need a positive patch side and channels, got {patch} and {channels}")
        halvings = 0
        while (halvings < len(channels) - 1 and patch % 2 ** (halvings + 1) == 0
               and patch // 2 ** (halvings + 1) >= MIN_FEATURE_MAP_EDGE):
            halvings += 1
        if halvings < 2:
            raise ValueError(f"patch {patch} allows {halvings} halving(s) to feature maps of side >= {MIN_FEATURE_MAP_EDGE}; "
                             f"the dynunet backbone needs 2 (a patch divisible by 4, at least 16)")
        return cls.halving_per_level(channels[: halvings + 1], **kwargs)

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return math.prod(self.strides)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each up-sampling output, coarse to fine (``BackboneFeatures.levels``)."""
        return tuple(reversed(self.channels[:-1]))

    @property
    def coarse_channels(self) -> tuple[int, int, int]:
        """Channels of the bottleneck and the two coarsest up-sampling outputs (the vector head's input)."""
        return self.channels[-1], self.channels[-2], self.channels[-3]

    def monai_args(self, out_channels: int) -> dict:
        """Keyword arguments of ``monai.networks.nets.DynUNet`` for this layout, as JSON values."""
        return {
            "spatial_dims": 3,
            "in_channels": self.in_channels,
            "out_channels": out_channels,
            "kernel_size": list(self.kernel_sizes),
            "strides": list(self.strides),
            "upsample_kernel_size": list(self.strides[1:]),
            "filters": list(self.channels),
            "dropout": self.dropout or None,
            "norm_name": NORM_ARGS[self.norm],
            "act_name": ACTIVATION_ARGS,
            "deep_supervision": False,
            "res_block": self.res_block,
            "trans_bias": False,
        }

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("channels", "strides", "kernel_sizes"):
            d[key] = list(d[key])
        return {"kind": KIND, **d}

    @classmethod
    def from_json(cls, d: dict) -> DynUNetBackboneConfig:
        d = dict(d)
        if d.pop("kind", KIND) != KIND:
            raise ValueError("not a dynunet backbone")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


class DynUNetBackbone(nn.Module):
    """MONAI's DynUNet without its output layer, returning
    :class:`~vectorpose.models.backbone.BackboneFeatures`; see the module docstring for shapes."""

    def __init__(self, config: DynUNetBackboneConfig):
        super().__init__()
        self.config = config
        self.net = DynUNet(**config.monai_args(out_channels=1))
        # the task head is the last layer; DynUNet's own forward (through skip_layers) then also ends at `decoded`
        self.net.output_block = nn.Identity()
        store_each_tensor_once(self)

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        div = self.config.size_divisor
        if x.ndim != 5 or any(n % div for n in x.shape[2:]):
            raise ValueError(f"input must be (B, C, X, Y, Z) with spatial sizes divisible by {div}, got {tuple(x.shape)}")
        net = self.net
        skips = [net.input_block(x)]
        for block in net.downsamples:
            skips.append(block(skips[-1]))
        x = net.bottleneck(skips[-1])
        levels = [x]
        for block, skip in zip(net.upsamples, reversed(skips)):
            x = block(x, skip)
            levels.append(x)
        return BackboneFeatures(decoded=x, coarse=(levels[0], levels[1], levels[2]), levels=tuple(levels[1:]))

    def encoder_parameter_names(self) -> list[str]:
        """Names (in ``state_dict``) of the input block, down-sampling blocks and bottleneck tensors."""
        return [k for k in self.state_dict() if k.startswith(("net.input_block.", "net.downsamples.", "net.bottleneck."))]
