"""Resampling to a common spacing: grids against SciPy's interpolation, the spacing rule by hand, and
the cache layer on scans of mixed spacings."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from vectorpose.data.datasets import load_dataset
from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_at_spacing, preprocess_dataset
from vectorpose.data.resampling import (
    choose_spacing,
    parse_spacing,
    resample_image,
    resample_labels,
    resample_probabilities,
    resampled_shape,
    target_spacing,
)


def scipy_trilinear(volume: np.ndarray, shape) -> np.ndarray:
    """Reference: output voxel i samples the input at (i + ½)·n_in/n_out − ½ (shared outer edges), linear, edges held."""
    axes = [(np.arange(m) + 0.5) * n / m - 0.5 for n, m in zip(volume.shape, shape)]
    coordinates = np.stack(np.meshgrid(*axes, indexing="ij"))
    return ndimage.map_coordinates(volume.astype(np.float64), coordinates, order=1, mode="nearest")


@pytest.mark.parametrize("shape", [(10, 6, 3), (23, 9, 14), (7, 12, 5)])
def test_image_matches_scipy(shape):
    image = np.random.default_rng(0).normal(size=(14, 9, 7)).astype(np.float32)
    np.testing.assert_allclose(resample_image(image, shape), scipy_trilinear(image, shape), atol=1e-5)


def test_probabilities_match_scipy_per_class():
    p = torch.softmax(torch.randn(3, 8, 6, 5, generator=torch.Generator().manual_seed(1)), 0)
    out = resample_probabilities(p, (13, 4, 9)).numpy()
    for c in range(3):
        np.testing.assert_allclose(out[c], scipy_trilinear(p[c].numpy(), (13, 4, 9)), atol=1e-6)


def test_labels_take_the_class_whose_interpolated_indicator_is_largest():
    label = np.random.default_rng(2).integers(0, 4, size=(12, 10, 6)).astype(np.uint8)
    label[label == 2] = 0  # a gap in the values: class 2 is absent and must never appear
    shape = (7, 15, 4)
    present = np.unique(label)
    scores = np.stack([scipy_trilinear((label == c).astype(np.float64), shape) for c in present])
    expected = present[np.argmax(scores, axis=0)]  # ties go to the lower class, as in the code
    out = resample_labels(label, shape)
    assert out.dtype == np.uint8 and out.shape == shape
    # float32 against float64 scores may break an exact tie differently; allow a handful of such voxels
    assert (out != expected).sum() <= 3
    assert set(np.unique(out)) <= set(present.tolist())


def test_shapes_by_hand():
    assert resampled_shape((256, 256, 38), (1.25, 1.25, 7.7), (2.5, 2.5, 7.7)) == (128, 128, 38)
    assert resampled_shape((10, 10, 3), (1.0, 1.0, 1.0), (3.0, 3.0, 4.0)) == (3, 3, 1)


def test_target_spacing_by_hand():
    # isotropic enough: the median per axis
    assert target_spacing([(1.0, 1.0, 2.0), (0.8, 0.8, 2.5), (1.2, 1.2, 2.0)]) == (1.0, 1.0, 2.0)
    # anisotropic (median z 5.0 > 3 × 0.8): z takes its 10th percentile (3.0 -> np.percentile of [2.5, 5, 5, 5] = 3.25)
    spacings = [(0.8, 0.8, 2.5), (0.8, 0.8, 5.0), (0.7, 0.7, 5.0), (0.9, 0.9, 5.0)]
    assert target_spacing(spacings) == pytest.approx((0.8, 0.8, np.percentile([2.5, 5.0, 5.0, 5.0], 10)))
    # ... but never finer than the other axes' targets: the 10th percentile of [0.2, 4, 4] is 0.96, below 1.0
    assert target_spacing([(1.0, 1.0, 0.2), (1.0, 1.0, 4.0), (1.0, 1.0, 4.0)])[2] == pytest.approx(1.0)
    # the coarse axis need not be z: x here, and 10th percentile of one value is that value
    assert target_spacing([(4.0, 0.5, 0.5), (4.0, 0.5, 0.5)]) == (4.0, 0.5, 0.5)


def test_anisotropic_rule_reaches_for_a_fine_tenth_percentile():
    spacings = [(1.0, 1.0, z) for z in (1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0)]
    assert target_spacing(spacings)[2] == pytest.approx(max(1.0, np.percentile([s[2] for s in spacings], 10)))


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("NATIVE", "native"), ("1.5", (1.5, 1.5, 1.5)), ("1,1,3", (1.0, 1.0, 3.0))])
def test_parse_spacing(text, expected):
    assert parse_spacing(text) == expected


@pytest.mark.parametrize("text", ["0,1,1", "-1", "1,2", "a,b,c", "nan,1,1"])
def test_parse_spacing_refuses(text):
    with pytest.raises(ValueError, match="spacing"):
        parse_spacing(text)


def write_msd(root, spacings):
    """An MSD folder of one bright cube per scan, each at its own voxel size (the same 24 mm cube)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i, spacing in enumerate(spacings):
        shape = tuple(int(round(48 / s)) for s in spacing)
        image = np.random.default_rng(i).normal(0, 0.1, size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        lo = [int(round(12 / s)) for s in spacing]
        hi = [int(round(36 / s)) for s in spacing]
        label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
        image[label == 1] += 1.0
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"c_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"c_{i}.nii.gz")
        training.append({"image": f"./imagesTr/c_{i}.nii.gz", "label": f"./labelsTr/c_{i}.nii.gz"})
    import json

    (root / "dataset.json").write_text(json.dumps({"name": "mixed", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "cube"},
                                                   "training": training}), encoding="utf-8")
    return root


def test_mixed_spacings_meet_at_the_median(tmp_path):
    data = write_msd(tmp_path / "data", [(1.0, 1.0, 2.0), (2.0, 2.0, 2.0), (1.0, 1.0, 2.0)])
    dataset = load_dataset(data)
    volumes, _, config = preprocess_at_spacing(dataset, PreprocessingConfig(), "auto", tmp_path / "cache")
    assert config.spacing == (1.0, 1.0, 2.0)
    assert [v.shape for v in volumes] == [(48, 48, 24)] * 3
    native, _ = preprocess_dataset(dataset, PreprocessingConfig(), tmp_path / "cache")
    assert volumes[0].image_path == native[0].image_path  # already at the target: used as it is
    assert volumes[1].image_path != native[1].image_path and native[1].shape == (24, 24, 24)
    # the resampled cube has the same extent in mm: 24 mm = 24 voxels of 1 mm in x, 12 of 2 mm in z
    label = np.asarray(volumes[1].label())
    assert [int(a.max() - a.min() + 1) for a in np.nonzero(label)] == [24, 24, 12]
    # native: nothing resampled, nothing recorded
    same, _, config = preprocess_at_spacing(dataset, PreprocessingConfig(), "native", tmp_path / "cache")
    assert config.spacing is None and [v.shape for v in same] == [v.shape for v in native]
    assert choose_spacing("2,2,2", []) == (2.0, 2.0, 2.0)
