"""Tests for vectorpose.data.io: canonical (RAS+) loading, geometry bookkeeping, bad-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vectorpose.data.io import ImageGeometry, load_nifti, scan_suffix
from vectorpose.errors import DataError, VectorPoseError

RAS_SHAPE = (5, 6, 7)  # all different, so any axis permutation is visible
SPACING = (0.8, 1.5, 3.0)  # all different, so spacing must be permuted with the axes
ORIGIN = (-10.0, 20.0, 5.0)

# stored-axis code -> (RAS axis, flipped?)
_CODE = {"R": (0, False), "L": (0, True), "A": (1, False), "P": (1, True), "S": (2, False), "I": (2, True)}


def _ras_affine(rotation_deg: float = 0.0) -> np.ndarray:
    aff = np.diag([*SPACING, 1.0])
    aff[:3, 3] = ORIGIN
    if rotation_deg:
        t = np.deg2rad(rotation_deg)
        rot = np.eye(4)
        rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
        aff = rot @ aff
    return aff


def _ras_array(dtype=np.float32) -> np.ndarray:
    return np.arange(np.prod(RAS_SHAPE)).reshape(RAS_SHAPE).astype(dtype)


def store_in_orientation(ras: np.ndarray, ras_affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (stored array, stored affine) holding the same voxels as ``ras`` in axis order ``codes``.

    Stored voxel j maps to RAS voxel i = M @ j, with M built by hand from the codes, so the stored
    affine is ``ras_affine @ M`` and every voxel keeps its world position.
    """
    perm = [_CODE[c][0] for c in codes]
    assert sorted(perm) == [0, 1, 2]
    stored = np.transpose(ras, perm)
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for k, c in enumerate(codes):
        axis, flipped = _CODE[c]
        if flipped:
            stored = np.flip(stored, axis=k)
            m[axis, k] = -1.0
            m[axis, 3] = stored.shape[k] - 1
        else:
            m[axis, k] = 1.0
    return np.ascontiguousarray(stored), ras_affine @ m


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).T


def test_store_in_orientation_helper_keeps_world_positions():
    # Sanity check of the reference helper itself: the same value sits at the same world point.
    ras = _ras_array()
    stored, aff = store_in_orientation(ras, _ras_affine(), "PSR")
    w_ras = _world(_ras_affine(), ras.shape)
    w_stored = _world(aff, stored.shape)
    order_ras = np.lexsort(np.round(w_ras, 6).T)
    order_stored = np.lexsort(np.round(w_stored, 6).T)
    np.testing.assert_array_equal(ras.reshape(-1)[order_ras], stored.reshape(-1)[order_stored])
    assert stored.shape == (6, 7, 5)


ORIENTATIONS = ["RAS", "LPS", "LAS", "PSR", "ILA", "SRP", "LIP"]


@pytest.mark.parametrize("codes", ORIENTATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_load_nifti_returns_ras_array_and_geometry(tmp_path: Path, codes: str, dtype):
    ras = (_ras_array(np.int64) % 251).astype(dtype)
    stored, stored_aff = store_in_orientation(ras, _ras_affine(), codes)
    path = tmp_path / f"vol_{codes}.nii.gz"
    nib.save(nib.Nifti1Image(stored, stored_aff), path)

    array, geom = load_nifti(path)

    assert array.dtype == dtype
    np.testing.assert_array_equal(array, ras)
    assert geom.shape == stored.shape
    assert geom.axcodes == tuple(codes)
    np.testing.assert_allclose(np.array(geom.affine), stored_aff, atol=1e-5)
    assert geom.canonical_shape == RAS_SHAPE == array.shape
    np.testing.assert_allclose(np.array(geom.canonical_affine), _ras_affine(), atol=1e-5)
    np.testing.assert_allclose(geom.spacing, SPACING, rtol=1e-6)


@pytest.mark.parametrize("codes", ["LPS", "PSR"])
def test_load_nifti_matches_file_written_in_ras(tmp_path: Path, codes: str):
    ras = np.random.default_rng(1).normal(size=RAS_SHAPE).astype(np.float32)
    nib.save(nib.Nifti1Image(ras, _ras_affine()), tmp_path / "ras.nii.gz")
    stored, aff = store_in_orientation(ras, _ras_affine(), codes)
    nib.save(nib.Nifti1Image(stored, aff), tmp_path / "other.nii.gz")
    a, ga = load_nifti(tmp_path / "ras.nii.gz")
    b, gb = load_nifti(tmp_path / "other.nii.gz")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ga.canonical_affine, gb.canonical_affine, atol=1e-5)
    assert ga.spacing == pytest.approx(gb.spacing)
    assert ga.axcodes == ("R", "A", "S") and gb.axcodes == tuple(codes)


def test_load_nifti_slightly_oblique_affine_goes_to_closest_canonical(tmp_path: Path):
    ras = _ras_array()
    aff_rot = _ras_affine(rotation_deg=12.0)
    stored, aff = store_in_orientation(ras, aff_rot, "LPS")
    nib.save(nib.Nifti1Image(stored, aff), tmp_path / "oblique.nii.gz")
    array, geom = load_nifti(tmp_path / "oblique.nii.gz")
    np.testing.assert_array_equal(array, ras)
    np.testing.assert_allclose(np.array(geom.canonical_affine), aff_rot, atol=1e-5)
    np.testing.assert_allclose(geom.spacing, SPACING, rtol=1e-5)


@pytest.mark.parametrize("extra", [(1,), (1, 1)])
@pytest.mark.parametrize("image_cls", [nib.Nifti1Image, nib.Nifti2Image])
def test_load_nifti_accepts_trailing_singleton_dims(tmp_path: Path, extra, image_cls):
    ras = _ras_array()
    stored, aff = store_in_orientation(ras, _ras_affine(), "LPS")
    path = tmp_path / "vol4d.nii.gz"
    nib.save(image_cls(stored.reshape(stored.shape + extra), aff), path)
    array, geom = load_nifti(path)
    np.testing.assert_array_equal(array, ras)
    assert geom.shape == stored.shape
    assert geom.canonical_shape == RAS_SHAPE
    assert geom.axcodes == ("L", "P", "S")
    np.testing.assert_allclose(geom.spacing, SPACING, rtol=1e-6)


def test_load_nifti_applies_scaling_once_for_3d_and_4d(tmp_path: Path):
    # Float data stored as int16 makes nibabel write scl_slope/scl_inter; the 4D-singleton path
    # must not apply them twice.
    data = (np.random.default_rng(2).uniform(0, 100, size=RAS_SHAPE) * 0.37 + 3.0).astype(np.float32)
    for name, arr in (("s3.nii.gz", data), ("s4.nii.gz", data[..., None])):
        img = nib.Nifti1Image(arr, _ras_affine())
        img.set_data_dtype(np.int16)
        nib.save(img, tmp_path / name)
    expected = nib.load(tmp_path / "s3.nii.gz").get_fdata()
    assert not np.allclose(np.asanyarray(nib.load(tmp_path / "s3.nii.gz").dataobj.get_unscaled()), expected)
    a3, _ = load_nifti(tmp_path / "s3.nii.gz")
    a4, _ = load_nifti(tmp_path / "s4.nii.gz")
    np.testing.assert_allclose(a3, expected, rtol=1e-6)
    np.testing.assert_allclose(a4, expected, rtol=1e-6)
    np.testing.assert_allclose(a3, data, atol=0.05)


@pytest.mark.parametrize(
    "shape, ndim",
    [((8, 8), 2), ((8, 8, 8, 2), 4), ((8, 8, 8, 1, 3), 5)],
)
def test_load_nifti_rejects_non_3d(tmp_path: Path, shape, ndim):
    path = tmp_path / f"bad_{ndim}d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), np.eye(4)), path)
    with pytest.raises(DataError) as exc:
        load_nifti(path)
    assert exc.value.path == path
    assert str(path) in str(exc.value)
    assert f"{ndim}D" in str(exc.value)


def _valid_bytes(tmp_path: Path, suffix: str) -> bytes:
    src = tmp_path / f"valid{suffix}"
    data = np.random.default_rng(0).normal(size=(30, 30, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), src)
    return src.read_bytes()


@pytest.mark.parametrize(
    "name, make",
    [
        ("empty.nii.gz", lambda tp: b""),
        ("empty.nii", lambda tp: b""),
        ("garbage.nii.gz", lambda tp: bytes(range(256)) * 8),
        ("notes.nii.gz", lambda tp: b"this is a text file, not an image\n" * 40),
        ("notes.nii", lambda tp: b"this is a text file, not an image\n" * 40),
        ("picture.nii.gz", lambda tp: b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(600)),
        ("truncated.nii.gz", lambda tp: (lambda b: b[: len(b) // 2])(_valid_bytes(tp, ".nii.gz"))),
        ("truncated.nii", lambda tp: (lambda b: b[: len(b) // 2])(_valid_bytes(tp, ".nii"))),
        ("header_only.nii.gz", lambda tp: _valid_bytes(tp, ".nii.gz")[:120]),
    ],
)
def test_load_nifti_rejects_bad_files_with_data_error(tmp_path: Path, name, make):
    content = make(tmp_path)
    path = tmp_path / "case" / name
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        load_nifti(path)
    assert exc.value.path == path
    assert str(exc.value).startswith(str(path))


def test_truncated_file_is_really_truncated(tmp_path: Path):
    # the truncation case above must fail because of the cut, not because the source was bad
    full = _valid_bytes(tmp_path, ".nii.gz")
    path = tmp_path / "full.nii.gz"
    path.write_bytes(full)
    array, _ = load_nifti(path)
    assert array.shape == (30, 30, 30)


def test_load_nifti_missing_file(tmp_path: Path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(DataError) as exc:
        load_nifti(path)
    assert exc.value.path == path
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, VectorPoseError)


def test_load_nifti_directory_is_not_a_file(tmp_path: Path):
    d = tmp_path / "dir.nii.gz"
    d.mkdir()
    with pytest.raises(DataError):
        load_nifti(d)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PSR"])
def test_image_geometry_json_round_trip(tmp_path: Path, codes: str):
    stored, aff = store_in_orientation(_ras_array(), _ras_affine(rotation_deg=5.0), codes)
    path = tmp_path / "g.nii.gz"
    nib.save(nib.Nifti1Image(stored, aff), path)
    _, geom = load_nifti(path)
    text = json.dumps(geom.to_json())  # must be plain JSON
    back = ImageGeometry.from_json(json.loads(text))
    assert back == geom
    assert isinstance(back.shape, tuple) and isinstance(back.affine[0], tuple)


def test_image_geometry_from_json_hand_made():
    d = {
        "affine": [[-1, 0, 0, 3], [0, -2, 0, 4], [0, 0, 3, 5], [0, 0, 0, 1]],
        "shape": [4, 5, 6],
        "axcodes": ["L", "P", "S"],
        "canonical_affine": [[1, 0, 0, 0], [0, 2, 0, -4], [0, 0, 3, 5], [0, 0, 0, 1]],
        "canonical_shape": [4, 5, 6],
        "spacing": [1, 2, 3],
    }
    g = ImageGeometry.from_json(d)
    assert g.shape == (4, 5, 6) and g.axcodes == ("L", "P", "S") and g.spacing == (1.0, 2.0, 3.0)
    assert g.affine[1] == (0.0, -2.0, 0.0, 4.0)
    assert g.to_json() == d  # ints compare equal to the floats they became


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a.nii", ".nii"),
        ("a.nii.gz", ".nii.gz"),
        ("A.NII.GZ", ".nii.gz"),
        ("a.nrrd", ".nrrd"),
        ("a.MHD", ".mhd"),
        ("a.nii.gz.bak", None),
        ("a.txt", None),
        ("a.gz", None),
        (".hidden.nii.gz", None),
        ("dataset.json", None),
    ],
)
def test_scan_suffix(name, expected):
    assert scan_suffix(Path("/x") / name) == expected
