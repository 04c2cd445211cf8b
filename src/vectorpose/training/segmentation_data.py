"""Labelled training patches: foreground-oversampled crops with MONAI augmentation.

Sample ``i`` is a pure function of ``(seed, i)``, as in pretraining, so runs are reproducible with
any number of workers and resume exactly. With probability ``foreground_prob`` the patch is centred
on a random foreground voxel (nnU-Net's oversampling, which keeps small structures in view);
otherwise its position is uniform. Augmentation: random affine (rotation up to 15°, scaling ±15 %),
flips on ``flip_axes``, Gaussian noise, intensity scaling and gamma.

Flips default to the left–right axis only: that flip maps anatomy onto plausible anatomy, whereas
flipping the anterior–posterior or superior–inferior axis would swap structures whose labels depend
on that direction (for example the anterior and posterior hippocampus).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
)
from torch.utils.data import Dataset

from ..data.boxes import crop_box, origin_range
from ..data.preprocessing import PreprocessedVolume


def augmentation(flip_axes: tuple[int, ...] = (0,)) -> Compose:
    """The MONAI transforms applied to ``{"image", "label"}`` patches of shape ``(1, X, Y, Z)``."""
    return Compose(
        [
            RandAffined(
                keys=["image", "label"], prob=0.3, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"), padding_mode=("border", "zeros"),
            ),
            *[RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=a) for a in flip_axes],
            RandGaussianNoised(keys=["image"], prob=0.15, std=0.1),
            RandScaleIntensityd(keys=["image"], factors=0.25, prob=0.15),
            RandAdjustContrastd(keys=["image"], prob=0.15, gamma=(0.7, 1.5)),
        ]
    )


def patch_origin(rng: np.random.Generator, shape, patch, centre=None) -> tuple[int, int, int]:
    """Lower corner of a patch: around ``centre`` if given, else uniform (covering the axis if the patch is larger)."""
    lo = []
    for axis, (s, p) in enumerate(zip(shape, patch)):
        a, b = origin_range(s, p)
        if centre is None:
            lo.append(int(rng.integers(a, b + 1)))
        else:
            lo.append(int(np.clip(int(centre[axis]) - p // 2, a, b)))
    return tuple(lo)  # type: ignore[return-value]


class SegmentationDataset(Dataset):
    """``dataset[i]`` -> ``{"image": (1, *patch) float32, "label": (1, *patch) int64}``."""

    def __init__(
        self,
        volumes: list[PreprocessedVolume],
        patch_size: tuple[int, int, int],
        seed: int,
        foreground_prob: float = 0.33,
        augment: bool = True,
        flip_axes: tuple[int, ...] = (0,),
    ):
        if not volumes:
            raise ValueError("volumes is empty")
        if any(v.label_path is None for v in volumes):
            raise ValueError("every training volume needs a label map")
        if not 0.0 <= foreground_prob <= 1.0:
            raise ValueError(f"foreground_prob must lie in [0, 1], got {foreground_prob}")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.seed = int(seed)
        self.foreground_prob = foreground_prob
        self.transforms = augmentation(flip_axes) if augment else None
        self._foreground: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 2**62

    def _foreground_voxels(self, k: int) -> np.ndarray:
        if k not in self._foreground:
            self._foreground[k] = np.argwhere(np.asarray(self.volumes[k].label()) > 0)
        return self._foreground[k]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.volumes)))
        volume = self.volumes[k]
        centre = None
        if rng.random() < self.foreground_prob:
            fg = self._foreground_voxels(k)
            if len(fg):
                centre = fg[rng.integers(len(fg))]
        lo = patch_origin(rng, volume.shape, self.patch_size, centre)
        image = crop_box(volume.image(), lo, self.patch_size, volume.intensity_range[0], np.float32)[None]
        label = crop_box(volume.label(), lo, self.patch_size, 0, np.uint8)[None]
        sample = {"image": torch.from_numpy(image), "label": torch.from_numpy(label.astype(np.float32))}
        if self.transforms is not None:
            self.transforms.set_random_state(seed=int(rng.integers(2**31)))
            sample = self.transforms(sample)
        return {
            "image": torch.as_tensor(sample["image"]).float().contiguous(),
            "label": torch.as_tensor(sample["label"]).round().long().contiguous(),
        }

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_foreground"] = {}
        return state
