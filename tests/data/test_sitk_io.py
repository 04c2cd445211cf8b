"""NRRD, MetaImage and DICOM volumes read through SimpleITK land on the same RAS+ array and geometry
as the NIfTI file of the same volume, and label maps go back onto the input's own grid.

The references are independent of the library: the NIfTI path (nibabel), a hand-written RAS -> LPS
conversion (``scan_formats.py``) and SimpleITK's own index -> physical point mapping.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import HIPPOCAMPUS, SHARED_DATA
from scan_formats import convert_nifti, write_dicom_series, write_scan
from vectorpose.data.io import load_image, save_label_map, scan_files
from vectorpose.errors import DataError

from test_io import RAS_SHAPE, _ras_affine, _ras_array, store_in_orientation

FORMATS = [".nrrd", ".mha", ".nhdr", ".mhd"]
DICOM = SHARED_DATA / "dicom_hippocampus_crops"


def assert_same_volume(a: tuple, b: tuple) -> None:
    (array_a, geom_a), (array_b, geom_b) = a, b
    assert array_a.dtype == array_b.dtype
    np.testing.assert_array_equal(array_a, array_b)
    assert geom_a == geom_b, (geom_a, geom_b)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("case", ["hippocampus_003", "hippocampus_150"])
def test_real_case_reads_exactly_as_its_nifti(hippocampus, case, suffix, tmp_path):
    for folder in ("imagesTr", "labelsTr"):
        nifti = hippocampus / folder / f"{case}.nii.gz"
        converted = convert_nifti(nifti, tmp_path / folder / f"{case}{suffix}")
        assert_same_volume(load_image(converted), load_image(nifti))


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("codes", ["LPS", "PSR", "ILA", "RAS"])
@pytest.mark.parametrize("rotation", [0.0, 12.0])
def test_any_orientation_reads_as_its_nifti(tmp_path, suffix, codes, rotation):
    stored, affine = store_in_orientation(_ras_array(np.int16), _ras_affine(rotation_deg=rotation), codes)
    nifti = write_scan(tmp_path / "v.nii.gz", stored, affine)
    other = write_scan(tmp_path / f"v{suffix}", stored, affine)
    a, ga = load_image(other)
    b, gb = load_image(nifti)
    np.testing.assert_array_equal(a, b)
    assert a.shape == RAS_SHAPE and ga.axcodes == tuple(codes) == gb.axcodes
    # NIfTI keeps its affine in float32, the ITK formats in float64
    np.testing.assert_allclose(ga.affine, gb.affine, atol=1e-5)
    np.testing.assert_allclose(ga.canonical_affine, gb.canonical_affine, atol=1e-5)
    np.testing.assert_allclose(ga.spacing, gb.spacing, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_affine_agrees_with_simpleitk_physical_points(tmp_path, suffix):
    """Every corner voxel maps to SimpleITK's own physical point, with x and y negated (LPS -> RAS)."""
    import SimpleITK as sitk

    stored, affine = store_in_orientation(_ras_array(), _ras_affine(rotation_deg=20.0), "PSR")
    path = write_scan(tmp_path / f"v{suffix}", stored, affine)
    reference = sitk.ReadImage(str(path))
    _, geometry = load_image(path)
    for index in np.ndindex(2, 2, 2):
        corner = [int(i * (s - 1)) for i, s in zip(index, stored.shape)]
        lps = np.asarray(reference.TransformIndexToPhysicalPoint(corner))
        ras = np.asarray(geometry.affine) @ np.array([*corner, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
@pytest.mark.parametrize("codes", ["LPS", "PSR", "RAS"])
def test_label_map_goes_back_onto_the_input_grid(tmp_path, suffix, codes):
    import SimpleITK as sitk

    ras = (_ras_array(np.int64) % 3).astype(np.uint8)
    stored, affine = store_in_orientation(ras, _ras_affine(rotation_deg=7.0), codes)
    source = write_scan(tmp_path / f"scan{suffix}", stored.astype(np.float32), affine)
    canonical, geometry = load_image(source)
    written = save_label_map(tmp_path / f"labels{suffix}", canonical.astype(np.uint8), geometry)
    out, ref = sitk.ReadImage(str(written)), sitk.ReadImage(str(source))
    assert out.GetPixelID() == sitk.sitkUInt8
    assert out.GetSize() == ref.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), rtol=1e-12)
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(ref).astype(np.uint8))


def test_detached_headers_count_their_data_files(tmp_path):
    mhd = write_scan(tmp_path / "a.mhd", _ras_array(), np.eye(4))
    nhdr = write_scan(tmp_path / "b.nhdr", _ras_array(), np.eye(4))
    assert [p.name for p in scan_files(mhd)] == ["a.mhd", "a.zraw"]
    assert [p.name for p in scan_files(nhdr)] == ["b.nhdr", "b.raw.gz"]
    assert scan_files(write_scan(tmp_path / "c.nrrd", _ras_array(), np.eye(4))) == [tmp_path / "c.nrrd"]


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is a text file, not an image\n" * 40)


def _truncated(path: Path) -> None:
    write_scan(path, np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4), compress=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flat(path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.ones((6, 7), np.float32)), str(path))


def _vector(path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6, 3), np.float32), isVector=True), str(path))


def _four_d(path: Path) -> None:
    import SimpleITK as sitk

    volume = sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path))


def _no_data_file(path: Path) -> None:
    write_scan(path, _ras_array(), np.eye(4))
    for data in scan_files(path)[1:]:
        data.unlink()


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
@pytest.mark.parametrize("make, needle", [(_garbage, "not a {fmt} image"), (_truncated, "unreadable image data"),
                                          (_flat, "expected a 3D image, got 2D with shape (7, 6)"),
                                          (_four_d, "expected a 3D image, got 4D with shape (6, 5, 4, 2)"),
                                          (_vector, "expected a single-channel image, got 3 components")])
def test_bad_files_raise_one_data_error(tmp_path, suffix, make, needle):
    path = tmp_path / f"bad{suffix}"
    make(path)
    with pytest.raises(DataError) as exc:
        load_image(path)
    assert exc.value.path == path
    assert needle.format(fmt={".nrrd": "NRRD", ".mha": "MetaImage"}[suffix]) in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_missing_detached_data_is_unreadable(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    _no_data_file(path)
    with pytest.raises(DataError, match=r"its data file .*bad\.(raw\.gz|zraw) is not found") as exc:
        load_image(path)
    assert exc.value.path == path


def test_written_dicom_series_reads_as_its_array(tmp_path):
    array = (np.arange(6 * 7 * 5).reshape(6, 7, 5) % 1000).astype(np.int16)
    folder = write_dicom_series(tmp_path / "series", array, spacing=(0.5, 0.75, 2.0))
    canonical, geometry = load_image(folder)
    # axial slices, rows along +y and columns along +x in LPS: stored as L, P, S
    assert geometry.axcodes == ("L", "P", "S")
    np.testing.assert_array_equal(canonical, array[::-1, ::-1, :])
    np.testing.assert_allclose(geometry.spacing, (0.5, 0.75, 2.0), rtol=1e-6)


@pytest.mark.skipif(not DICOM.is_dir(), reason="DICOM data absent")
def test_real_dicom_series_geometry_is_simpleitks():
    import SimpleITK as sitk

    folder = DICOM / "Study1" / "13_HCropVolume"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    canonical, geometry = load_image(folder)
    stored = np.transpose(sitk.GetArrayFromImage(reference), (2, 1, 0))
    assert geometry.shape == stored.shape and canonical.dtype == stored.dtype
    for corner in [(0, 0, 0), tuple(s - 1 for s in stored.shape)]:
        lps = np.asarray(reference.TransformIndexToPhysicalPoint([int(c) for c in corner]))
        np.testing.assert_allclose((np.asarray(geometry.affine) @ [*corner, 1.0])[:3], lps * [-1, -1, 1], atol=1e-6)
    assert len(scan_files(folder)) == len(list(folder.iterdir()))
