"""Reading NIfTI volumes into one canonical orientation while keeping their native geometry.

Every volume is brought to RAS+ voxel order (index along array axis 0 grows towards the patient's
right, axis 1 towards anterior, axis 2 towards superior) with ``nibabel.as_closest_canonical``, so
that array axis 2 is the body's longitudinal axis, as the VectorPOSE anchor needs. The original
affine, shape and axis codes are kept in :class:`ImageGeometry` so that outputs can be written back in
the input's own space.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES) and not name.startswith(".")


@dataclass(frozen=True)
class ImageGeometry:
    """Where a volume's voxels lie, before and after canonical reorientation.

    ``affine``/``shape``/``axcodes`` describe the file as stored; ``canonical_affine`` and
    ``canonical_shape`` the RAS+ array the library works on; ``spacing`` is in mm per canonical axis.
    """

    affine: tuple[tuple[float, ...], ...]
    shape: tuple[int, int, int]
    axcodes: tuple[str, str, str]
    canonical_affine: tuple[tuple[float, ...], ...]
    canonical_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def to_json(self) -> dict:
        return {
            "affine": [list(r) for r in self.affine],
            "shape": list(self.shape),
            "axcodes": list(self.axcodes),
            "canonical_affine": [list(r) for r in self.canonical_affine],
            "canonical_shape": list(self.canonical_shape),
            "spacing": list(self.spacing),
        }

    @classmethod
    def from_json(cls, d: dict) -> ImageGeometry:
        return cls(
            affine=tuple(tuple(float(v) for v in r) for r in d["affine"]),
            shape=tuple(int(v) for v in d["shape"]),
            axcodes=tuple(str(v) for v in d["axcodes"]),
            canonical_affine=tuple(tuple(float(v) for v in r) for r in d["canonical_affine"]),
            canonical_shape=tuple(int(v) for v in d["canonical_shape"]),
            spacing=tuple(float(v) for v in d["spacing"]),
        )


def _as_tuple_matrix(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(a, dtype=np.float64))


def _read_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError:
        raise DataError(path, "not a NIfTI image") from None
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(path, f"unreadable image ({exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image ({type(img).__name__})")
    return img


def read_dicom_series(folder: Path) -> nib.Nifti1Image:
    """Read the one DICOM series in ``folder`` (SimpleITK) as an in-memory NIfTI image.

    DICOM geometry is LPS; the NIfTI affine is RAS, so the first two world axes change sign.

    Raises:
        DataError: no DICOM series, several series (named), or unreadable slices.
    """
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(folder, "no DICOM series found in this folder")
    if len(series) > 1:
        raise DataError(folder, f"{len(series)} DICOM series in one folder ({', '.join(series)}); give one series folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(folder, f"unreadable DICOM series ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(folder, f"expected a 3D single-channel series, got {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} components")
    # SimpleITK arrays are (z, y, x); NIfTI arrays are (i, j, k) = (x, y, z)
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return nib.Nifti1Image(array, affine)


def read_image(path: str | Path) -> nib.spatialimages.SpatialImage:
    """A NIfTI file or a DICOM series folder, as a nibabel image in its stored orientation."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    return _read_nifti(path)


def to_canonical(img: nib.spatialimages.SpatialImage, path: Path) -> tuple[np.ndarray, ImageGeometry]:
    """Bring ``img`` (read from ``path``) to RAS+ and describe its geometry; see :func:`load_image`."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        img = nib.Nifti1Image(np.asanyarray(img.dataobj).reshape(shape[:3]), img.affine, img.header)
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(path, f"expected a 3D image, got {len(shape)}D with shape {shape}")
    if min(shape) < 1:
        raise DataError(path, f"empty image of shape {shape}")
    try:
        canonical = nib.as_closest_canonical(img)
        array = np.asanyarray(canonical.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(path, f"unreadable image data ({exc})") from None
    geometry = ImageGeometry(
        affine=_as_tuple_matrix(img.affine),
        shape=shape,  # type: ignore[arg-type]
        axcodes=tuple(nib.aff2axcodes(img.affine)),  # type: ignore[arg-type]
        canonical_affine=_as_tuple_matrix(canonical.affine),
        canonical_shape=tuple(int(s) for s in array.shape),  # type: ignore[arg-type]
        spacing=tuple(float(z) for z in canonical.header.get_zooms()[:3]),  # type: ignore[arg-type]
    )
    return np.asarray(array), geometry


def load_image(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Read a 3D NIfTI file or DICOM series folder; return its RAS+ array and its geometry.

    Returns ``(array, geometry)`` with ``array`` of shape ``geometry.canonical_shape`` in the file's
    own dtype. A 4D image is accepted only when its extra dimensions have size 1.

    Raises:
        DataError: the path is missing, unreadable, truncated, not NIfTI/DICOM or not 3D.
    """
    path = Path(path)
    return to_canonical(read_image(path), path)


def load_nifti(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Like :func:`load_image`, for a NIfTI file only (a folder is refused)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    return to_canonical(_read_nifti(path), path)


def from_canonical(array: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """Undo the RAS+ reorientation: a canonical-order array back to the stored voxel order."""
    stored = nib.orientations.io_orientation(np.asarray(geometry.affine))
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    back = nib.orientations.apply_orientation(array, nib.orientations.ornt_transform(ras, stored))
    if tuple(back.shape) != geometry.shape:
        raise ValueError(f"array of shape {array.shape} does not fit geometry {geometry.canonical_shape}")
    return np.ascontiguousarray(back)


def save_label_map(path: str | Path, labels: np.ndarray, geometry: ImageGeometry, compressed: bool | None = None) -> Path:
    """Write a canonical-order uint8 label map as NIfTI in the input's own shape, affine and orientation.

    ``compressed`` (gzip) defaults to whether ``path`` ends in ``.gz``.
    """
    from ..utils.files import atomic_write

    stored = from_canonical(labels.astype(np.uint8), geometry)
    img = nib.Nifti1Image(stored, np.asarray(geometry.affine))
    img.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm")
    path = Path(path)
    suffix = ".nii.gz" if (path.name.lower().endswith(".gz") if compressed is None else compressed) else ".nii"

    def write(tmp: Path) -> None:
        # nibabel picks the format from the name, so it writes beside tmp under a NIfTI suffix
        staged = tmp.with_name(tmp.name + suffix)
        try:
            nib.save(img, str(staged))
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)

    return atomic_write(path, write)
