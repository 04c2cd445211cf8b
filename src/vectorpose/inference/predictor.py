"""A fine-tuned model ready for new scans: load, normalise as in training, predict, write back.

Preprocessing comes from the model's metadata, never from the user, so a scan is normalised exactly
as the training scans were. A model trained at a target spacing sees each scan resampled to it; its
class probabilities are resampled back to the scan's own grid before the argmax. Label maps are
written in the input's own geometry: the same shape, affine and voxel order as the NIfTI file or
DICOM series that was read.

Several models (the seeds or folds of one recipe) predict as one :class:`Ensemble`: the mean of their
softmax probabilities, as nnU-Net ensembles its folds. They must normalise scans the same way and
predict the same classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.io import LABEL_MAP_SUFFIX, ImageGeometry, is_scan_file, label_map_suffix, load_image, save_label_map, scan_suffix
from ..data.preprocessing import PreprocessingConfig, normalise_intensity
from ..data.resampling import resample_image, resample_probabilities, resampled_shape, same_spacing
from ..devices import resolve_device
from ..errors import CheckpointError, DataError, VectorPoseError
from ..models.backbones import backbone_from_json
from ..models.files import load_model, load_weights
from ..models.segmentation_network import SegmentationNetwork
from ..utils.files import TEMPORARY_SUFFIX
from .sliding_window import predict_probabilities


class LabelPredictor:
    """What predicts label maps from scans: a :class:`Segmenter` or an :class:`Ensemble` of them."""

    preprocessing: PreprocessingConfig
    num_classes: int
    class_names: list[str]
    members: list[Segmenter]  # the models that predict (one for a Segmenter)

    def model_grid_probabilities(self, image: np.ndarray) -> torch.Tensor:
        """Softmax probabilities ``(C, X, Y, Z)`` of a normalised volume already on the model's grid."""
        raise NotImplementedError

    def predict_probabilities(self, image: np.ndarray, spacing: tuple[float, float, float] | None = None) -> torch.Tensor:
        """Probabilities ``(C, X, Y, Z)`` of an already-normalised RAS+ volume on its own grid of voxel size
        ``spacing`` (mm); without ``spacing`` the volume is taken to be on the model's grid already."""
        target = self.preprocessing.spacing
        if target is None or spacing is None or same_spacing(spacing, target):
            return self.model_grid_probabilities(image)
        resampled = resample_image(image, resampled_shape(image.shape, spacing, target))
        return resample_probabilities(self.model_grid_probabilities(resampled), image.shape)

    def predict_array(self, image: np.ndarray, spacing: tuple[float, float, float] | None = None) -> np.ndarray:
        """Label map ``(X, Y, Z)`` uint8 of an already-normalised RAS+ volume (see :meth:`predict_probabilities`)."""
        return self.predict_probabilities(image, spacing).argmax(0).numpy().astype(np.uint8)

    def predict_path(self, path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
        """Read a scan file or DICOM series folder, normalise it, and predict in RAS+ order on its own grid."""
        raw, geometry = load_image(path)
        try:
            image = normalise_intensity(raw, self.preprocessing)
        except ValueError as exc:
            raise DataError(path, str(exc)) from None
        return self.predict_array(image, geometry.spacing), geometry


@dataclass
class Segmenter(LabelPredictor):
    """A segmentation network with the facts needed to apply it (from its metadata)."""

    network: SegmentationNetwork
    metadata: dict
    preprocessing: PreprocessingConfig
    patch_size: tuple[int, int, int]
    device: torch.device
    mirror: bool = True
    path: Path | None = None

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The axes inference mirrors: those training flipped (none when ``mirror`` is off, or for a
        model that does not record them)."""
        return tuple(int(a) for a in self.metadata.get("flip_axes", ())) if self.mirror else ()

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def class_names(self) -> list[str]:
        labels = self.metadata.get("labels", {})
        return [labels.get(str(c), f"class {c}") for c in range(1, self.num_classes)]

    @property
    def members(self) -> list[Segmenter]:
        return [self]

    def model_grid_probabilities(self, image: np.ndarray) -> torch.Tensor:
        return predict_probabilities(self.network, image, self.patch_size, self.device, mirror_axes=self.mirror_axes)


class Ensemble(LabelPredictor):
    """Segmenters that predict together: the mean of their softmax probabilities on the model grid,
    resampled once to the scan's grid. Each member keeps its own patch size and mirror axes."""

    def __init__(self, members: Sequence[Segmenter]):
        if not members:
            raise ValueError("an ensemble needs at least one model")
        first = members[0]
        for m in members[1:]:
            name = m.path or "a member"
            if m.num_classes != first.num_classes or m.class_names != first.class_names:
                raise CheckpointError(f"{name}: predicts classes {m.class_names}, but {first.path or 'the first member'} predicts "
                                      f"{first.class_names}; an ensemble's models must predict the same classes")
            if m.preprocessing != first.preprocessing:
                raise CheckpointError(f"{name}: normalises scans as {m.preprocessing.to_json()}, but {first.path or 'the first member'} "
                                      f"as {first.preprocessing.to_json()}; an ensemble's models must share their preprocessing")
        self.members = list(members)
        self.preprocessing = first.preprocessing

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def class_names(self) -> list[str]:
        return self.members[0].class_names

    def model_grid_probabilities(self, image: np.ndarray) -> torch.Tensor:
        total = self.members[0].model_grid_probabilities(image)
        for m in self.members[1:]:
            total += m.model_grid_probabilities(image)
        return total / len(self.members)


def load_segmenter(path: str | Path, device: torch.device | str = "cpu", mirror: bool = True) -> Segmenter:
    """Load a fine-tuned model (run folder or ``.safetensors`` file) onto ``device`` (``auto``, ``cpu``, ``cuda[:N]``);
    ``mirror``: average predictions over the mirrorings training used."""
    state, meta = load_model(path, task="segmentation", hint="fine-tune it first (vectorpose finetune --init)")
    if "num_classes" not in meta:
        raise CheckpointError(f"{path}: segmentation metadata lacks 'num_classes'")
    patch = meta["patch_size"]
    patch = (patch,) * 3 if isinstance(patch, int) else tuple(int(p) for p in patch)
    network = SegmentationNetwork(backbone_from_json(meta["backbone"]), int(meta["num_classes"]))
    load_weights(network, state, path)
    device = resolve_device(device)
    network.to(device).eval()
    return Segmenter(network, meta, PreprocessingConfig.from_json(meta["preprocessing"]), patch, device, mirror, Path(path))  # type: ignore[arg-type]


def load_predictor(models: str | Path | Sequence[str | Path], device: torch.device | str = "cpu", mirror: bool = True) -> LabelPredictor:
    """One model (a run folder or ``.safetensors`` file) as a :class:`Segmenter`, several as an :class:`Ensemble`."""
    paths = [models] if isinstance(models, (str, Path)) else list(models)
    if not paths:
        raise VectorPoseError("no model given")
    if len(paths) == 1:
        return load_segmenter(paths[0], device, mirror)
    return Ensemble([load_segmenter(p, device, mirror) for p in paths])


# OUTPUT names a file (not a folder) when it ends in one of these
OUTPUT_FILE_SUFFIXES = (".nii", ".nii.gz", ".gz", ".nrrd", ".mha")


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and not any(is_scan_file(p) for p in path.iterdir())


def _names_a_file(output: Path) -> bool:
    if scan_suffix(output) in (".nhdr", ".mhd"):
        raise VectorPoseError(f"{output}: label maps are written as one file; name it .nii.gz, .nii, .nrrd or .mha")
    return output.name.lower().endswith(OUTPUT_FILE_SUFFIXES)


def output_suffix(output: Path) -> str:
    """The format of a label map file, from its name: ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha``."""
    suffix = scan_suffix(output)
    if suffix in LABEL_MAP_SUFFIX:
        return LABEL_MAP_SUFFIX[suffix]
    return ".nii.gz" if output.name.lower().endswith(".gz") else ".nii"


def output_name(source: Path) -> str:
    """The label map's file name for ``source``: its own name in its own format (one file), or
    ``<folder name>.nii.gz`` for a DICOM series."""
    suffix = scan_suffix(source) if source.is_file() else None
    stem = source.name[: -len(suffix)] if suffix else source.name
    return stem + label_map_suffix(source)


def prediction_jobs(source: Path, output: Path) -> list[tuple[Path, Path]]:
    """``(input, output file)`` pairs: a scan file or DICOM series -> ``output`` (a file name, or a
    folder that gets :func:`output_name`); a folder of scan files -> one output per file in ``output``."""
    if not source.exists():
        raise DataError(source, "no such file or folder")
    if source.is_file() or _is_dicom_folder(source):
        if _names_a_file(output):
            return [(source, output)]
        return [(source, output / output_name(source))]
    files = sorted(p for p in source.iterdir() if p.is_file() and is_scan_file(p))
    if _names_a_file(output):
        raise VectorPoseError(f"{output}: INPUT is a folder, so OUTPUT must be a folder, not a file name")
    return [(f, output / output_name(f)) for f in files]


def predict(model: str | Path | Sequence[str | Path], source: str | Path, output: str | Path, device: str = "cpu",
            overwrite: bool = False, mirror: bool = True) -> list[Path]:
    """Predict every scan of ``source`` and write uint8 label maps; returns the written paths.

    ``model``: one model, or several that predict as an :class:`Ensemble`. ``mirror``: average over the
    mirrored copies of each scan on the axes training flipped.

    Existing outputs are refused unless ``overwrite``; all are checked before any is written. Every
    scan is predicted into a hidden staging file first and the outputs are put in place only once all
    succeeded, so a bad scan among many leaves no new or replaced label map behind.
    """
    source, output = Path(source), Path(output)
    jobs = prediction_jobs(source, output)
    if not jobs:
        raise DataError(source, "no scans (NIfTI, NRRD or MetaImage files) or DICOM series to predict")
    existing = [o for _, o in jobs if o.exists()]
    if existing and not overwrite:
        raise VectorPoseError(f"{existing[0]}: already exists; pass --overwrite to replace it")
    predictor = load_predictor(model, device, mirror)
    new_folders = sorted({p for _, dst in jobs for p in (dst.parent, *dst.parent.parents) if not p.exists()}, key=lambda p: -len(p.parts))
    staged: list[tuple[Path, Path]] = []
    try:
        for src, dst in jobs:
            labels, geometry = predictor.predict_path(src)
            tmp = dst.with_name(f".{dst.name}.staged{TEMPORARY_SUFFIX}")
            staged.append((save_label_map(tmp, labels, geometry, suffix=output_suffix(dst)), dst))
        for tmp, dst in staged:
            tmp.replace(dst)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in new_folders:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return [dst for _, dst in staged]
