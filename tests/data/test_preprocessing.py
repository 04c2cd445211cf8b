"""Tests for vectorpose.data.preprocessing: intensity normalisation, label checks and the cache."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import vectorpose.data.preprocessing as prep
from vectorpose.data.datasets import Case, Dataset, load_dataset
from vectorpose.data.io import load_image, load_nifti
from vectorpose.data.preprocessing import (
    PreprocessedVolume,
    PreprocessingConfig,
    default_cache_dir,
    label_to_uint8,
    normalise_intensity,
    preprocess_case,
    preprocess_dataset,
)
from vectorpose.errors import DataError, DatasetError

# same lookup as tests/conftest.py: $VECTORPOSE_SHARED_DATA, else ../shared/data beside the project
_ROOT = Path(__file__).resolve().parents[2]
CT_EXAMPLE = Path(os.environ.get("VECTORPOSE_SHARED_DATA", _ROOT.parent / "shared" / "data")) / "ct_example" / "example_ct_sm.nii.gz"


# --- independent references ------------------------------------------------------------------


def _percentile_linear(values: np.ndarray, q: float) -> float:
    """Percentile with linear interpolation between order statistics, written out by hand."""
    s = np.sort(values.ravel().astype(np.float64))
    pos = q / 100.0 * (s.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, s.size - 1)
    return float(s[lo] + (pos - lo) * (s[hi] - s[lo]))


def ref_mri(image: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    x = image.astype(np.float64)
    lo, hi = (_percentile_linear(x, q) for q in percentiles)
    c = np.minimum(np.maximum(x, lo), hi)
    mean = c.sum() / c.size
    std = np.sqrt(((c - mean) ** 2).sum() / c.size)
    return (c - mean) / std


def ref_ct(image: np.ndarray, window=(-1000.0, 1000.0)) -> np.ndarray:
    lo, hi = window
    x = image.astype(np.float64)
    return np.where(x < lo, 0.0, np.where(x > hi, 1.0, (x - lo) / (hi - lo)))


# --- normalise_intensity -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (2.0, 98.0), (0.0, 100.0), (10.0, 60.0)])
def test_normalise_mri_matches_reference(dtype, percentiles):
    rng = np.random.default_rng(7)
    image = rng.gamma(2.0, 30.0, size=(17, 13, 11))
    image[0, 0, :3] = 250  # a few bright outliers that clipping must tame
    image = np.clip(image, 0, 255).astype(dtype)
    out = normalise_intensity(image, PreprocessingConfig("MRI", mri_percentiles=percentiles))
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, ref_mri(image, percentiles), atol=1e-5)
    assert abs(float(out.astype(np.float64).mean())) < 1e-5
    assert abs(float(out.astype(np.float64).std()) - 1.0) < 1e-5


def test_normalise_mri_clips_outliers_by_percentile():
    # 1000 voxels 0..999 plus nothing else: the 10th/90th percentiles are exactly 99.9 and 899.1
    image = np.arange(1000, dtype=np.float64).reshape(10, 10, 10)
    out = normalise_intensity(image, PreprocessingConfig("MRI", mri_percentiles=(10.0, 90.0)))
    clipped = np.clip(image, 99.9, 899.1)
    expected = (clipped - clipped.mean()) / clipped.std()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # every voxel at or below the low percentile gets the same (minimum) value
    assert np.all(out[image <= 99.9] == out.min())
    assert np.all(out[image >= 899.1] == out.max())


def test_normalise_mri_is_invariant_to_intensity_scale():
    # per-volume normalisation: a*x + b (a > 0) gives the same result, whatever the raw range
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, size=(9, 10, 11))
    cfg = PreprocessingConfig("MRI")
    ref = normalise_intensity(base, cfg)
    for a, b in ((1e2, 0.0), (1.7e6, 5.0), (3e-3, -2.0)):
        np.testing.assert_allclose(normalise_intensity(base * a + b, cfg), ref, atol=1e-4)


@pytest.mark.parametrize(
    "hu, expected",
    [(-3000, 0.0), (-1024, 0.0), (-1000, 0.0), (-500, 0.25), (0, 0.5), (40, 0.52), (1000, 1.0), (3000, 1.0)],
)
def test_normalise_ct_hand_values(hu, expected):
    image = np.full((2, 2, 2), hu, dtype=np.int16)
    image[0, 0, 0] = 0 if hu != 0 else 1  # not constant
    out = normalise_intensity(image, PreprocessingConfig("CT"))
    assert out.dtype == np.float32
    assert out[1, 1, 1] == pytest.approx(expected, abs=1e-7)
    assert out[0, 0, 0] == pytest.approx(0.5 if hu != 0 else 0.5005)


def test_normalise_ct_custom_window_matches_reference():
    image = np.random.default_rng(0).integers(-1200, 2000, size=(8, 9, 10)).astype(np.int16)
    cfg = PreprocessingConfig("ct", ct_window=(-160.0, 240.0))
    out = normalise_intensity(image, cfg)
    np.testing.assert_allclose(out, ref_ct(image, (-160.0, 240.0)), atol=1e-6)
    assert normalise_intensity(np.array([[[40.0, -160.0, 240.0]]]), cfg).tolist() == [[[0.5, 0.0, 1.0]]]


@pytest.mark.parametrize("modality", ["MRI", "CT"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_normalise_rejects_non_finite(modality, bad):
    image = np.random.default_rng(0).normal(size=(5, 5, 5))
    image[2, 3, 4] = bad
    with pytest.raises(ValueError, match="1 voxels"):
        normalise_intensity(image, PreprocessingConfig(modality))


@pytest.mark.parametrize("value", [0.0, 7.0, -3.5])
def test_normalise_mri_rejects_constant(value):
    with pytest.raises(ValueError, match="constant"):
        normalise_intensity(np.full((4, 4, 4), value), PreprocessingConfig("MRI"))


def test_normalise_ct_rejects_constant():
    with pytest.raises(ValueError):
        normalise_intensity(np.full((4, 4, 4), -1024, dtype=np.int16), PreprocessingConfig("CT"))


def test_preprocessing_config_validation_and_json():
    cfg = PreprocessingConfig("t2", ct_window=(-200, 300), mri_percentiles=(1, 99))
    assert cfg.modality == "MRI"
    assert PreprocessingConfig.from_json(cfg.to_json()) == cfg
    for kwargs in (
        {"ct_window": (100.0, 100.0)},
        {"ct_window": (200.0, -200.0)},
        {"mri_percentiles": (50.0, 50.0)},
        {"mri_percentiles": (-1.0, 99.0)},
        {"mri_percentiles": (1.0, 101.0)},
        {"orientation": "LPS"},
        {"modality": ""},
    ):
        with pytest.raises(ValueError):
            PreprocessingConfig(**kwargs)


# --- label_to_uint8 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, dtype, expected",
    [
        ([0, 1.0000001, 2], np.float32, [0, 1, 2]),
        ([0.0, 0.9999999, 1.9999], np.float64, [0, 1, 2]),
        ([-0.0001, 255.0004, 3.0], np.float32, [0, 255, 3]),
        ([0, 1, 2], np.uint8, [0, 1, 2]),
        ([0, 7, 255], np.int16, [0, 7, 255]),
        ([0, 1, 200], np.int64, [0, 1, 200]),
    ],
)
def test_label_to_uint8_accepts(values, dtype, expected):
    out = label_to_uint8(np.array(values, dtype=dtype))
    assert out.dtype == np.uint8
    assert out.tolist() == expected


@pytest.mark.parametrize(
    "values, dtype",
    [
        ([0, 1.5, 2], np.float32),
        ([0, 1.01], np.float64),
        ([0, -1.0], np.float32),
        ([0, -1], np.int16),
        ([0, 256], np.int16),
        ([0, 256.0], np.float32),
        ([0, 1000], np.uint16),
        ([0, np.nan], np.float32),
        ([0, np.inf], np.float64),
    ],
)
def test_label_to_uint8_rejects(values, dtype):
    with pytest.raises(ValueError):
        label_to_uint8(np.array(values, dtype=dtype))


# --- preprocess_case and the cache ---------------------------------------------------------------


def _write(path: Path, array: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _lps_affine(shape) -> np.ndarray:
    aff = np.diag([-1.0, -1.0, 2.0, 1.0])
    aff[0, 3] = shape[0] - 1
    aff[1, 3] = shape[1] - 1
    return aff


@pytest.fixture
def case_files(tmp_path: Path) -> tuple[Case, np.ndarray, np.ndarray]:
    """A labelled case stored LPS, with its RAS image (float64) and RAS label."""
    rng = np.random.default_rng(11)
    shape = (9, 8, 7)
    image_ras = rng.gamma(3.0, 100.0, size=shape).astype(np.float32)
    label_ras = rng.integers(0, 3, size=shape).astype(np.float32)  # float-stored labels
    label_ras[0, 0, 0] = 1.0000001  # float noise that must round away
    aff = _lps_affine(shape)
    img = _write(tmp_path / "raw" / "img.nii.gz", np.ascontiguousarray(image_ras[::-1, ::-1]), aff)
    lab = _write(tmp_path / "raw" / "lab.nii.gz", np.ascontiguousarray(label_ras[::-1, ::-1]), aff)
    return Case("c1", img, lab), image_ras, np.rint(label_ras).astype(np.uint8)


def _stat(p: Path) -> tuple[int, int]:
    s = p.stat()
    return s.st_ino, s.st_mtime_ns


def test_preprocess_case_writes_correct_entry(case_files, cache_dir: Path):
    case, image_ras, label_ras = case_files
    vol = preprocess_case(case, PreprocessingConfig("MRI"), cache_dir)
    assert isinstance(vol, PreprocessedVolume)
    assert vol.case_id == "c1" and vol.source == case.image and vol.source_label == case.label
    assert vol.image_path.parent == cache_dir and vol.image_path.suffix == ".npy" and vol.image_path.is_file()
    assert vol.label_path.parent == cache_dir and vol.label_path.is_file()
    assert vol.image_path.with_suffix(".json").is_file()
    assert vol.shape == (9, 8, 7) == vol.geometry.canonical_shape
    assert vol.geometry.axcodes == ("L", "P", "S")
    assert vol.geometry.spacing == (1.0, 1.0, 2.0)

    image = vol.image()
    np.testing.assert_allclose(image, ref_mri(image_ras), atol=1e-5)
    assert image.dtype == np.float32
    label = vol.label()
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, label_ras)
    assert vol.intensity_range == (float(image.min()), float(image.max()))
    # writes are atomic: no temporary files left behind
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]


def test_preprocessed_volume_is_read_only_memory_map(case_files, cache_dir: Path):
    case, _, _ = case_files
    vol = preprocess_case(case, PreprocessingConfig("MRI"), cache_dir)
    for arr in (vol.image(), vol.label()):
        assert isinstance(arr, np.memmap)
        assert arr.shape == vol.shape
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0, 0, 0] = 1
    # only paths travel: a pickled volume opens its own map and sees the same data
    clone = pickle.loads(pickle.dumps(vol))
    np.testing.assert_array_equal(clone.image(), vol.image())
    assert len(pickle.dumps(vol)) < 4000


def test_unlabelled_volume_label_raises(tmp_path: Path, cache_dir: Path):
    img = _write(tmp_path / "u.nii.gz", np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32))
    vol = preprocess_case(Case("u", img), PreprocessingConfig("MRI"), cache_dir)
    assert vol.label_path is None
    with pytest.raises(DataError) as exc:
        vol.label()
    assert exc.value.path == img


def test_second_call_reuses_cache(case_files, cache_dir: Path, monkeypatch):
    case, _, _ = case_files
    cfg = PreprocessingConfig("MRI")
    first = preprocess_case(case, cfg, cache_dir)
    files = sorted(cache_dir.iterdir())
    stats = {p: _stat(p) for p in files}
    time.sleep(0.01)

    def boom(*a, **k):
        raise AssertionError("load_image must not be called on a cache hit")

    monkeypatch.setattr(prep, "load_image", boom)
    second = preprocess_case(case, cfg, cache_dir)
    assert second == first
    assert sorted(cache_dir.iterdir()) == files
    assert {p: _stat(p) for p in files} == stats


def test_changed_setting_makes_new_entry(case_files, cache_dir: Path):
    case, image_ras, _ = case_files
    a = preprocess_case(case, PreprocessingConfig("MRI"), cache_dir)
    b = preprocess_case(case, PreprocessingConfig("MRI", mri_percentiles=(5.0, 95.0)), cache_dir)
    c = preprocess_case(case, PreprocessingConfig("CT"), cache_dir)
    assert len({a.image_path, b.image_path, c.image_path}) == 3
    np.testing.assert_allclose(b.image(), ref_mri(image_ras, (5.0, 95.0)), atol=1e-5)
    np.testing.assert_allclose(c.image(), ref_ct(image_ras), atol=1e-6)
    assert not np.allclose(a.image(), b.image())
    # the label does not depend on intensity settings
    assert a.label_path == b.label_path == c.label_path
    # going back to the first settings finds the first entry again, unchanged
    a2 = preprocess_case(case, PreprocessingConfig("MRI"), cache_dir)
    assert a2.image_path == a.image_path
    np.testing.assert_allclose(a2.image(), ref_mri(image_ras), atol=1e-5)


def test_changed_file_content_never_reuses_stale_entry(case_files, cache_dir: Path):
    case, image_ras, label_ras = case_files
    cfg = PreprocessingConfig("MRI")
    old = preprocess_case(case, cfg, cache_dir)
    # rewrite both files in place, same names, same geometry, new content
    new_image = np.ascontiguousarray(np.sqrt(image_ras)[::-1, ::-1]).astype(np.float32)
    new_label = np.ascontiguousarray((2 - label_ras)[::-1, ::-1])
    _write(case.image, new_image, _lps_affine(image_ras.shape))
    _write(case.label, new_label, _lps_affine(image_ras.shape))
    new = preprocess_case(case, cfg, cache_dir)
    assert new.image_path != old.image_path and new.label_path != old.label_path
    np.testing.assert_allclose(new.image(), ref_mri(np.sqrt(image_ras)), atol=1e-5)
    np.testing.assert_array_equal(new.label(), 2 - label_ras)


def test_cache_dir_created_and_default_used(case_files, tmp_path: Path, monkeypatch):
    case, _, _ = case_files
    target = tmp_path / "env-cache" / "nested"
    monkeypatch.setenv("VECTORPOSE_CACHE", str(target))
    vol = preprocess_case(case, PreprocessingConfig("MRI"))
    assert vol.image_path.parent == target and vol.image_path.is_file()


def test_default_cache_dir(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("VECTORPOSE_CACHE", str(tmp_path / "vp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "vp"
    monkeypatch.setenv("VECTORPOSE_CACHE", "")
    assert default_cache_dir() == tmp_path / "xdg" / "vectorpose"
    monkeypatch.delenv("VECTORPOSE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vectorpose"


def test_label_shape_mismatch(tmp_path: Path, cache_dir: Path):
    img = _write(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(6, 6, 6)).astype(np.float32))
    lab = _write(tmp_path / "lab.nii.gz", np.zeros((6, 6, 5), dtype=np.uint8))
    with pytest.raises(DataError) as exc:
        preprocess_case(Case("m", img, lab), PreprocessingConfig("MRI"), cache_dir)
    assert exc.value.path == lab
    assert str(lab) in str(exc.value) and "shape" in str(exc.value)


def test_label_affine_mismatch(tmp_path: Path, cache_dir: Path):
    img = _write(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(6, 6, 6)).astype(np.float32))
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    lab = _write(tmp_path / "lab.nii.gz", np.zeros((6, 6, 6), dtype=np.uint8), shifted)
    with pytest.raises(DataError) as exc:
        preprocess_case(Case("m", img, lab), PreprocessingConfig("MRI"), cache_dir)
    assert exc.value.path == lab
    assert "affine" in str(exc.value)


def test_non_integer_label_names_label_file(tmp_path: Path, cache_dir: Path):
    img = _write(tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(4, 4, 4)).astype(np.float32))
    lab_arr = np.zeros((4, 4, 4), dtype=np.float32)
    lab_arr[1, 1, 1] = 1.5
    lab = _write(tmp_path / "lab.nii.gz", lab_arr)
    with pytest.raises(DataError) as exc:
        preprocess_case(Case("m", img, lab), PreprocessingConfig("MRI"), cache_dir)
    assert exc.value.path == lab


@pytest.mark.parametrize("kind", ["nan", "constant"])
def test_bad_image_values_name_image_file(tmp_path: Path, cache_dir: Path, kind: str):
    arr = np.ones((4, 4, 4), dtype=np.float32)
    if kind == "nan":
        arr = np.random.default_rng(0).normal(size=(4, 4, 4)).astype(np.float32)
        arr[0, 1, 2] = np.nan
    img = _write(tmp_path / "img.nii.gz", arr)
    with pytest.raises(DataError) as exc:
        preprocess_case(Case("b", img), PreprocessingConfig("MRI"), cache_dir)
    assert exc.value.path == img
    assert not list(cache_dir.glob("*.npy"))


def test_mismatched_pair_detected_even_when_both_entries_cached(tmp_path: Path, cache_dir: Path):
    rng = np.random.default_rng(5)
    img1 = _write(tmp_path / "i1.nii.gz", rng.normal(size=(6, 6, 6)).astype(np.float32))
    lab1 = _write(tmp_path / "l1.nii.gz", np.zeros((6, 6, 6), dtype=np.uint8))
    img2 = _write(tmp_path / "i2.nii.gz", rng.normal(size=(5, 7, 6)).astype(np.float32))
    lab2 = _write(tmp_path / "l2.nii.gz", np.zeros((5, 7, 6), dtype=np.uint8))
    cfg = PreprocessingConfig("MRI")
    preprocess_case(Case("one", img1, lab1), cfg, cache_dir)
    preprocess_case(Case("two", img2, lab2), cfg, cache_dir)
    # dataset.json edited so that case one now points at case two's label: shapes disagree
    with pytest.raises(DataError):
        preprocess_case(Case("one", img1, lab2), cfg, cache_dir)


def test_missing_image_raises_data_error(tmp_path: Path, cache_dir: Path):
    with pytest.raises(DataError):
        preprocess_case(Case("gone", tmp_path / "gone.nii.gz"), PreprocessingConfig("MRI"), cache_dir)


# --- preprocess_dataset ------------------------------------------------------------------------


@pytest.fixture
def mixed_dataset(tmp_path: Path) -> tuple[Dataset, dict[str, Path]]:
    rng = np.random.default_rng(9)
    root = tmp_path / "mixed"
    good_img = _write(root / "good.nii.gz", rng.normal(size=(5, 5, 5)).astype(np.float32))
    good_lab = _write(root / "good_lab.nii.gz", (rng.uniform(size=(5, 5, 5)) > 0.5).astype(np.uint8))
    good2 = _write(root / "good2.nii.gz", rng.normal(size=(4, 5, 6)).astype(np.float32))
    shape_img = _write(root / "shape.nii.gz", rng.normal(size=(5, 5, 5)).astype(np.float32))
    shape_lab = _write(root / "shape_lab.nii.gz", np.zeros((5, 5, 4), dtype=np.uint8))
    nan = rng.normal(size=(5, 5, 5)).astype(np.float32)
    nan[1, 2, 3] = np.nan
    nan_img = _write(root / "nan.nii.gz", nan)
    broken = root / "broken.nii.gz"
    broken.write_bytes(good_img.read_bytes()[:40])
    cases = (
        Case("good", good_img, good_lab),
        Case("shape", shape_img, shape_lab),
        Case("good2", good2),
        Case("nan", nan_img),
        Case("broken", broken),
    )
    bad = {"shape": shape_lab, "nan": nan_img, "broken": broken}
    return Dataset(root=root, cases=cases, modality="MRI"), bad


def test_preprocess_dataset_collects_every_problem(mixed_dataset, cache_dir: Path):
    ds, bad = mixed_dataset
    with pytest.raises(DatasetError) as exc:
        preprocess_dataset(ds, PreprocessingConfig("MRI"), cache_dir)
    assert [p.path for p in exc.value.problems] == [bad["shape"], bad["nan"], bad["broken"]]
    for path in bad.values():
        assert str(path) in str(exc.value)


def test_preprocess_dataset_skip_bad(mixed_dataset, cache_dir: Path):
    ds, bad = mixed_dataset
    volumes, skipped = preprocess_dataset(ds, PreprocessingConfig("MRI"), cache_dir, skip_bad=True)
    assert [v.case_id for v in volumes] == ["good", "good2"]
    assert [p.path for p in skipped] == [bad["shape"], bad["nan"], bad["broken"]]
    assert volumes[0].label_path is not None and volumes[1].label_path is None
    for v in volumes:
        ref = ref_mri(load_nifti(v.source)[0])
        np.testing.assert_allclose(v.image(), ref, atol=1e-5)


def test_preprocess_dataset_nothing_usable(tmp_path: Path, cache_dir: Path):
    arr = np.zeros((3, 3, 3), dtype=np.float32)
    img = _write(tmp_path / "flat.nii.gz", arr)
    ds = Dataset(root=tmp_path, cases=(Case("flat", img),))
    with pytest.raises(DataError) as exc:
        preprocess_dataset(ds, PreprocessingConfig("MRI"), cache_dir, skip_bad=True)
    assert exc.value.path == tmp_path


def test_preprocess_synthetic_dataset(synthetic_dataset: Path, cache_dir: Path):
    ds = load_dataset(synthetic_dataset)
    volumes, skipped = preprocess_dataset(ds, PreprocessingConfig(ds.modality), cache_dir)
    assert skipped == [] and len(volumes) == 6
    for vol, case in zip(volumes, ds.cases):
        raw, geom = load_nifti(case.image)
        lab, _ = load_nifti(case.label)
        assert vol.geometry == geom
        np.testing.assert_allclose(vol.image(), ref_mri(raw), atol=1e-5)
        np.testing.assert_array_equal(vol.label(), lab)
        assert set(np.unique(vol.label())) == {0, 1, 2}


def test_preprocess_dataset_clears_only_day_old_temporaries(synthetic_dataset: Path, cache_dir: Path):
    """A killed run's leftover goes; one that a concurrent run may still be writing stays."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "digests").mkdir(exist_ok=True)
    old, fresh = cache_dir / "digests" / ".a.npy.x1.tmp", cache_dir / ".b.npy.x2.tmp"
    for p in (old, fresh):
        p.write_bytes(b"partial")
    day_and_a_bit = time.time() - prep.STALE_CACHE_TEMPORARY_S - 60
    os.utime(old, (day_and_a_bit, day_and_a_bit))
    preprocess_dataset(load_dataset(synthetic_dataset), PreprocessingConfig("MRI"), cache_dir)
    assert not old.exists() and fresh.read_bytes() == b"partial"


# --- real data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hippocampus_preprocessed(hippocampus: Path, tmp_path_factory):
    ds = load_dataset(hippocampus)
    cache = tmp_path_factory.mktemp("hippo-cache")
    volumes, skipped = preprocess_dataset(ds, PreprocessingConfig(ds.modality), cache)
    return ds, volumes, skipped


def test_hippocampus_all_cases_preprocess(hippocampus_preprocessed):
    ds, volumes, skipped = hippocampus_preprocessed
    assert skipped == []
    assert len(volumes) == len(ds.cases) == 208
    for vol, case in zip(volumes, ds.cases):
        assert vol.case_id == case.case_id
        image = np.asarray(vol.image())
        label = np.asarray(vol.label())
        assert image.dtype == np.float32
        assert np.isfinite(image).all()
        x = image.astype(np.float64)
        assert abs(x.mean()) < 1e-4, case.case_id
        assert abs(x.std() - 1.0) < 1e-4, case.case_id
        assert vol.intensity_range == (float(image.min()), float(image.max()))
        assert label.dtype == np.uint8
        assert set(np.unique(label).tolist()) == {0, 1, 2}, case.case_id
        assert image.shape == label.shape == vol.shape
        assert vol.geometry.shape == tuple(nib.load(case.label).shape)


def test_hippocampus_quirks_are_exercised(hippocampus_preprocessed):
    ds, volumes, _ = hippocampus_preprocessed
    image_dtypes = {c.case_id: nib.load(c.image).get_data_dtype() for c in ds.cases}
    label_dtypes = {c.case_id: nib.load(c.label).get_data_dtype() for c in ds.cases}
    uint8_images = [k for k, d in image_dtypes.items() if d == np.uint8]
    float_images = [k for k, d in image_dtypes.items() if d == np.float32]
    float_labels = [k for k, d in label_dtypes.items() if d.kind == "f"]
    assert uint8_images and float_images
    assert len(uint8_images) + len(float_images) == 208
    assert len(float_labels) == 2  # README: two label files stored as float32
    by_id = {v.case_id: v for v in volumes}
    cases = {c.case_id: c for c in ds.cases}
    # the float-stored labels round to the same integers the loader produced
    for cid in float_labels:
        raw, _ = load_nifti(cases[cid].label)
        assert raw.dtype.kind == "f"
        np.testing.assert_array_equal(by_id[cid].label(), np.rint(raw).astype(np.uint8))
    # the normalised images of both raw dtypes match the independent reference,
    # including the brightest and the dimmest volumes (maxima span four orders of magnitude)
    maxima = {c.case_id: float(np.max(np.asanyarray(nib.load(c.image).dataobj))) for c in ds.cases}
    assert max(maxima.values()) > 1e6 and min(maxima.values()) < 1e3
    picks = {uint8_images[0], float_images[0], max(maxima, key=maxima.get), min(maxima, key=maxima.get), *float_labels}
    for cid in picks:
        raw, _ = load_nifti(cases[cid].image)
        np.testing.assert_allclose(by_id[cid].image(), ref_mri(raw), atol=2e-5)


def test_ct_example_window(tmp_path: Path):
    if not CT_EXAMPLE.is_file():
        pytest.skip(f"CT example not found at {CT_EXAMPLE}")
    raw, geom = load_nifti(CT_EXAMPLE)
    assert raw.dtype == np.int16
    vol = preprocess_case(Case("ct", CT_EXAMPLE), PreprocessingConfig("CT"), tmp_path / "cache")
    image = np.asarray(vol.image())
    assert image.shape == raw.shape == geom.canonical_shape
    assert image.min() >= 0.0 and image.max() <= 1.0
    air = raw < -1000
    assert air.any() and (raw > 1000).any()
    assert np.all(image[air] == 0.0)
    assert np.all(image[raw > 1000] == 1.0)
    np.testing.assert_allclose(image, ref_ct(raw), atol=1e-6)
    assert vol.intensity_range == (0.0, 1.0)


def test_unchanged_file_is_not_read_again(case_files, cache_dir: Path, monkeypatch):
    """The digest of a file seen before (same path, size, inode and times) is remembered."""
    case, _, _ = case_files
    cfg = PreprocessingConfig("MRI")
    first = preprocess_case(case, cfg, cache_dir)

    def boom(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(prep, "file_digest", boom)
    assert preprocess_case(case, cfg, cache_dir) == first


def test_rewritten_file_is_read_again(case_files, cache_dir: Path, monkeypatch):
    """Writing a file, even with the same bytes and its old modification time, makes its digest be recomputed."""
    case, _, _ = case_files
    cfg = PreprocessingConfig("MRI")
    first = preprocess_case(case, cfg, cache_dir)
    before = case.image.stat()
    time.sleep(0.01)
    case.image.write_bytes(case.image.read_bytes())
    os.utime(case.image, ns=(before.st_atime_ns, before.st_mtime_ns))
    read = []
    real = prep.file_digest
    monkeypatch.setattr(prep, "file_digest", lambda path: read.append(path) or real(path))
    assert preprocess_case(case, cfg, cache_dir) == first  # same bytes, same entry
    assert read == [case.image]


@pytest.mark.parametrize("present", [(0, 1, 2), (0, 2), (0, 7, 200)])
def test_label_values_are_recorded_once_and_kept(present, tmp_path: Path, cache_dir: Path):
    """The values a label map holds, found when it is cached, come back on a cache hit; an entry from
    before they were recorded is rebuilt."""
    shape = (6, 5, 4)
    label = np.resize(np.asarray(present, dtype=np.uint8), shape)
    case = Case("v", _write(tmp_path / "i.nii.gz", np.random.default_rng(0).random(shape).astype(np.float32)),
                _write(tmp_path / "l.nii.gz", label))
    cfg = PreprocessingConfig("MRI")
    first = preprocess_case(case, cfg, cache_dir)
    assert first.label_values == tuple(np.unique(label).tolist()) == present
    assert preprocess_case(case, cfg, cache_dir).label_values == present
    sidecar = first.label_path.with_suffix(".json")
    old = json.loads(sidecar.read_text(encoding="utf-8"))
    del old["values"]
    sidecar.write_text(json.dumps(old))
    assert preprocess_case(case, cfg, cache_dir).label_values == present
    assert "values" in json.loads(sidecar.read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["dicom", ".mhd", ".nhdr"])
def test_scans_of_several_files_are_keyed_by_every_file(kind, tmp_path: Path, cache_dir: Path):
    """A DICOM series or a detached header is cached by the bytes of all its files: changing one slice
    or the data file (not the header) gives a new entry, and an unchanged scan reuses its entry."""
    from scan_formats import write_dicom_series, write_scan

    array = np.random.default_rng(0).integers(0, 500, (8, 9, 5)).astype(np.int16)
    changed = array.copy()
    changed[:, :, 4] += 7  # only the last slice / the data, never the header
    if kind == "dicom":
        def make(a):
            return write_dicom_series(tmp_path / "series", a)
    else:
        def make(a):
            return write_scan(tmp_path / f"scan{kind}", a, np.eye(4), compress=False)
    cfg = PreprocessingConfig("MRI")
    source = make(array)
    first = preprocess_case(Case("s", source), cfg, cache_dir)
    assert preprocess_case(Case("s", source), cfg, cache_dir).image_path == first.image_path
    time.sleep(0.01)
    header = source.read_bytes() if source.is_file() else None
    make(changed)
    if header is not None:
        assert source.read_bytes() == header
    second = preprocess_case(Case("s", source), cfg, cache_dir)
    assert second.image_path != first.image_path
    np.testing.assert_allclose(second.image(), normalise_intensity(load_image(source)[0], cfg))
