"""Writing a volume as NRRD, MetaImage or a DICOM series, for tests, independently of vectorpose.

The conversion from a NIfTI affine (RAS) to SimpleITK's spacing, origin and direction (LPS) is
written out here by hand, so tests compare the library's reading against it rather than against
itself: spacing is the length of each affine column, direction the columns divided by their lengths,
and both direction and origin change sign on the first two world axes.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def sitk_image(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of ``array`` (indexed ``(i, j, k)`` as in NIfTI) placed by the RAS ``affine``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.sqrt((columns ** 2).sum(axis=0))
    direction = columns / spacing
    direction[0, :] *= -1.0
    direction[1, :] *= -1.0
    origin = np.asarray(affine, dtype=np.float64)[:3, 3].copy()
    origin[0] *= -1.0
    origin[1] *= -1.0
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction.ravel()])
    return image


def write_scan(path: Path, array: np.ndarray, affine: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` with the RAS ``affine`` to ``path``; the suffix chooses the format (``.nrrd``,
    ``.nhdr``, ``.mha``, ``.mhd`` through SimpleITK; ``.nii`` / ``.nii.gz`` through nibabel)."""
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(array, affine), str(path))
    else:
        sitk.WriteImage(sitk_image(array, affine), str(path), compress)
    return path


def convert_nifti(source: Path, target: Path) -> Path:
    """Rewrite a NIfTI file in the format of ``target``'s suffix, from nibabel's array and affine."""
    img = nib.load(str(source))
    return write_scan(target, np.asanyarray(img.dataobj), img.affine)


def write_dicom_series(folder: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), uid: str = "1.2.826.0.1.3680043.2.1125.7") -> Path:
    """Write ``array`` (indexed ``(i, j, k)``, int16) as a stack of axial single-slice DICOM files."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array.astype(np.int16), (2, 1, 0))))
    volume.SetSpacing([float(s) for s in spacing])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array.shape[2]):
        image = volume[:, :, z]
        for tag, value in (("0020|000d", "1.2.826.0.1.3680043.2.1125.1"), ("0020|000e", uid), ("0008|0060", "MR"),
                           ("0020|0032", f"0\\0\\{z * spacing[2]}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(z + 1)),
                           ("0018|0050", str(spacing[2]))):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(image)
    return folder
