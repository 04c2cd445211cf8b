"""Labelled training patches: how foreground patch centres are drawn (counted against the label map)."""

from __future__ import annotations

import numpy as np
import pytest

from cached_volumes import label_volume as volume
from vectorpose.training.segmentation_data import SegmentationDataset

PATCH = (8, 8, 8)
DRAWS = 2000


def organs() -> np.ndarray:
    """Class 1 fills a 20×20×20 block (8000 voxels), class 2 one 2×2×2 block (8 voxels): 1000 to 1."""
    label = np.zeros((40, 40, 40), np.uint8)
    label[2:22, 2:22, 2:22] = 1
    label[30:32, 30:32, 30:32] = 2
    return label


def centre_classes(dataset: SegmentationDataset) -> np.ndarray:
    """The class under each patch's centre voxel (no augmentation; these patches never touch the border)."""
    return np.array([int(dataset[i]["label"][0, PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2]) for i in range(DRAWS)])


def test_class_sampling_shows_each_present_class_equally_often(tmp_path):
    dataset = SegmentationDataset([volume(tmp_path, "a", organs())], PATCH, seed=0, foreground_prob=1.0, augment=False)
    classes = centre_classes(dataset)
    assert set(classes) == {1, 2}
    # Binomial(2000, 1/2): the standard deviation is 22 draws; 6 of them is far beyond chance
    assert abs((classes == 2).sum() - DRAWS / 2) < 6 * np.sqrt(DRAWS / 4)


def test_voxel_sampling_follows_class_volume(tmp_path):
    dataset = SegmentationDataset([volume(tmp_path, "a", organs())], PATCH, seed=0, foreground_prob=1.0, augment=False,
                                  foreground_sampling="voxel")
    small = (centre_classes(dataset) == 2).sum()
    assert small <= 10  # expected 2000 · 8 / 8008 ≈ 2


def test_class_sampling_draws_only_classes_the_case_has(tmp_path):
    label = organs()
    label[label == 2] = 0
    dataset = SegmentationDataset([volume(tmp_path, "a", label)], PATCH, seed=0, foreground_prob=1.0, augment=False)
    assert set(centre_classes(dataset)[:200]) == {1}


def test_case_without_foreground_falls_back_to_uniform_patches(tmp_path):
    dataset = SegmentationDataset([volume(tmp_path, "a", np.zeros((20, 20, 20), np.uint8))], PATCH, seed=0, foreground_prob=1.0,
                                  augment=False)
    assert dataset[0]["label"].shape == (1, *PATCH)


def test_unknown_sampling_is_refused(tmp_path):
    with pytest.raises(ValueError, match="foreground_sampling"):
        SegmentationDataset([volume(tmp_path, "a", organs())], PATCH, seed=0, foreground_sampling="organ")


@pytest.mark.parametrize("name", ["nnunet", "light"])
def test_augmentation_moves_image_and_label_together(tmp_path, name):
    # a bright off-centre block labelled 1 in a dark volume: whatever the draw, the voxels labelled 1 must
    # stay the bright ones (rotation, scaling and flips move both; intensity changes keep the order)
    label = np.zeros((24, 24, 24), np.uint8)
    label[4:14, 6:16, 8:20] = 1
    dataset = SegmentationDataset([volume(tmp_path, "a", label)], (16, 16, 16), seed=3, foreground_prob=1.0,
                                  augmentation_name=name, flip_axes=(0, 1, 2))
    moved = 0
    for i in range(60):
        sample = dataset[i]
        image, mask = sample["image"][0].numpy(), sample["label"][0].numpy() == 1
        assert np.isfinite(image).all() and set(np.unique(mask)) == {False, True}
        assert image[mask].mean() > image[~mask].mean() + 0.3
        moved += not np.array_equal(mask, label[0:16, 0:16, 0:16] == 1)
    assert moved > 0


def test_unknown_augmentation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="augmentation"):
        SegmentationDataset([volume(tmp_path, "a", organs())], PATCH, seed=0, augmentation_name="heavy")
