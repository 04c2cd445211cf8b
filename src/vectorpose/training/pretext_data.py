"""A map-style dataset of pretext samples whose content is a pure function of ``(seed, stream, index)``.

Sample ``i`` of stream 0 draws its volume, crop, orientation and corruption from
``numpy.random.default_rng([seed, i])``; stream ``s`` > 0 (one per process of a distributed run)
from ``SeedSequence([seed, i], spawn_key=(s,))``, NumPy's way to derive independent streams. The
stream is therefore the same with any number of DataLoader workers, and a resumed run continues it
exactly from the first unseen index.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..data.preprocessing import PreprocessedVolume
from ..pretext.boundary import boundary_target
from ..pretext.masking import MaskingConfig
from ..pretext.sample import PretextConfig, make_pretext_sample
from .speed import SpeedOptions


class PretextDataset(Dataset):
    """``dataset[i]`` -> ``{"input", "clean", "vectors"}`` tensors, and ``"mask"`` with ``masking``
    (see :class:`~vectorpose.pretext.sample.PretextSample`)."""

    def __init__(self, volumes: list[PreprocessedVolume], config: PretextConfig, seed: int, stream: int = 0,
                 masking: MaskingConfig | None = None):
        if not volumes:
            raise ValueError("volumes is empty")
        if stream < 0:
            raise ValueError(f"stream must be >= 0, got {stream}")
        if masking is not None:
            masking.grid(config.patch_size)  # refuse a block that does not tile the patch before any worker starts
        self.volumes = list(volumes)
        self.config = config
        self.masking = masking
        self.seed = int(seed)
        self.stream = int(stream)
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        # an endless stream: indices come from the sampler, not from this length
        return 2**62

    def _array(self, k: int) -> np.ndarray:
        # memory maps are opened per process, on first use
        if k not in self._arrays:
            self._arrays[k] = self.volumes[k].image()
        return self._arrays[k]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # Stream 0 is the stream of a one-process run. Other streams use a spawn key, not a third
        # entropy word: default_rng([seed, s, 0]) equals default_rng([seed, s]) (trailing zero words do
        # not change a SeedSequence), so stream s would replay sample s of stream 0.
        spawn_key = (self.stream,) if self.stream else ()
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index)], spawn_key=spawn_key))
        k = int(rng.integers(len(self.volumes)))
        sample = make_pretext_sample(self._array(k), self.volumes[k].intensity_range, rng, self.config, self.masking)
        tensors = {"input": sample.input, "clean": sample.clean, "vectors": sample.vectors}
        if sample.mask is not None:
            tensors["mask"] = sample.mask
        return tensors

    def __getstate__(self):
        # never pickle open memory maps into worker processes
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


def boundary_collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate a batch and add its boundary target ``"boundary"`` ``(B, 1, P, P, P)``.

    Used on the CPU, so that DataLoader workers compute the target (a 5³ median filter, the costliest
    part of a sample there) in parallel with the training step.
    """
    batch = default_collate(samples)
    batch["boundary"] = boundary_target(batch["clean"])
    return batch


def pipeline_collate(device: torch.device, boundary: bool, speed: SpeedOptions = SpeedOptions()):
    """How batches are put together: with a ``boundary`` term, the workers add the boundary target
    (:func:`boundary_collate`) on the CPU, or where ``speed.boundary_in`` says so; otherwise it is made
    on the training device (:class:`~vectorpose.training.prefetch.DevicePrefetcher`)."""
    return boundary_collate if boundary and speed.boundary_in_workers(device) else default_collate
