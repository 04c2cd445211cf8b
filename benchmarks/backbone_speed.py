"""Forward + backward time of the backbone on a CPU, against MONAI's UNet, a variant with a
full-resolution residual unit in the last decoder level, and DynUNet in nnU-Net's layout (two
convolutions per level from full resolution on) as `finetune --backbone dynunet` builds it.

    python benchmarks/backbone_speed.py --batch 4 --patch 48,64,48 --repeats 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.nets import UNet
from torch import nn

from vectorpose.models.backbone import BackboneConfig, UNetBackbone
from vectorpose.models.dynunet_backbone import DynUNetBackbone, DynUNetBackboneConfig


def step_time(net: nn.Module, x: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = net(x)
        out = out if torch.is_tensor(out) else out.decoded
        out.float().mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first call warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", default="48,64,48")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, *(int(p) for p in args.patch.split(",")))
    config = BackboneConfig()
    with_top_unit = UNetBackbone(config)
    with_top_unit.decoder[0] = nn.Sequential(with_top_unit.decoder[0], ResidualUnit(3, config.channels[0], config.channels[0], subunits=1, norm="INSTANCE"))
    variants = {
        "vectorpose UNetBackbone": UNetBackbone(config),
        "  + full-resolution residual unit": with_top_unit,
        "MONAI UNet (3 output channels)": UNet(3, 1, 3, config.channels, config.strides, num_res_units=config.num_res_units),
    }
    for widths in ((8, 16, 32, 64, 128), config.channels, (32, 64, 128, 256, 320)):  # thin, ours, nnU-Net's
        variants[f"DynUNet {','.join(map(str, widths))}"] = DynUNetBackbone(DynUNetBackboneConfig.halving_per_level(widths))
    print(f"forward+backward, batch {args.batch} of {args.patch}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, net in variants.items():
        print(f"{name:<36} {step_time(net, x, args.repeats):.3f} s")


if __name__ == "__main__":
    main()
