"""A map-style dataset of pretext samples whose content is a pure function of ``(seed, index)``.

Sample ``i`` draws its volume, crop, orientation and corruption from
``numpy.random.default_rng([seed, i])``. The stream is therefore the same with any number of
DataLoader workers, and a resumed run continues it exactly from the first unseen index.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.preprocessing import PreprocessedVolume
from ..pretext.sample import PretextConfig, make_pretext_sample


class PretextDataset(Dataset):
    """``dataset[i]`` -> ``{"input", "clean", "vectors"}`` tensors (see :class:`~vectorpose.pretext.sample.PretextSample`)."""

    def __init__(self, volumes: list[PreprocessedVolume], config: PretextConfig, seed: int):
        if not volumes:
            raise ValueError("volumes is empty")
        self.volumes = list(volumes)
        self.config = config
        self.seed = int(seed)
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
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.volumes)))
        sample = make_pretext_sample(self._array(k), self.volumes[k].intensity_range, rng, self.config)
        return {"input": sample.input, "clean": sample.clean, "vectors": sample.vectors}

    def __getstate__(self):
        # never pickle open memory maps into worker processes
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state
