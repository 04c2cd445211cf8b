"""Pretrained weights for ``nnUNetv2_train ... -pretrained_weights FILE``.

nnU-Net v2 reads the file with ``torch.load`` and takes its ``"network_weights"`` entry: a state dict
of its network under the network's own names (``encoder.stages...``, ``decoder.stages...``,
``decoder.transpconvs...``, and ``decoder.encoder...``, the decoder's reference to the encoder). It
requires every tensor of its network except the segmentation layers (``.seg_layers.``) to be there
with the same shape, and skips the segmentation layers, which depend on its classes.

The file written here is ``{"network_weights": {name: tensor}}`` with plain CPU tensors and nothing
else, so it also loads with ``torch.load(..., weights_only=True)``; nnU-Net itself loads it with
``weights_only=False``, which is why a pretrained-weights file must come from a source you trust.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import VectorPoseError
from ..models.nnunet_backbone import NnUNetBackboneConfig, nnunet_weights
from ..models.files import load_model
from ..utils.files import atomic_write

NNUNET_KEY = "network_weights"


def export_nnunet(run: str | Path, out: str | Path, overwrite: bool = False) -> tuple[Path, dict]:
    """Write the nnU-Net network of a ``--backbone nnunet`` pretraining run (folder or model file) to
    ``out``; returns ``(out, info)`` with the architecture and the number of tensors written.

    Raises:
        VectorPoseError: ``out`` exists (without ``overwrite``), or the run was not pretrained with
        the nnU-Net backbone.
        CheckpointError: the run's model files are missing or unsafe.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise VectorPoseError(f"{out}: already exists; pass --overwrite to replace it")
    state, meta = load_model(run, task="pretext", hint="export takes a pretraining run")
    if meta["backbone"].get("kind") != "nnunet":
        raise VectorPoseError(f"{run}: pretrained with the {meta['backbone'].get('kind', 'unet')} backbone, which nnU-Net cannot load; "
                              f"pretrain with --backbone nnunet --plans nnUNetPlans.json to export to nnU-Net")
    backbone = NnUNetBackboneConfig.from_json(meta["backbone"])
    weights = nnunet_weights(backbone, state)
    atomic_write(out, lambda tmp: torch.save({NNUNET_KEY: weights}, tmp))
    info = {"network_class_name": backbone.network_class_name, "configuration": backbone.configuration,
            "plans_name": backbone.plans_name, "dataset_name": backbone.dataset_name, "tensors": len(weights), "step": meta["step"]}
    return out, info


def read_nnunet_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an nnU-Net pretrained-weights file, read with ``weights_only=True``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)[NNUNET_KEY]
