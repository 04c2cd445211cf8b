"""Tests for the synthetic MSD-style dataset generator."""

from __future__ import annotations

import json
import pathlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from vectorpose.data import synthetic
from vectorpose.data.synthetic import make_synthetic_dataset, synthetic_case

SEED = 3
NUM_CASES = 6  # covers both on-disk orientations twice


def _load(path: pathlib.Path, canonical: bool = False) -> tuple[np.ndarray, np.ndarray]:
    nifti = nib.load(path)
    if canonical:
        nifti = nib.as_closest_canonical(nifti)
    return np.asanyarray(nifti.dataobj), nifti.affine


def _case_paths(root: pathlib.Path, index: int) -> tuple[pathlib.Path, pathlib.Path]:
    name = f"synth_{index:03d}.nii.gz"
    return root / "imagesTr" / name, root / "labelsTr" / name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", NUM_CASES, SEED)


def test_layout_and_manifest(dataset: pathlib.Path) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    names = [f"synth_{i:03d}.nii.gz" for i in range(NUM_CASES)]
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == names
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == names
    manifest = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert manifest["name"] == "VectorPOSE synthetic bodies"
    assert isinstance(manifest["description"], str) and manifest["description"]
    assert manifest["tensorImageSize"] == "3D"
    assert manifest["modality"] == {"0": "MRI"}
    assert manifest["labels"] == {"0": "background", "1": "left organ", "2": "right organ"}
    assert manifest["numTraining"] == NUM_CASES
    assert manifest["numTest"] == 0
    assert manifest["test"] == []
    assert manifest["training"] == [
        {"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names
    ]
    # Every listed path resolves inside the dataset folder.
    for entry in manifest["training"]:
        assert (dataset / entry["image"]).is_file() and (dataset / entry["label"]).is_file()


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_case_files(dataset: pathlib.Path, index: int) -> None:
    image_path, label_path = _case_paths(dataset, index)
    image_nifti, label_nifti = nib.load(image_path), nib.load(label_path)
    assert image_nifti.get_data_dtype() == np.float32
    assert label_nifti.get_data_dtype() == np.uint8
    image, image_affine = _load(image_path)
    label, label_affine = _load(label_path)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == label.shape
    assert 40 <= image.shape[0] <= 52 and 40 <= image.shape[1] <= 52 and 36 <= image.shape[2] <= 48
    np.testing.assert_array_equal(image_affine, label_affine)
    np.testing.assert_allclose(image_nifti.header.get_zooms(), (1.0, 1.0, 1.5))
    assert set(np.unique(label).tolist()) == {0, 1, 2}
    assert np.isfinite(image).all()
    # Background is exactly zero and every organ voxel lies inside the body.
    assert not (label > 0)[image == 0].any()


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_stored_orientation_round_trips_to_synthetic_case(
    dataset: pathlib.Path, index: int
) -> None:
    image_path, label_path = _case_paths(dataset, index)
    expected = ("L", "P", "S") if index % 3 == 1 else ("R", "A", "S")
    assert nib.aff2axcodes(nib.load(image_path).affine) == expected
    image, image_affine = _load(image_path, canonical=True)
    label, label_affine = _load(label_path, canonical=True)
    want_image, want_label = synthetic_case(np.random.default_rng([SEED, index]))
    np.testing.assert_array_equal(image, want_image)
    np.testing.assert_array_equal(label, want_label)
    np.testing.assert_allclose(image_affine[:3, :3], np.diag([1.0, 1.0, 1.5]))
    np.testing.assert_array_equal(image_affine, label_affine)


@pytest.mark.parametrize("seed", range(8))
def test_anatomy_is_consistent_in_ras(seed: int) -> None:
    image, label = synthetic_case(np.random.default_rng(seed))
    centre = (np.array(image.shape[:2]) - 1) / 2
    body = image != 0
    body_centre = np.argwhere(body).mean(axis=0)
    np.testing.assert_allclose(body_centre[:2], centre, atol=3.0)
    left, right = (np.argwhere(label == k).mean(axis=0) for k in (1, 2))
    # Left organ on the patient's left (low x in RAS), and superior to the right organ.
    assert left[0] < body_centre[0] < right[0]
    assert left[2] > right[2]
    # The organs do not touch each other (at least one voxel of tissue in between).
    assert not (ndimage.binary_dilation(label == 1) & (label == 2)).any()
    # The spine is the brightest structure and lies posterior (low y) on the midline.
    spine = np.argwhere(image >= np.quantile(image[body], 0.995)).mean(axis=0)
    assert abs(spine[0] - body_centre[0]) < 3.0
    assert spine[1] < body_centre[1] - 4.0


def test_synthetic_case_intensity_scale_varies() -> None:
    maxima = [synthetic_case(np.random.default_rng(s))[0].max() for s in range(6)]
    assert min(maxima) >= 1.0 and max(maxima) <= 5e4
    assert max(maxima) / min(maxima) > 3.0


def test_determinism(tmp_path: pathlib.Path, dataset: pathlib.Path) -> None:
    again = make_synthetic_dataset(tmp_path / "again", 2, SEED)
    other = make_synthetic_dataset(tmp_path / "other", 2, SEED + 1)
    for index in range(2):
        for first, second, third in zip(
            _case_paths(dataset, index), _case_paths(again, index), _case_paths(other, index)
        ):
            reference = _load(first)[0]
            np.testing.assert_array_equal(_load(second)[0], reference)
            differs = _load(third)[0]
            assert differs.shape != reference.shape or not np.array_equal(differs, reference)


def test_refuses_to_overwrite(tmp_path: pathlib.Path) -> None:
    out = make_synthetic_dataset(tmp_path / "ds", 1, 0)
    before = (out / "imagesTr" / "synth_000.nii.gz").read_bytes()
    with pytest.raises(FileExistsError, match="ds"):
        make_synthetic_dataset(out, 1, 1)
    assert (out / "imagesTr" / "synth_000.nii.gz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_overwrite_replaces_contents(tmp_path: pathlib.Path) -> None:
    out = make_synthetic_dataset(tmp_path / "ds", 2, 0)
    (out / "stray.txt").write_text("left over")
    assert make_synthetic_dataset(out, 1, 1, overwrite=True) == out
    assert not (out / "stray.txt").exists()
    assert not (out / "imagesTr" / "synth_001.nii.gz").exists()
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 1
    image = _load(out / "imagesTr" / "synth_000.nii.gz")[0]
    np.testing.assert_array_equal(image, synthetic_case(np.random.default_rng([1, 0]))[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_empty_existing_folder_is_used(tmp_path: pathlib.Path) -> None:
    (tmp_path / "ds").mkdir()
    out = make_synthetic_dataset(tmp_path / "ds", 1, 0)
    assert (out / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("num_cases", [0, -2])
def test_rejects_bad_num_cases(tmp_path: pathlib.Path, num_cases: int) -> None:
    with pytest.raises(ValueError, match=str(num_cases)):
        make_synthetic_dataset(tmp_path / "ds", num_cases)
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_nothing_behind(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_case = synthetic.synthetic_case
    calls = []

    def failing_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        calls.append(rng)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real_case(rng)

    monkeypatch.setattr(synthetic, "synthetic_case", failing_case)
    with pytest.raises(RuntimeError, match="boom"):
        make_synthetic_dataset(tmp_path / "ds", 3, 0)
    assert list(tmp_path.iterdir()) == []
