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


def load_nifti(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Read a 3D NIfTI file and return its array in RAS+ order and its geometry.

    Returns ``(array, geometry)`` with ``array`` of shape ``geometry.canonical_shape`` in the file's
    own dtype. A 4D file is accepted only when its extra dimensions have size 1.

    Raises:
        DataError: the file is missing, unreadable, truncated, not NIfTI or not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError:
        raise DataError(path, "not a NIfTI image") from None
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(path, f"unreadable image ({exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image ({type(img).__name__})")
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
