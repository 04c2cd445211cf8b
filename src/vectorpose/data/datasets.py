"""Finding the scans of a dataset: an MSD / nnU-Net raw folder or any folder of scans.

A scan is a NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``,
``.mhd``) file, or a DICOM series: a folder that directly holds DICOM files (see
:mod:`vectorpose.data.io`). An MSD folder has ``dataset.json`` listing ``training`` pairs
(``imagesTr``/``labelsTr``), whose entries may name any scan, and a ``modality`` map; an nnU-Net v2
folder pairs ``imagesTr/<case>_0000<file_ending>`` with ``labelsTr/<case><file_ending>``. For
pretraining, any folder of scans (searched recursively) works too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, DatasetError
from .io import SCAN_SUFFIXES, holds_dicom, is_scan_file, scan_suffix

@dataclass(frozen=True)
class Case:
    """One scan, with its label map when the dataset has one."""

    case_id: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class Dataset:
    """The cases of a dataset folder and what ``dataset.json`` says about them."""

    root: Path
    cases: tuple[Case, ...]
    modality: str | None = None
    labels: dict[int, str] = field(default_factory=dict)

    @property
    def labelled(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.label is not None)

    def images_only(self) -> Dataset:
        """This dataset without its label maps (for pretraining, which a broken label map must not stop)."""
        return Dataset(self.root, tuple(Case(c.case_id, c.image) for c in self.cases), self.modality, self.labels)


def normalisation_for(name: str) -> str:
    """The intensity normalisation of a scan of modality ``name``: ``"CT"`` or ``"MRI"``.

    ``"CT"`` (a fixed Hounsfield window) for CT; ``"MRI"`` (robust percentiles, then z-score) for
    every other modality: MR sequences (``MR``, ``T1``, ``FLAIR`` ...) and also PET, ultrasound or
    anything else without a calibrated intensity scale. The ``modality`` fields of
    :class:`Dataset` and :class:`~vectorpose.data.preprocessing.PreprocessingConfig` hold this value.
    """
    key = name.strip().upper()
    if not key:
        raise ValueError(f"empty modality name: {name!r}")
    return "CT" if key == "CT" else "MRI"


def _case_id(path: Path) -> str:
    name = path.name
    suffix = scan_suffix(path) if not path.is_dir() else None
    if suffix:
        name = name[: -len(suffix)]
    # nnU-Net raw folders name channels `<case>_0000.nii.gz`
    if len(name) > 5 and name[-5] == "_" and name[-4:].isdigit():
        name = name[:-5]
    return name


def _read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(meta, dict):
        raise DataError(path, "expected a JSON object")
    return meta


def _msd_path(root: Path, entry: object, what: str, meta_path: Path) -> Path:
    if not isinstance(entry, str) or not entry:
        raise DataError(meta_path, f"training entry has no valid {what!r} path: {entry!r}")
    return (root / entry).resolve()


def _msd_dataset(root: Path) -> Dataset:
    meta_path = root / "dataset.json"
    meta = _read_dataset_json(root)
    modality = None
    modalities = meta.get("modality") or meta.get("channel_names")
    if isinstance(modalities, dict) and modalities:
        if len(modalities) > 1:
            raise DataError(meta_path, f"{len(modalities)} input channels; only single-channel data is supported")
        modality = normalisation_for(str(next(iter(modalities.values()))))
    labels: dict[int, str] = {}
    raw_labels = meta.get("labels", {})
    if isinstance(raw_labels, dict):
        for k, v in raw_labels.items():
            # MSD maps value -> name; nnU-Net v2 maps name -> value
            if str(k).isdigit():
                labels[int(k)] = str(v)
            elif isinstance(v, int):
                labels[v] = str(k)
    training = meta.get("training")
    problems: list[DataError] = []
    cases: list[Case] = []
    if isinstance(training, list) and training:
        for entry in training:
            try:
                if not isinstance(entry, dict):
                    raise DataError(meta_path, f"training entry is not an object: {entry!r}")
                image = _msd_path(root, entry.get("image"), "image", meta_path)
                label = entry.get("label")
                label_path = _msd_path(root, label, "label", meta_path) if label is not None else None
                missing = [DataError(p, f"file named in {meta_path} not found") for p in (image, label_path)
                           if p is not None and not (p.is_file() or p.is_dir() and holds_dicom(p))]
                if missing:
                    problems.extend(missing)
                    continue
                cases.append(Case(_case_id(image), image, label_path))
            except DataError as err:
                problems.append(err)
    else:
        # nnU-Net v2 lists no pairs: pair imagesTr/<case>_0000<ending> with labelsTr/<case><ending>
        ending = meta.get("file_ending")
        endings = (ending.lower(),) if isinstance(ending, str) and ending.lower() in SCAN_SUFFIXES else SCAN_SUFFIXES
        images = sorted(p for p in (root / "imagesTr").glob("*") if p.is_file() and scan_suffix(p) in endings)
        label_dir = root / "labelsTr"
        for image in images:
            cid = _case_id(image)
            label = next((label_dir / f"{cid}{e}" for e in (scan_suffix(image), *endings) if (label_dir / f"{cid}{e}").is_file()), None)
            cases.append(Case(cid, image.resolve(), label.resolve() if label else None))
    if problems:
        raise DatasetError(problems)
    if not cases:
        raise DataError(root, "dataset.json lists no training cases and imagesTr/ holds no scan file")
    return Dataset(root=root, cases=tuple(cases), modality=modality, labels=labels)


def find_scans(root: Path) -> list[Path]:
    """Every scan in ``root`` or below, sorted: NIfTI, NRRD and MetaImage files, and every folder
    that directly holds DICOM files (one series; several series in one folder are refused when read).
    Hidden files and folders are left out."""
    scans = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(folder)
        scans.extend(here / n for n in names if is_scan_file(here / n))
        if holds_dicom(here):
            scans.append(here)
    return sorted(scans)


def _folder_dataset(root: Path) -> Dataset:
    files = find_scans(root)
    if not files:
        raise DataError(root, "no scans (NIfTI, NRRD or MetaImage files, or DICOM series folders) found in this folder or below")
    names = [_case_id(f) for f in files]
    cases = []
    for f, cid in zip(files, names):
        # a name that occurs in several sub-folders takes its relative folder path, which is unique
        if names.count(cid) > 1:
            cid = "__".join((*f.relative_to(root).parent.parts, cid)) if f != root else cid
        cases.append(Case(cid, f.resolve()))
    return Dataset(root=root, cases=tuple(cases))


def load_dataset(path: str | Path, modality: str | None = None) -> Dataset:
    """Find the cases of ``path``: an MSD folder, a folder of scans, or one scan (a file, or a DICOM series folder).

    ``modality`` overrides what ``dataset.json`` says; without either, the caller must choose.

    Raises:
        DataError / DatasetError: the path is missing, empty, or ``dataset.json`` is malformed or
        names missing files (every such problem listed at once).
    """
    root = Path(path)
    if not root.exists():
        raise DataError(root, "no such file or folder")
    if root.is_file():
        if not is_scan_file(root):
            raise DataError(root, f"not a scan file (expected {', '.join(SCAN_SUFFIXES)}) nor a dataset folder")
        ds = Dataset(root=root.parent, cases=(Case(_case_id(root), root.resolve()),))
    elif (root / "dataset.json").is_file():
        ds = _msd_dataset(root)
    else:
        ds = _folder_dataset(root)
    if modality is not None:
        ds = Dataset(root=ds.root, cases=ds.cases, modality=normalisation_for(modality), labels=ds.labels)
    return ds
