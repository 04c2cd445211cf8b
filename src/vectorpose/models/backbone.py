"""A 3D residual U-Net built from MONAI blocks, with its encoder and decoder features reachable.

The layout follows MONAI's ``UNet`` (residual units, strided convolutions down, transposed
convolutions up, the first unit already strided so no convolution runs at full resolution before
the last decoder level; this keeps it fast on a CPU). The last decoder level is a transposed
convolution alone: a residual unit there would run at full resolution, where it costs the most
(``benchmarks/backbone_speed.py`` measures both layouts). Unlike MONAI's recursive ``UNet`` it names its
parts ``encoder.*``, ``bottleneck.*`` and ``decoder.*`` and returns the coarse features that the
Vector Prediction head pools, and it leaves the final 1×1×1 output layer to the task head, so that
pretrained weights transfer one to one into the segmentation network (Zhang et al., ISBI 2023).

Shapes, for ``channels = (c_0 .. c_n)`` and ``strides = (s_0 .. s_{n-1})``: input ``(B, C_in, X, Y, Z)``
with every spatial size divisible by ``prod(strides)``; output ``decoded`` ``(B, c_0, X, Y, Z)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn


def check_levels(in_channels: int, channels: tuple[int, ...]) -> None:
    """The checks every backbone's config makes of its input channels and per-level widths."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if len(channels) < 3:
        raise ValueError(f"channels needs at least 3 levels (for the vector head), got {channels}")
    if any(c < 1 for c in channels):
        raise ValueError(f"channels must be positive, got {channels}")


@dataclass(frozen=True)
class BackboneConfig:
    """Architecture of the U-Net; travels inside every model's metadata.

    ``strides`` ``None`` means 2 between every two levels: ``(2,) * (len(channels) - 1)``.
    """

    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] | None = None
    num_res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        strides = (2,) * (len(self.channels) - 1) if self.strides is None else self.strides
        object.__setattr__(self, "strides", tuple(int(s) for s in strides))
        check_levels(self.in_channels, self.channels)
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"strides needs len(channels) - 1 = {len(self.channels) - 1} entries, got {self.strides}")
        if any(s < 1 for s in self.strides):
            raise ValueError(f"strides must be positive, got {self.strides}")
        if self.num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {self.num_res_units}")
        if self.norm not in ("instance", "batch"):
            raise ValueError(f"norm must be 'instance' or 'batch', got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return math.prod(self.strides)

    @property
    def coarse_channels(self) -> tuple[int, int, int]:
        """Channels of the bottleneck and the two coarsest decoder outputs (the vector head's input)."""
        return self.channels[-1], self.decoder_channels[-1], self.decoder_channels[-2]

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each decoder output, coarse to fine (``BackboneFeatures.levels``)."""
        return tuple(reversed(self.decoder_channels))

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Output channels of decoder level ``i`` (index 0 = full resolution)."""
        return (self.channels[0],) + self.channels[: len(self.strides) - 1]

    def to_json(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_json(cls, d: dict) -> BackboneConfig:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


class BackboneFeatures(NamedTuple):
    """What the backbone returns.

    decoded: ``(B, c_0, X, Y, Z)`` full-resolution decoder features.
    coarse: bottleneck then the two coarsest decoder outputs, coarse to fine.
    levels: every decoder output, coarse to fine (the last is ``decoded``; the one before it has half
    the resolution on each strided axis, and so on): what deep supervision reads.
    """

    decoded: torch.Tensor
    coarse: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    levels: tuple[torch.Tensor, ...] = ()


class UNetBackbone(nn.Module):
    """The shared encoder–decoder; see the module docstring for shapes."""

    def __init__(self, config: BackboneConfig = BackboneConfig()):
        super().__init__()
        self.config = config
        c, s = config.channels, config.strides
        norm = config.norm.upper()
        # nn.Module keeps ModuleList names stable: encoder.0 .. encoder.{n-1}, decoder.0 .. decoder.{n-1}
        self.encoder = nn.ModuleList(
            [self._unit(config.in_channels if i == 0 else c[i - 1], c[i], s[i], norm) for i in range(len(s))]
        )
        self.bottleneck = self._unit(c[-2], c[-1], 1, norm)
        dec_out = config.decoder_channels
        decoder = []
        for i in range(len(s)):
            below = c[-1] if i == len(s) - 1 else dec_out[i + 1]
            decoder.append(self._up(below + c[i], dec_out[i], s[i], norm, full_resolution=i == 0))
        self.decoder = nn.ModuleList(decoder)

    def _unit(self, cin: int, cout: int, stride: int, norm: str) -> nn.Module:
        if self.config.num_res_units > 0:
            return ResidualUnit(3, cin, cout, strides=stride, subunits=self.config.num_res_units, norm=norm, dropout=self.config.dropout)
        return Convolution(3, cin, cout, strides=stride, norm=norm, dropout=self.config.dropout)

    def _up(self, cin: int, cout: int, stride: int, norm: str, full_resolution: bool) -> nn.Module:
        up = Convolution(3, cin, cout, strides=stride, is_transposed=True, norm=norm, dropout=self.config.dropout)
        if self.config.num_res_units == 0 or full_resolution:
            return up
        return nn.Sequential(up, ResidualUnit(3, cout, cout, strides=1, subunits=1, norm=norm, dropout=self.config.dropout))

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        div = self.config.size_divisor
        if x.ndim != 5 or any(n % div for n in x.shape[2:]):
            raise ValueError(f"input must be (B, C, X, Y, Z) with spatial sizes divisible by {div}, got {tuple(x.shape)}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(x)
        levels = [x]
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](torch.cat([x, skips[i]], dim=1))
            levels.append(x)
        return BackboneFeatures(decoded=x, coarse=(levels[0], levels[1], levels[2]), levels=tuple(levels[1:]))

    def encoder_parameter_names(self) -> list[str]:
        """Names (in ``state_dict``) of the encoder and bottleneck tensors."""
        return [k for k in self.state_dict() if k.startswith(("encoder.", "bottleneck."))]
