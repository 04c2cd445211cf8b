"""Labelled training patches: foreground-oversampled crops with MONAI augmentation.

Sample ``i`` is a pure function of ``(seed, i)``, as in pretraining, so runs are reproducible with
any number of workers and resume exactly. With probability ``foreground_prob`` the patch is centred
on a foreground voxel; otherwise its position is uniform. ``foreground_sampling`` says how that voxel
is drawn: ``class`` (the default) first draws one of the classes present in the case, each equally
likely, then a voxel of that class, as nnU-Net's oversampling does, so that a small organ is in view
as often as the largest; ``voxel`` draws any foreground voxel, so each class is in view in proportion
to its volume (the largest organ dominates).

Augmentation (MONAI transforms), by name:

- ``nnunet`` (the default): the kinds and strengths of nnU-Net's default 3D augmentation (Isensee et
  al., Nature Methods 2021): rotation up to ±30° and scaling by 0.7–1.3 (each with p 0.2), Gaussian
  noise (p 0.1), Gaussian blur (p 0.2), brightness ×0.75–1.25 (p 0.15), contrast ×0.75–1.25 about the
  mean (p 0.15), low-resolution simulation (down to half, p 0.25), gamma 0.7–1.5 on the inverted
  (p 0.1) and the plain image (p 0.3), and flips on ``flip_axes``;
- ``light``: a random affine (rotation up to 15°, scaling ±15 %, p 0.3), flips on ``flip_axes``,
  Gaussian noise, intensity scaling and gamma (p 0.15 each).

Fine-tuning flips at most the left–right axis by default (see
:func:`~vectorpose.training.finetune.mirrored_axes`): that flip maps anatomy onto plausible anatomy,
whereas flipping the anterior–posterior or superior–inferior axis would swap structures whose labels
depend on that direction (for example the anterior and posterior hippocampus).
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
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
)
from torch.utils.data import Dataset

from ..data.boxes import crop_box, origin_range
from ..data.preprocessing import PreprocessedVolume

FOREGROUND_SAMPLING = ("class", "voxel")
AUGMENTATIONS = ("nnunet", "light")


def augmentation(flip_axes: tuple[int, ...] = (0,), name: str = "nnunet") -> Compose:
    """The MONAI transforms ``name`` applies to ``{"image", "label"}`` patches of shape ``(1, X, Y, Z)``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {name!r}")
    flips = [RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=a) for a in flip_axes]
    if name == "nnunet":
        return Compose(
            [
                RandAffined(keys=["image", "label"], prob=0.2, rotate_range=(0.52, 0.52, 0.52), mode=("bilinear", "nearest"),
                            padding_mode=("border", "zeros")),
                RandAffined(keys=["image", "label"], prob=0.2, scale_range=(0.3, 0.3, 0.3), mode=("bilinear", "nearest"),
                            padding_mode=("border", "zeros")),
                RandGaussianNoised(keys=["image"], prob=0.1, std=0.3),  # nnU-Net: variance up to 0.1
                RandGaussianSmoothd(keys=["image"], prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
                RandScaleIntensityd(keys=["image"], prob=0.15, factors=0.25),
                RandScaleIntensityFixedMeand(keys=["image"], prob=0.15, factors=0.25, preserve_range=True),
                RandSimulateLowResolutiond(keys=["image"], prob=0.25, zoom_range=(0.5, 1.0)),
                RandAdjustContrastd(keys=["image"], prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
                RandAdjustContrastd(keys=["image"], prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
                *flips,
            ]
        )
    return Compose(
        [
            RandAffined(
                keys=["image", "label"], prob=0.3, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"), padding_mode=("border", "zeros"),
            ),
            *flips,
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
        foreground_sampling: str = "class",
        augmentation_name: str = "nnunet",
    ):
        if not volumes:
            raise ValueError("volumes is empty")
        if any(v.label_path is None for v in volumes):
            raise ValueError("every training volume needs a label map")
        if not 0.0 <= foreground_prob <= 1.0:
            raise ValueError(f"foreground_prob must lie in [0, 1], got {foreground_prob}")
        if foreground_sampling not in FOREGROUND_SAMPLING:
            raise ValueError(f"foreground_sampling must be one of {FOREGROUND_SAMPLING}, got {foreground_sampling!r}")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.seed = int(seed)
        self.foreground_prob = foreground_prob
        self.foreground_sampling = foreground_sampling
        self.transforms = augmentation(flip_axes, augmentation_name) if augment else None
        self._foreground: dict[int, np.ndarray] = {}
        self._class_voxels: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return 2**62

    def _foreground_voxels(self, k: int) -> np.ndarray:
        if k not in self._foreground:
            self._foreground[k] = np.argwhere(np.asarray(self.volumes[k].label()) > 0)
        return self._foreground[k]

    def _voxels_by_class(self, k: int) -> list[np.ndarray]:
        """Flat indices of each foreground class present in volume ``k``, in class order."""
        if k not in self._class_voxels:
            label = np.asarray(self.volumes[k].label()).ravel()
            order = np.argsort(label, kind="stable")
            classes, starts = np.unique(label[order], return_index=True)
            groups = np.split(order, starts[1:])
            self._class_voxels[k] = [g for c, g in zip(classes, groups) if c > 0]
        return self._class_voxels[k]

    def _foreground_centre(self, rng: np.random.Generator, k: int) -> np.ndarray | None:
        if self.foreground_sampling == "voxel":
            fg = self._foreground_voxels(k)
            return fg[rng.integers(len(fg))] if len(fg) else None
        groups = self._voxels_by_class(k)
        if not groups:
            return None
        voxels = groups[int(rng.integers(len(groups)))]
        return np.array(np.unravel_index(voxels[rng.integers(len(voxels))], self.volumes[k].shape))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.volumes)))
        volume = self.volumes[k]
        centre = None
        if rng.random() < self.foreground_prob:
            centre = self._foreground_centre(rng, k)
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
        state["_class_voxels"] = {}
        return state
