"""Seeded synthetic 3D "bodies" written as a Medical Segmentation Decathlon style dataset.

This is the built-in default data for the demo and the fast tests, so it has to run anywhere
in seconds with no download. It is not noise: every case is an elliptic-cylinder body lying
along the superior axis with a bright spine behind its centre and two labelled organs in
anatomically consistent places (left organ on the patient's left and a bit superior, right
organ on the right and a bit inferior). That spatial structure gives Vector Prediction
(predicting a crop's position, scale and orientation relative to the body's central axis)
something real to learn, and the two organ labels give the segmentation fine-tuning stage a
target. Per-case shapes, intensities, bias fields, global scales and on-disk orientations
vary so that loaders and normalisation are exercised as they would be on real MRI.
"""

from __future__ import annotations

import json
import operator
import os
import pathlib
import secrets
import shutil

import nibabel as nib
import numpy as np

SPACING = (1.0, 1.0, 1.5)
LABELS = {"0": "background", "1": "left organ", "2": "right organ"}

_MAX_ORGAN_DRAWS = 1000


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed so it is unique)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid(
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    semi_axes: np.ndarray,
    rotation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (mask, halo) of a rotated ellipsoid; the halo is one voxel larger all round."""
    offsets = [axis - c for axis, c in zip(grid, centre)]
    # Coordinates in the ellipsoid's own frame: q_i = sum_j R[j, i] * offset_j.
    local = [sum(rotation[j, i] * offsets[j] for j in range(3)) for i in range(3)]
    inside = sum((q / a) ** 2 for q, a in zip(local, semi_axes))
    halo = sum((q / (a + 1.0)) ** 2 for q, a in zip(local, semi_axes))
    return inside <= 1.0, halo <= 1.0


def synthetic_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic body as (image float32, label uint8) in canonical RAS voxel order.

    Array axis 0 increases toward the patient's right (RAS +x), axis 1 toward anterior (+y) and
    axis 2 toward superior (+z, the body's long axis). Labels: 0 background, 1 left organ (lower
    x index), 2 right organ (higher x index). Background voxels of the image are exactly 0.
    """
    shape = (int(rng.integers(40, 53)), int(rng.integers(40, 53)), int(rng.integers(36, 49)))
    nx, ny, nz = shape
    x = np.arange(nx, dtype=np.float64)[:, None, None]
    y = np.arange(ny, dtype=np.float64)[None, :, None]
    z = np.arange(nz, dtype=np.float64)[None, None, :]

    # Body: elliptic cylinder along z, near the in-plane centre, maybe stopping short of the ends.
    cx = (nx - 1) / 2 + rng.uniform(-2.0, 2.0)
    cy = (ny - 1) / 2 + rng.uniform(-2.0, 2.0)
    ax = rng.uniform(0.35, 0.45) * nx
    ay = rng.uniform(0.35, 0.45) * ny
    z0 = int(rng.integers(0, 4))
    z1 = nz - int(rng.integers(0, 4))
    in_slab = (z >= z0) & (z < z1)
    body = (((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0) & in_slab

    # Spine: bright tube posterior (low y) of the body centre, as long as the body.
    spine_y = cy - rng.uniform(0.55, 0.7) * ay
    spine_r = rng.uniform(2.0, 3.0)
    spine = ((x - cx) ** 2 + (y - spine_y) ** 2 <= spine_r**2) & in_slab

    # Organs: a left one (low x, a bit superior) and a right one (high x, a bit inferior).
    # Capping the semi-axes by the lateral offset makes a valid draw likely; the loop below
    # still rejects any draw that leaves the body or touches the spine or the other organ.
    lateral = 0.5 * ax
    z_mid = (z0 + z1 - 1) / 2
    z_shift = 0.15 * (z1 - z0)
    max_semi = min(7.0, lateral - 2.5)
    grid = (x, y, z)
    for _ in range(_MAX_ORGAN_DRAWS):
        organs = []
        for side in (-1.0, 1.0):  # -1: left organ (label 1), +1: right organ (label 2)
            centre = np.array([cx + side * lateral, cy + 0.1 * ay, z_mid - side * z_shift])
            centre += rng.uniform(-2.0, 2.0, size=3)
            semi_axes = rng.uniform(3.0, max_semi, size=3)
            organs.append(_ellipsoid(grid, centre, semi_axes, _random_rotation(rng)))
        (left, left_halo), (right, right_halo) = organs
        contained = not (left_halo & ~body).any() and not (right_halo & ~body).any()
        apart = not (left_halo & (right | spine)).any() and not (right_halo & spine).any()
        if contained and apart:
            break
    else:
        raise RuntimeError(f"could not place non-overlapping organs in a body of shape {shape}")

    label = np.zeros(shape, dtype=np.uint8)
    label[left] = 1
    label[right] = 2

    # Tissue classes get distinct means: organs 0.15-0.3 above tissue, spine above every organ.
    tissue_mean = rng.uniform(0.3, 0.45)
    left_mean, right_mean = tissue_mean + rng.uniform(0.15, 0.3, size=2)
    spine_mean = rng.uniform(0.9, 1.1)
    signal = np.where(body, tissue_mean, 0.0)
    signal[spine] = spine_mean
    signal[left] = left_mean
    signal[right] = right_mean

    # Smooth multiplicative bias: exp of a random quadratic in coordinates scaled to [-1, 1].
    u = (x - (nx - 1) / 2) / (nx / 2)
    v = (y - (ny - 1) / 2) / (ny / 2)
    w = (z - (nz - 1) / 2) / (nz / 2)
    terms = (u, v, w, u * v, v * w, u * w, u * u, v * v, w * w)
    coefficients = rng.uniform(-0.1, 0.1, size=len(terms))
    log_bias = sum(c * t for c, t in zip(coefficients, terms))

    noise_sigma = rng.uniform(0.02, 0.05)
    noise = rng.normal(0.0, noise_sigma, size=shape)
    # MRI intensities are in arbitrary units, so the whole case gets a random scale.
    scale = 10.0 ** rng.uniform(1.0, 4.0)
    image = np.where(body, signal * np.exp(log_bias) + noise, 0.0) * scale
    return image.astype(np.float32), label


def _affines(shape: tuple[int, ...], lps: bool) -> np.ndarray:
    """Affine of the stored array: RAS diagonal centred on the origin, or its LPS-flipped twin."""
    ras = np.diag([*SPACING, 1.0])
    ras[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(SPACING)
    if not lps:
        return ras
    # Stored index i' = n - 1 - i on axes 0 and 1; composing with that flip keeps world coords.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = shape[0] - 1
    flip[1, 3] = shape[1] - 1
    return ras @ flip


def _write_case(images: pathlib.Path, labels: pathlib.Path, name: str, index: int,
                rng: np.random.Generator) -> None:
    image, label = synthetic_case(rng)
    lps = index % 3 == 1  # every third case is stored LPS to exercise reorientation in loaders
    affine = _affines(image.shape, lps)
    if lps:
        image = np.ascontiguousarray(image[::-1, ::-1, :])
        label = np.ascontiguousarray(label[::-1, ::-1, :])
    for folder, array in ((images, image), (labels, label)):
        nifti = nib.Nifti1Image(array, affine)
        nifti.header.set_xyzt_units("mm")
        nib.save(nifti, folder / f"{name}.nii.gz")


def make_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    num_cases: int = 20,
    seed: int = 0,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write ``num_cases`` synthetic bodies as an MSD-style dataset folder and return its path.

    Case ``i`` is ``synthetic_case(np.random.default_rng([seed, i]))``, so a case does not depend
    on how many others are generated. Cases with ``i % 3 == 1`` are stored in LPS orientation;
    ``nibabel.as_closest_canonical`` restores exactly the RAS arrays. The folder is built next
    to ``out_dir`` and renamed into place at the end, so a half-written dataset never appears.

    Raises:
        ValueError: ``num_cases`` is below 1.
        FileExistsError: ``out_dir`` exists and is not an empty folder, and ``overwrite`` is False.
    """
    num_cases = operator.index(num_cases)
    if num_cases < 1:
        raise ValueError(f"num_cases must be at least 1, got {num_cases}")
    out_dir = pathlib.Path(out_dir)
    occupied = out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir()))
    if occupied and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty (pass overwrite=True)")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        images, labels = tmp / "imagesTr", tmp / "labelsTr"
        images.mkdir()
        labels.mkdir()
        names = [f"synth_{i:03d}" for i in range(num_cases)]
        for i, name in enumerate(names):
            _write_case(images, labels, name, i, np.random.default_rng([seed, i]))
        manifest = {
            "name": "VectorPOSE synthetic bodies",
            "description": (
                "Seeded synthetic elliptic-cylinder bodies with a posterior spine and left/right "
                f"organs (seed {seed}); spacing {SPACING} mm; every third case stored LPS."
            ),
            "tensorImageSize": "3D",
            "modality": {"0": "MRI"},
            "labels": LABELS,
            "numTraining": num_cases,
            "numTest": 0,
            "training": [
                {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                for n in names
            ],
            "test": [],
        }
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        # Only now, with the new dataset complete, is the old one removed.
        if out_dir.is_dir():
            shutil.rmtree(out_dir)
        elif out_dir.exists():
            out_dir.unlink()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
