"""Time to predict one whole volume with batched sliding-window inference (MONAI), on this machine.

    python benchmarks/inference_speed.py --shape 35,51,35 --patch 48,64,48        # a Hippocampus volume
    python benchmarks/inference_speed.py --shape 512,512,200 --patch 128,128,128 --warmup 0 --repeats 1  # a CT-sized volume

The network is the default backbone with a 3-class head and random weights (the time does not depend
on the weights); the volume is random noise of the given shape. Each window batch size in
``--window-batch`` is timed ``--repeats`` times after ``--warmup`` untimed runs; the median is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from vectorpose.inference.sliding_window import predict_labels
from vectorpose.models.backbone import BackboneConfig
from vectorpose.models.segmentation_network import SegmentationNetwork


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="35,51,35")
    parser.add_argument("--patch", default="48,64,48")
    parser.add_argument("--window-batch", default="1,4")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    patch = tuple(int(p) for p in args.patch.split(","))
    torch.manual_seed(0)
    network = SegmentationNetwork(BackboneConfig(), 3).to(args.device).eval()
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    rows = []
    for batch in (int(b) for b in args.window_batch.split(",")):
        for _ in range(args.warmup):
            predict_labels(network, image, patch, args.device, args.overlap, batch)
        times = []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            predict_labels(network, image, patch, args.device, args.overlap, batch)
            times.append(time.perf_counter() - tic)
        rows.append({"window_batch": batch, "median_s": statistics.median(times), "times_s": times})
    result = {"shape": shape, "patch": patch, "overlap": args.overlap, "device": args.device, "torch_threads": torch.get_num_threads(),
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "runs": rows}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
