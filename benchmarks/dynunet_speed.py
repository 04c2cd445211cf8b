"""Pretraining step time of ``--backbone dynunet`` against the default ``unet``, on batches in memory.

A step is what ``vectorpose pretrain`` does per batch (forward, the method's losses, backward, AdamW),
on real crops of ``DATA`` made once by the project's pipeline (boundary targets included), so no data
work is timed. The backbones are built as ``pretrain --backbone unet|dynunet --patch P --channels C``
builds them, and are timed in alternating rounds, so that a load that changes over the run (another
job on the machine) falls on both alike; each round's figure is the mean over ``--steps`` steps after
``--warmup``, and the median round is reported.

    python benchmarks/dynunet_speed.py ../shared/data/Task04_Hippocampus --patch 32 --batch 4 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from vectorpose.data.datasets import load_dataset
from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset
from vectorpose.methods import get_method
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.dynunet_backbone import DynUNetBackboneConfig
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.prefetch import DevicePrefetcher
from vectorpose.training.pretext_data import PretextDataset, pipeline_collate
from vectorpose.training.pretrain import pretext_step
from vectorpose.training.run import step_loader
from vectorpose.training.speed import SpeedOptions

CPU = torch.device("cpu")
CACHED_BATCHES = 4
SPEED = SpeedOptions()  # the defaults: no autocast, no compile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--method", default="vectorpose")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", default="16,32,64,128,256")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()

    channels = tuple(int(c) for c in args.channels.split(","))
    backbones = {"unet": BackboneConfig(channels=channels), "dynunet": DynUNetBackboneConfig.for_patch(args.patch, channels)}
    method = get_method(args.method)
    dataset = load_dataset(args.data)
    volumes, _ = preprocess_dataset(dataset.images_only(), PreprocessingConfig(modality=dataset.modality), args.cache, progress=False)
    samples = PretextDataset(volumes, PretextConfig(patch_size=args.patch), seed=0)
    boundary = method.boundary_weight > 0
    loader = step_loader(samples, args.batch, 0, CACHED_BATCHES, 0, 0, CPU, collate_fn=pipeline_collate(CPU, boundary))
    batches = list(itertools.islice(DevicePrefetcher(loader, CPU, boundary=boundary), CACHED_BATCHES))

    steps = {}
    for name, config in backbones.items():
        torch.manual_seed(0)
        network = method.build_network(config).train()
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
        steps[name] = (network, optimizer)
    rounds: dict[str, list[float]] = {name: [] for name in backbones}
    for _ in range(args.rounds):
        for name, (network, optimizer) in steps.items():
            for i in range(args.warmup):
                pretext_step(network, method, optimizer, batches[i % CACHED_BATCHES], SPEED, CPU)
            tic = time.perf_counter()
            for i in range(args.steps):
                pretext_step(network, method, optimizer, batches[i % CACHED_BATCHES], SPEED, CPU)
            rounds[name].append((time.perf_counter() - tic) / args.steps)

    print(f"{args.method} step on {len(volumes)} volumes of {args.data}: batch {args.batch} of {args.patch}^3, "
          f"{torch.get_num_threads()} torch threads, median of {args.rounds} rounds x {args.steps} steps")
    for name, config in backbones.items():
        parameters = sum(p.numel() for p in steps[name][0].backbone.parameters())
        layout = f"channels {','.join(map(str, config.channels))}, strides {','.join(map(str, config.strides))}"
        print(f"{name:<8} {statistics.median(rounds[name]):.3f} s/step  (rounds {', '.join(f'{t:.3f}' for t in rounds[name])}; "
              f"{layout}; {parameters / 1e6:.2f} M backbone parameters)")
    print(f"dynunet / unet: {statistics.median(rounds['dynunet']) / statistics.median(rounds['unet']):.2f}")


if __name__ == "__main__":
    main()
