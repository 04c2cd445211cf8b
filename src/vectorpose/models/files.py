"""Model files in a format that cannot run code when loaded: what training writes and inference reads.

A model is ``<name>.safetensors`` (tensors only: the network's ``state_dict``) plus ``<name>.json``
(metadata: task, method, backbone, heads, patch size, preprocessing, step; validated before it is
trusted). Both are written to a temporary name and renamed, so a crash never leaves a half-written
model.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import CheckpointError
from ..utils.files import atomic_write, write_json

MODEL_FILE = "model.safetensors"
METADATA_FILE = "model.json"
FORMAT = "vectorpose-model"
FORMAT_VERSION = 1

# key -> accepted types; validated before anything in the metadata is used
METADATA_SCHEMA: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "format_version": (int,),
    "task": (str,),
    "method": (str,),
    "backbone": (dict,),
    "heads": (dict,),
    "patch_size": (int, list),
    "preprocessing": (dict,),
    "step": (int,),
    "versions": (dict,),
    "created": (str,),
}
OPTIONAL_METADATA: dict[str, tuple[type, ...]] = {
    "loss_weights": (dict,),
    "pretext": (dict,),
    "num_classes": (int,),
    "labels": (dict,),
    "init": (str,),
    "transfer": (str,),
    "val_dice": (float,),
    "flip_axes": (list,),
}


def versions() -> dict[str, str]:
    import monai

    return {"vectorpose": __version__, "torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate_metadata(meta: object, source: Path) -> dict:
    """Check keys and types of model metadata; raise :class:`CheckpointError` naming ``source``."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: not a VectorPOSE model file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: unsupported format_version {meta.get('format_version')!r} (this version reads {FORMAT_VERSION})")
    for key, types in METADATA_SCHEMA.items():
        if key not in meta:
            raise CheckpointError(f"{source}: metadata lacks {key!r}")
        if not isinstance(meta[key], types) or isinstance(meta[key], bool) and bool not in types:
            raise CheckpointError(f"{source}: metadata {key!r} has the wrong type ({type(meta[key]).__name__})")
    unknown = set(meta) - set(METADATA_SCHEMA) - set(OPTIONAL_METADATA)
    if unknown:
        raise CheckpointError(f"{source}: metadata has unknown keys {sorted(unknown)}")
    for key, types in OPTIONAL_METADATA.items():
        if key in meta and not isinstance(meta[key], types):
            raise CheckpointError(f"{source}: metadata {key!r} has the wrong type ({type(meta[key]).__name__})")
    return meta


def _check_configs(meta: dict, source: Path) -> None:
    """The nested backbone and preprocessing settings must build, or the file is refused here."""
    from ..data.preprocessing import PreprocessingConfig
    from .backbones import backbone_from_json

    for key, read in (("backbone", backbone_from_json), ("preprocessing", PreprocessingConfig.from_json)):
        try:
            read(meta[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: metadata {key!r} is malformed ({type(exc).__name__}: {exc})") from None


def save_model(directory: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict, name: str = "model") -> Path:
    """Write ``<name>.safetensors`` then ``<name>.json`` into ``directory``; returns the weights path."""
    directory = Path(directory)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    meta.setdefault("versions", versions())
    meta.setdefault("created", now_iso())
    validate_metadata(meta, directory / f"{name}.json")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    weights = atomic_write(directory / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    write_json(directory / f"{name}.json", meta)
    return weights


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, metadata)`` for a run folder, a ``.safetensors`` file or its ``.json`` file."""
    path = Path(path)
    if path.is_dir():
        return path / MODEL_FILE, path / METADATA_FILE
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")


def load_model(path: str | Path, task: str | None = None, hint: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights and validated metadata; never unpickles anything.

    With ``task`` (``"pretext"`` or ``"segmentation"``), a model of another task is refused, with
    ``hint`` telling the user what to pass instead.

    Raises:
        CheckpointError: missing files, a file that is not safetensors (a pickle, say), or metadata
        that fails validation.
    """
    weights, meta_path = model_paths(path)
    for p in (weights, meta_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: model file not found")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable model metadata ({exc})") from None
    validate_metadata(meta, meta_path)
    _check_configs(meta, meta_path)
    if task is not None and meta["task"] != task:
        raise CheckpointError(f"{path}: a {meta['task']!r} model, not a {task!r} model" + (f"; {hint}" if hint else ""))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a valid safetensors file ({exc})") from None
    return state, meta


def load_weights(network: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``network.load_state_dict(state)``, refusing weights that do not fit the architecture."""
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not match the architecture in its metadata ({str(exc).splitlines()[0]})") from None
