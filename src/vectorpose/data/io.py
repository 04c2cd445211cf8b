"""Reading scans into one canonical orientation while keeping their native geometry.

Scans are NIfTI files (nibabel), NRRD and MetaImage files and DICOM series folders (SimpleITK, see
:mod:`vectorpose.data.sitk_io`); every one is first read as a nibabel image whose affine maps voxel
indices to RAS world coordinates, so all formats share the steps below.

Every volume is brought to RAS+ voxel order (index along array axis 0 grows towards the patient's
right, axis 1 towards anterior, axis 2 towards superior) with ``nibabel.as_closest_canonical``, so
that array axis 2 is the body's longitudinal axis, as the VectorPOSE anchor needs. The original
affine, shape and axis codes are kept in :class:`ImageGeometry` so that outputs can be written back in
the input's own space.
"""

from __future__ import annotations

import contextlib
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import DataError
from .sitk_io import ITK_FORMATS, as_nifti, data_files, itk_suffix, read_itk_file, write_itk_label_map

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# every file a dataset folder may hold as one scan; DICOM series are folders
SCAN_SUFFIXES = NIFTI_SUFFIXES + tuple(ITK_FORMATS)
# what a label map is written as, for each input format (DICOM series: NIfTI)
LABEL_MAP_SUFFIX = {".nii": ".nii", ".nii.gz": ".nii.gz", ".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}
DICOM_SUFFIXES = (".dcm", ".ima")


def scan_suffix(path: Path) -> str | None:
    """The scan suffix of a file name (``.nii.gz``, ``.nrrd``, ...; lower case), or ``None``."""
    name = path.name.lower()
    if name.startswith("."):
        return None
    return next((s for s in sorted(SCAN_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def is_scan_file(path: Path) -> bool:
    """A NIfTI, NRRD or MetaImage file name (not hidden); a DICOM series is a folder instead."""
    return scan_suffix(path) is not None


def is_dicom_file(path: Path) -> bool:
    """A DICOM part-10 file (``DICM`` after the 128-byte preamble), or one named ``*.dcm`` / ``*.ima``."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if scan_suffix(path) is not None:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def holds_dicom(folder: Path) -> bool:
    """Whether ``folder`` itself (not its sub-folders) holds a DICOM file: it is then one case, a series."""
    try:
        return any(is_dicom_file(p) for p in folder.iterdir())
    except OSError:
        return False


def scan_files(path: Path) -> list[Path]:
    """The files whose bytes make up a scan, for content digests: the file (and a detached header's
    data files), or the non-hidden files of a DICOM series folder, sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return data_files(path)


def label_map_suffix(source: Path) -> str:
    """The suffix of the label map predicted for ``source``: its own format for NIfTI, NRRD and
    MetaImage files (``.nhdr`` -> ``.nrrd``, ``.mhd`` -> ``.mha``, single files), NIfTI (``.nii.gz``)
    for a DICOM series."""
    suffix = scan_suffix(source) if not source.is_dir() else None
    return LABEL_MAP_SUFFIX[suffix] if suffix else ".nii.gz"


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


# 1024³: 4 GiB as float32, beyond any single CT or MR scan; a larger claim is a damaged header
MAX_VOXELS = 1024**3


def _as_tuple_matrix(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(a, dtype=np.float64))


@contextlib.contextmanager
def _nibabel_quiet():
    """Silence nibabel's log of the header values it repairs while loading."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        with _nibabel_quiet():  # its header fixes are reported below, in one line of ours
            img = nib.load(str(path))
    except nib.filebasedimages.ImageFileError:
        raise DataError(path, "not a NIfTI image") from None
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(path, f"unreadable image ({exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image ({type(img).__name__})")
    # nibabel quietly sets a zero or negative voxel size to 1 or its absolute value; the file's own values decide here
    with nib.openers.ImageOpener(str(path)) as f:
        stored = type(img.header).from_fileobj(f, check=False)["pixdim"][1:4]
    if not all(math.isfinite(float(v)) and v > 0 for v in stored):
        raise DataError(path, f"voxel size {tuple(float(v) for v in stored)} in the header: every voxel size must be positive")
    return img


def read_dicom_series(folder: Path) -> nib.Nifti1Image:
    """Read the one DICOM series in ``folder`` (SimpleITK) as an in-memory NIfTI image.

    DICOM geometry is LPS; the NIfTI affine is RAS, so the first two world axes change sign
    (:func:`vectorpose.data.sitk_io.affine_from_sitk`).

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
    return as_nifti(image, folder)


def read_image(path: str | Path) -> nib.spatialimages.SpatialImage:
    """A NIfTI, NRRD or MetaImage file or a DICOM series folder, as a nibabel image in its stored
    orientation. The suffix chooses the reader; a file of any other name is read as NIfTI."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if itk_suffix(path) is not None:
        return read_itk_file(path)
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
    if math.prod(shape) > MAX_VOXELS:
        raise DataError(path, f"the header claims {shape} = {math.prod(shape):,} voxels, more than the {MAX_VOXELS:,} a scan may have; "
                              "is the header damaged?")
    # the header's voxel sizes and the affine's axis lengths (what reorientation uses) must both be real sizes
    axis_lengths = np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)
    for what, sizes in (("voxel size", img.header.get_zooms()[:3]), ("affine axis length", axis_lengths)):
        if not all(math.isfinite(float(v)) and v > 0 for v in sizes):
            raise DataError(path, f"{what} {tuple(round(float(v), 6) for v in sizes)} mm: every voxel size must be positive and finite")
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
    """Read a 3D NIfTI, NRRD or MetaImage file or a DICOM series folder; return its RAS+ array and its geometry.

    Returns ``(array, geometry)`` with ``array`` of shape ``geometry.canonical_shape`` in the file's
    own dtype. A 4D image is accepted only when its extra dimensions have size 1.

    Raises:
        DataError: the path is missing, unreadable, truncated, not of the format its suffix names
        (not NIfTI for other names), not a single DICOM series, or not 3D.
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


def save_label_map(path: str | Path, labels: np.ndarray, geometry: ImageGeometry, compressed: bool | None = None,
                   suffix: str | None = None) -> Path:
    """Write a canonical-order uint8 label map in the input's own shape, affine and orientation.

    ``suffix`` chooses the format: ``.nii.gz`` / ``.nii`` (NIfTI), ``.nrrd`` (NRRD) or ``.mha``
    (MetaImage, compressed); by default, the suffix of ``path``, NIfTI for any other name.
    ``compressed`` (gzip, NIfTI only) defaults to whether ``path`` ends in ``.gz``.
    """
    from ..utils.files import atomic_write

    stored = from_canonical(labels.astype(np.uint8), geometry)
    path = Path(path)
    if suffix is None:
        named = scan_suffix(path.with_name(path.name.lstrip(".")))
        suffix = LABEL_MAP_SUFFIX[named] if named else (".nii.gz" if path.name.lower().endswith(".gz") else ".nii")
    if suffix in (".nrrd", ".mha"):
        writer = lambda staged: write_itk_label_map(staged, stored, np.asarray(geometry.affine), suffix)  # noqa: E731
    elif suffix in NIFTI_SUFFIXES:
        img = nib.Nifti1Image(stored, np.asarray(geometry.affine))
        img.set_data_dtype(np.uint8)
        img.header.set_xyzt_units("mm")
        gz = suffix == ".nii.gz" if compressed is None else compressed
        suffix = ".nii.gz" if gz else ".nii"
        writer = lambda staged: nib.save(img, str(staged))  # noqa: E731
    else:
        raise ValueError(f"label maps are written as .nii.gz, .nii, .nrrd or .mha, not {suffix!r}")

    def write(tmp: Path) -> None:
        # nibabel and SimpleITK pick the format from the name, so they write beside tmp under its suffix
        staged = tmp.with_name(tmp.name + suffix)
        try:
            writer(staged)
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)

    return atomic_write(path, write)
