"""NRRD, MetaImage and DICOM volumes through SimpleITK, as nibabel images with a RAS affine.

SimpleITK (like ITK and DICOM) describes a volume in LPS world coordinates: the physical point of
voxel index ``(i, j, k)`` is ``origin + direction @ diag(spacing) @ (i, j, k)``, where the first
world axis grows towards the patient's left and the second towards posterior. A NIfTI affine maps
voxel indices to RAS world coordinates, so the conversion flips the sign of the first two world
axes, rows of the direction matrix and the origin alike:

    affine[:3, :3] = diag(-1, -1, 1) @ direction @ diag(spacing)
    affine[:3, 3]  = diag(-1, -1, 1) @ origin

SimpleITK's array is indexed ``(k, j, i)`` (slowest axis first); the nibabel array here is indexed
``(i, j, k)``, like the NIfTI file of the same volume. Writing a label map back inverts every step,
so a prediction lands on the input's own voxel grid, spacing, origin and direction.

Suffixes decide the format and the reader: ``.nrrd`` / ``.nhdr`` (NRRD, attached or detached data)
and ``.mha`` / ``.mhd`` (MetaImage, attached or detached data).
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import DataError

# suffix -> (SimpleITK ImageIO, format name)
ITK_FORMATS: dict[str, tuple[str, str]] = {
    ".nrrd": ("NrrdImageIO", "NRRD"),
    ".nhdr": ("NrrdImageIO", "NRRD"),
    ".mha": ("MetaImageIO", "MetaImage"),
    ".mhd": ("MetaImageIO", "MetaImage"),
}
# a detached header's data lives in other files, found through the header (see data_files)
DETACHED_HEADERS = (".nhdr", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def itk_suffix(path: Path) -> str | None:
    """The lower-case ITK suffix of ``path`` (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), else ``None``."""
    suffix = path.suffix.lower()
    return suffix if suffix in ITK_FORMATS else None


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def affine_from_sitk(image) -> np.ndarray:
    """The 4×4 RAS affine (voxel ``(i, j, k)`` -> RAS mm) of a 3D SimpleITK image; see the module docstring."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction * np.asarray(image.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return affine


def sitk_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` in SimpleITK's LPS terms for a 4×4 RAS affine (the inverse of
    :func:`affine_from_sitk`); ``direction`` is row-major, as ``SetDirection`` takes it."""
    affine = np.asarray(affine, dtype=np.float64)
    lps = LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing == 0):
        raise ValueError(f"affine has a zero-length voxel axis: {affine.tolist()}")
    direction = lps / spacing[None, :]
    origin = LPS_TO_RAS @ affine[:3, 3]
    return tuple(float(s) for s in spacing), tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel())


def as_nifti(image, path: Path) -> nib.Nifti1Image:
    """A scalar SimpleITK image of 3 dimensions (or 4 with a last size of 1) as an in-memory NIfTI image.

    Raises:
        DataError: vector pixels, or a volume that is not 3D (same wording as for NIfTI files).
    """
    import SimpleITK as sitk

    size = tuple(int(s) for s in image.GetSize())
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, f"expected a single-channel image, got {image.GetNumberOfComponentsPerPixel()} components per voxel")
    if len(size) == 4 and size[3] == 1:
        image = image[:, :, :, 0]
    elif len(size) != 3:
        raise DataError(path, f"expected a 3D image, got {len(size)}D with shape {size}")
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    return nib.Nifti1Image(array, affine_from_sitk(image))


def read_itk_file(path: Path) -> nib.Nifti1Image:
    """Read an NRRD or MetaImage file (by its suffix) as an in-memory NIfTI image in its stored order.

    Raises:
        DataError: the file is not of the format its suffix names, its data are missing or cut
        short, or it is not a 3D single-channel volume.
    """
    import SimpleITK as sitk

    io_name, format_name = ITK_FORMATS[itk_suffix(path) or ""]
    for data in data_files(path)[1:]:
        if not data.is_file():
            raise DataError(path, f"its data file {data} is not found")
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io_name)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(path, f"not a {format_name} image ({_last_line(exc)})") from None
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(path, f"unreadable image data ({_last_line(exc)})") from None
    return as_nifti(image, path)


def write_itk_label_map(path: Path, stored: np.ndarray, affine: np.ndarray, suffix: str) -> None:
    """Write a uint8 label map ``stored`` (indexed ``(i, j, k)``, in the stored voxel order of
    ``affine``) to ``path`` as NRRD (``suffix`` ``.nrrd``) or MetaImage (``.mha``), compressed."""
    import SimpleITK as sitk

    if suffix not in (".nrrd", ".mha"):
        raise ValueError(f"label maps are written as .nrrd or .mha (one file each), not {suffix!r}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(stored.astype(np.uint8), (2, 1, 0))))
    spacing, origin, direction = sitk_geometry(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(ITK_FORMATS[suffix][0])
    writer.SetFileName(str(path))
    writer.UseCompressionOn()
    try:
        writer.Execute(image)
    except RuntimeError as exc:
        raise OSError(f"SimpleITK could not write {path} ({_last_line(exc)})") from None


_DATA_FILE_KEY = {".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.*?)\s*$"),
                  ".nhdr": re.compile(r"^\s*data ?file\s*:\s*(.*?)\s*$", re.IGNORECASE)}


def data_files(path: Path) -> list[Path]:
    """The files whose bytes make up the volume of ``path``: the file itself, plus, for a detached
    header (``.nhdr``, ``.mhd``), the data files it names. A header that lists its files by pattern
    or ``LIST`` counts every file of its folder (a conservative answer, for cache keys)."""
    suffix = itk_suffix(path)
    if suffix not in DETACHED_HEADERS:
        return [path]
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return [path]
    for line in lines:
        if suffix == ".nhdr" and not line.strip():
            break  # the NRRD header ends at its first blank line
        match = _DATA_FILE_KEY[suffix].match(line)
        if not match:
            continue
        value = match.group(1)
        if value.upper() == "LOCAL":
            return [path]
        if "%" in value or value.upper().startswith("LIST") or " " in value:
            return [path, *sorted(p for p in path.parent.iterdir() if p.is_file() and p != path and not p.name.startswith("."))]
        return [path, path.parent / value]
    return [path]
