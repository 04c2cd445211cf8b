"""Intensity normalisation by modality and a content-keyed preprocessing cache.

CT: clip to a Hounsfield window, then scale the window to [0, 1]. MRI (and any modality without a
calibrated scale): clip to robust percentiles, then z-score. With a target ``spacing``, each
normalised scan (and its label map) is then resampled to it (:mod:`~vectorpose.data.resampling`),
a second cache layer over the first; a scan already at that spacing is used as it is.

Preprocessed volumes are stored as ``.npy`` files in RAS+ order and read back by memory map, so a
second run starts at once and worker processes share pages instead of copying arrays. The cache key
hashes the source file's bytes together with the preprocessing settings: a changed file or a changed
setting never reuses a stale entry. The digest of an unchanged file is remembered, so it is read only once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError, DatasetError
from ..utils.files import atomic_write, remove_stale_temporaries, write_json
from .datasets import Case, Dataset, normalisation_for
from .io import ImageGeometry, load_image, scan_files
from .planning import VoxelBudget, planned_spacing
from .resampling import resample_image, resample_labels, resampled_shape, same_spacing

# bump when the meaning of a cached array changes
CACHE_FORMAT = 1
# a temporary file in the cache untouched for this long belongs to a killed run
STALE_CACHE_TEMPORARY_S = 24 * 3600


@dataclass(frozen=True)
class PreprocessingConfig:
    """How raw scans become network inputs; travels inside every model's metadata.

    ``spacing``: the voxel size (mm per canonical axis) every scan is resampled to, or ``None`` for
    each scan's own grid.
    """

    modality: str = "MRI"
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    orientation: str = "RAS"
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "modality", normalisation_for(self.modality))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
            if len(self.spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in self.spacing):
                raise ValueError(f"spacing must be three positive sizes in mm, got {self.spacing}")
        lo, hi = self.ct_window
        if not lo < hi:
            raise ValueError(f"ct_window must be (low, high) with low < high, got {self.ct_window}")
        plo, phi = self.mri_percentiles
        if not 0.0 <= plo < phi <= 100.0:
            raise ValueError(f"mri_percentiles must satisfy 0 <= low < high <= 100, got {self.mri_percentiles}")
        if self.orientation != "RAS":
            raise ValueError(f"only RAS orientation is supported, got {self.orientation!r}")

    def to_json(self) -> dict:
        # without a spacing the JSON is what it was before spacings existed: cache keys and saved models stay valid
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if not (k == "spacing" and v is None)}

    @classmethod
    def from_json(cls, d: dict) -> PreprocessingConfig:
        return cls(
            modality=str(d["modality"]),
            ct_window=tuple(float(v) for v in d["ct_window"]),  # type: ignore[arg-type]
            mri_percentiles=tuple(float(v) for v in d["mri_percentiles"]),  # type: ignore[arg-type]
            orientation=str(d["orientation"]),
            spacing=tuple(float(v) for v in d["spacing"]) if d.get("spacing") is not None else None,  # type: ignore[arg-type]
        )


def normalise_intensity(image: np.ndarray, config: PreprocessingConfig) -> np.ndarray:
    """Return ``image`` (any real dtype, any shape) normalised as float32.

    Raises:
        ValueError: non-finite values, or a constant image (nothing to normalise).
    """
    x = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{int(np.size(x) - np.isfinite(x).sum())} voxels are NaN or infinite")
    if x.size == 0 or x.min() == x.max():
        raise ValueError("constant intensity: nothing to normalise")
    if config.modality == "CT":
        lo, hi = config.ct_window
        return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    lo, hi = np.percentile(x, config.mri_percentiles)
    clipped = np.clip(x, lo, hi)
    std = clipped.std()
    if not hi > lo or std == 0.0:
        raise ValueError("constant intensity: nothing to normalise")
    return ((clipped - clipped.mean()) / std).astype(np.float32)


def label_to_uint8(label: np.ndarray) -> np.ndarray:
    """Round a label map (integer or float-stored) to uint8; reject non-integral or out-of-range values."""
    x = np.asarray(label)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise ValueError("label map holds NaN or infinite values")
        rounded = np.rint(x)
        if np.abs(x - rounded).max(initial=0.0) > 1e-3:
            raise ValueError("label map holds non-integer values")
        x = rounded
    if x.min(initial=0) < 0 or x.max(initial=0) > 255:
        raise ValueError(f"label values must lie in 0..255, found {x.min()}..{x.max()}")
    return x.astype(np.uint8)


@dataclass(frozen=True)
class PreprocessedVolume:
    """A cached, normalised RAS+ volume (and its label map), opened lazily by memory map.

    ``geometry`` is the scan's own; ``array_shape`` and ``array_spacing`` are set when the arrays were
    resampled to another spacing (``shape`` and ``spacing`` give the arrays' either way).
    ``intensity_range`` is the (min, max) of the normalised image: pretext tasks map it to [0, 1].
    ``label_values`` are the values the label map holds, found once when it was cached, so checking
    them never reads the map again. Only paths are pickled, so worker processes open their own
    memory maps.
    """

    case_id: str
    source: Path
    image_path: Path
    geometry: ImageGeometry
    intensity_range: tuple[float, float]
    label_path: Path | None = None
    source_label: Path | None = None
    label_values: tuple[int, ...] = ()
    array_shape: tuple[int, int, int] | None = None
    array_spacing: tuple[float, float, float] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array_shape or self.geometry.canonical_shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.array_spacing or self.geometry.spacing

    def image(self) -> np.ndarray:
        return np.load(self.image_path, mmap_mode="r")

    def label(self) -> np.ndarray:
        if self.label_path is None:
            raise DataError(self.source, "this case has no label map")
        return np.load(self.label_path, mmap_mode="r")


def default_cache_dir() -> Path:
    """``$VECTORPOSE_CACHE``, else ``$XDG_CACHE_HOME/vectorpose``, else ``~/.cache/vectorpose``."""
    if os.environ.get("VECTORPOSE_CACHE"):
        return Path(os.environ["VECTORPOSE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vectorpose"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_digest(path: Path, cache_dir: Path) -> str:
    """The SHA-256 of a scan's bytes: of the file, or, for a scan made of several files (a DICOM
    series folder, a detached NRRD / MetaImage header and its data), of their names and digests.

    Each file's digest is read once per version of the file (:func:`_file_digest`).
    """
    path = Path(path)
    files = scan_files(path)
    if files == [path]:
        return _file_digest(path, cache_dir)
    lines = "".join(f"{f.name}\t{_file_digest(f, cache_dir)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _file_digest(path: Path, cache_dir: Path) -> str:
    """The SHA-256 of ``path``'s bytes, read once per version of the file.

    A file is known by its path, size, inode and modification and change times (``st_ctime_ns``
    changes on every write and cannot be set back), and the digest of a known file is kept under
    ``cache_dir/digests``: a run over thousands of unchanged scans then reads none of their bytes.
    """
    try:
        st = path.stat()
        known = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}|{st.st_ctime_ns}".encode()).hexdigest()
        memo = cache_dir / "digests" / f"{known[:32]}.txt"
        if memo.is_file():
            digest = memo.read_text(encoding="utf-8").strip()
            if len(digest) == 64:
                return digest
        digest = file_digest(path)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as exc:
        raise DataError(path, f"unreadable ({exc.strerror or exc})") from None
    atomic_write(memo, lambda tmp: tmp.write_text(digest, encoding="utf-8"))
    return digest


def check_label_geometry(case: Case, image: ImageGeometry, label: ImageGeometry) -> None:
    """Raise :class:`DataError` naming the label file unless it has the image's shape and affine."""
    if label.shape != image.shape:
        raise DataError(case.label, f"label shape {label.shape} differs from image shape {image.shape} ({case.image})")
    if not np.allclose(label.affine, image.affine, atol=1e-3):
        raise DataError(case.label, f"label affine differs from the affine of {case.image}")


def cache_key(source_digest: str, role: str, settings: dict) -> str:
    """The cache entry name of what ``role`` makes from a source (its digest) with ``settings``."""
    blob = json.dumps({"format": CACHE_FORMAT, "role": role, "source": source_digest, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically: a reader sees the whole file or none."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def cached_entry(cache_dir: Path, key: str) -> dict | None:
    """The metadata of cache entry ``key`` when both its files are there and readable, else ``None``."""
    meta_path = cache_dir / f"{key}.json"
    if not (meta_path.is_file() and (cache_dir / f"{key}.npy").is_file()):
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def preprocess_case(case: Case, config: PreprocessingConfig, cache_dir: str | Path | None = None) -> PreprocessedVolume:
    """Normalise one case (and check its label map), or reuse the cached result.

    Raises:
        DataError: the image or label cannot be read, is not 3D, holds NaN/inf or constant values,
        or the label map's shape, affine or values disagree with the image.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    image_key = cache_key(scan_digest(case.image, cache_dir), "image", config.to_json())
    label_key = cache_key(scan_digest(case.label, cache_dir), "label", {}) if case.label is not None else None

    entry = cached_entry(cache_dir, image_key)
    label_entry = cached_entry(cache_dir, label_key) if label_key else None
    if label_entry is not None and "values" not in label_entry:
        label_entry = None  # an entry without the label values cannot be checked: rebuild it
    if entry is None or (label_key and label_entry is None):
        entry, label_entry = _build_entry(case, config, cache_dir, image_key, label_key)
    elif label_entry is not None:
        # both were cached, perhaps from other pairings: the pair itself must still agree
        assert case.label is not None
        check_label_geometry(case, ImageGeometry.from_json(entry["geometry"]), ImageGeometry.from_json(label_entry["geometry"]))
    return PreprocessedVolume(
        case_id=case.case_id,
        source=case.image,
        image_path=cache_dir / f"{image_key}.npy",
        geometry=ImageGeometry.from_json(entry["geometry"]),
        intensity_range=(float(entry["min"]), float(entry["max"])),
        label_path=cache_dir / f"{label_key}.npy" if label_key else None,
        source_label=case.label,
        label_values=tuple(int(v) for v in label_entry["values"]) if label_entry else (),
    )


def _build_entry(case: Case, config: PreprocessingConfig, cache_dir: Path, image_key: str,
                 label_key: str | None) -> tuple[dict, dict | None]:
    """Preprocess and cache the image (and label map); returns their sidecar entries."""
    raw, geometry = load_image(case.image)
    try:
        image = normalise_intensity(raw, config)
    except ValueError as exc:
        raise DataError(case.image, str(exc)) from None
    if label_key is not None:
        assert case.label is not None
        raw_label, label_geometry = load_image(case.label)
        check_label_geometry(case, geometry, label_geometry)
        try:
            label = label_to_uint8(raw_label)
        except ValueError as exc:
            raise DataError(case.label, str(exc)) from None
        save_array(cache_dir / f"{label_key}.npy", label)
        label_entry = {"source": str(case.label), "geometry": label_geometry.to_json(),
                       "values": np.flatnonzero(np.bincount(label.ravel(), minlength=256)).tolist()}
        write_json(cache_dir / f"{label_key}.json", label_entry)
    else:
        label_entry = None
    save_array(cache_dir / f"{image_key}.npy", image)
    entry = {
        "source": str(case.image),
        "geometry": geometry.to_json(),
        "min": float(image.min()),
        "max": float(image.max()),
        "preprocessing": config.to_json(),
    }
    # the sidecar is written last: its presence marks a complete entry
    write_json(cache_dir / f"{image_key}.json", entry)
    return entry, label_entry


def resample_volume(volume: PreprocessedVolume, spacing: tuple[float, float, float], cache_dir: str | Path | None = None) -> PreprocessedVolume:
    """``volume`` (on its own grid) resampled to ``spacing``, cached beside it; itself when already there."""
    if same_spacing(volume.geometry.spacing, spacing):
        return volume
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    shape = resampled_shape(volume.geometry.canonical_shape, volume.geometry.spacing, spacing)
    settings = {"spacing": list(spacing), "shape": list(shape)}
    image_key = cache_key(volume.image_path.stem, "resampled image", settings)
    entry = cached_entry(cache_dir, image_key)
    if entry is None:
        image = resample_image(volume.image(), shape)
        save_array(cache_dir / f"{image_key}.npy", image)
        entry = {"source": str(volume.source), "min": float(image.min()), "max": float(image.max()), **settings}
        write_json(cache_dir / f"{image_key}.json", entry)
    label_path = None
    if volume.label_path is not None:
        label_key = cache_key(volume.label_path.stem, "resampled label", settings)
        label_path = cache_dir / f"{label_key}.npy"
        if cached_entry(cache_dir, label_key) is None:
            save_array(label_path, resample_labels(volume.label(), shape))
            write_json(cache_dir / f"{label_key}.json", {"source": str(volume.source_label), **settings})
    # a class that only thin slivers held can vanish on a coarser grid; the declared values stay those of the scan
    return PreprocessedVolume(volume.case_id, volume.source, cache_dir / f"{image_key}.npy", volume.geometry,
                              (float(entry["min"]), float(entry["max"])), label_path, volume.source_label, volume.label_values,
                              array_shape=shape, array_spacing=tuple(float(v) for v in spacing))  # type: ignore[arg-type]


def preprocess_dataset(
    dataset: Dataset,
    config: PreprocessingConfig,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = False,
) -> tuple[list[PreprocessedVolume], list[DataError]]:
    """Preprocess every case up front, so bad files surface before training starts.

    Returns ``(volumes, skipped)``. Every problem is collected; unless ``skip_bad`` they are raised
    together as one :class:`DatasetError`. With ``config.spacing`` the volumes are resampled to it.
    """
    from tqdm.auto import tqdm

    # Other runs may be writing this shared cache right now, so only day-old leftovers of killed ones go.
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache_root.is_dir():
        remove_stale_temporaries(cache_root, older_than_s=STALE_CACHE_TEMPORARY_S)
    volumes: list[PreprocessedVolume] = []
    problems: list[DataError] = []
    native = replace(config, spacing=None)
    for case in tqdm(dataset.cases, desc="preprocess", unit="scan", disable=not progress, leave=False):
        try:
            volume = preprocess_case(case, native, cache_dir)
            volumes.append(volume if config.spacing is None else resample_volume(volume, config.spacing, cache_dir))
        except DataError as err:
            problems.append(err)
    if problems and not skip_bad:
        raise DatasetError(problems)
    if not volumes:
        raise DataError(dataset.root, "no usable scan left")
    return volumes, problems


def preprocess_at_spacing(
    dataset: Dataset,
    config: PreprocessingConfig,
    spacing: str,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = False,
    budget: VoxelBudget | None = None,
) -> tuple[list[PreprocessedVolume], list[DataError], PreprocessingConfig]:
    """:func:`preprocess_dataset` at the spacing that ``spacing`` (``auto``, ``native`` or ``X,Y,Z``)
    chooses from the scans' own spacings and shapes (:func:`~vectorpose.data.planning.planned_spacing`:
    ``auto`` is coarsened to fit ``budget``); returns the volumes, the skipped problems, and ``config``
    with that spacing (to record in the run)."""
    volumes, skipped = preprocess_dataset(dataset, replace(config, spacing=None), cache_dir, skip_bad, progress)
    target, _ = planned_spacing(spacing, [v.geometry.spacing for v in volumes], [v.geometry.canonical_shape for v in volumes], budget)
    config = replace(config, spacing=target)
    if target is None:
        return volumes, skipped, config
    return [resample_volume(v, target, cache_dir) for v in volumes], skipped, config
