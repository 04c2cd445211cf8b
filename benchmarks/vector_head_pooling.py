"""Does the Vector Prediction head need spatial layout? Global pooling against a 2×2×2 grid.

Pretrains the ``vp`` method on synthetic bodies (8 cases, seed 0) with the vector head pooling each
coarse level globally (``--grid 1``, the paper's head) or to a ``grid³`` layout, then scores the three
VP terms on fresh crops of 4 held-out bodies (seed 1) against the best constant prediction (the
per-slot median for ``r̂`` and ``θ̂``, the best point of the circle per slot for ``φ̂``).

    python benchmarks/vector_head_pooling.py --grid 1 --flip-prob 0.5 --no-rotate --no-corruption
    python benchmarks/vector_head_pooling.py --grid 2 --flip-prob 0.5 --no-rotate --no-corruption
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_losses import best_constant, vector_term_errors  # noqa: E402

from vectorpose.data.datasets import load_dataset  # noqa: E402
from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset  # noqa: E402
from vectorpose.data.synthetic import make_synthetic_dataset  # noqa: E402
from vectorpose.losses.vector import AZIMUTH_MIN_SIN  # noqa: E402
from vectorpose.models import heads, pretext_network  # noqa: E402
from vectorpose.models.backbone import BackboneConfig  # noqa: E402
from vectorpose.pretext.corruption import CorruptionConfig  # noqa: E402
from vectorpose.pretext.sample import PretextConfig  # noqa: E402
from vectorpose.training.pretext_data import PretextDataset  # noqa: E402
from vectorpose.training.pretrain import PretrainConfig, pretrain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=2, help="pooled layout of each coarse level (1 = global mean)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--flip-prob", type=float, default=0.5)
    parser.add_argument("--no-rotate", action="store_true")
    parser.add_argument("--no-corruption", action="store_true")
    parser.add_argument("--held-out-crops", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # the one setting under test: the head's pooled layout
    pretext_network.VectorHead = functools.partial(heads.VectorHead, grid=args.grid)

    corruption = CorruptionConfig(0.0, 0.0, 0.0) if args.no_corruption else CorruptionConfig()
    pretext = PretextConfig(patch_size=16, flip_prob=args.flip_prob, rotate=not args.no_rotate, corruption=corruption)
    config = PretrainConfig(method="vp", steps=args.steps, batch_size=4, lr=3e-3, log_every=50, pretext=pretext,
                            backbone=BackboneConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = make_synthetic_dataset(root / "train", num_cases=8, seed=0)
        held_out = make_synthetic_dataset(root / "held_out", num_cases=4, seed=1)
        network = pretrain(train, root / "run", config, cache_dir=root / "cache", progress=False).network.eval()
        volumes, _ = preprocess_dataset(load_dataset(held_out), PreprocessingConfig(modality="MRI"), root / "cache")
        stream = PretextDataset(volumes, pretext, seed=123)
        samples = [stream[i] for i in range(args.held_out_crops)]
        target = torch.stack([s["vectors"] for s in samples]).double().numpy()
        with torch.no_grad():
            pred = network(torch.stack([s["input"] for s in samples]))["vectors"].double().numpy()
    model = vector_term_errors(pred, target, AZIMUTH_MIN_SIN)
    constant = vector_term_errors(np.broadcast_to(best_constant(target, AZIMUTH_MIN_SIN), target.shape), target, AZIMUTH_MIN_SIN)
    print(json.dumps({"settings": vars(args), "model": model, "best_constant": constant}, indent=1))


if __name__ == "__main__":
    main()
