"""Loading pretrained backbone weights into a segmentation network, with a report of what moved.

``encoder`` transfers the tensors the backbone names in ``encoder_parameter_names()``
(``backbone.encoder.*`` and ``backbone.bottleneck.*`` of the U-Net; the input block, down-sampling
blocks and bottleneck of the DynUNet); ``all`` transfers every ``backbone.*`` tensor, the decoder too
(the paper's choice). Task heads never transfer. A checkpoint whose backbone
or preprocessing differs from the target is refused: silently mixing them gives a network that
looks fine and is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError

TRANSFER_MODES = ("encoder", "all")


@dataclass
class TransferReport:
    """Tensors copied, pretrained tensors left out (with why), and target tensors left at their init."""

    mode: str
    matched: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    skipped: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    missing: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"transfer ({self.mode}): {len(self.matched)} tensors matched, {len(self.skipped)} skipped, {len(self.missing)} left at initialisation"]
        for name, shape in self.matched:
            lines.append(f"  matched  {name} {list(shape)}")
        for name, shape, why in self.skipped:
            lines.append(f"  skipped  {name} {list(shape)} ({why})")
        for name, shape in self.missing:
            lines.append(f"  new      {name} {list(shape)}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "matched": [[n, list(s)] for n, s in self.matched],
            "skipped": [[n, list(s), w] for n, s, w in self.skipped],
            "missing": [[n, list(s)] for n, s in self.missing],
        }


def transferable_names(network: nn.Module, mode: str) -> set[str]:
    """Names of ``network``'s state dict that ``mode`` transfers (``network.backbone`` says which are its encoder)."""
    if mode == "all":
        return {n for n in network.state_dict() if n.startswith("backbone.")}
    return {"backbone." + n for n in network.backbone.encoder_parameter_names()}


def check_compatible(source: str, pretrained_meta: dict, backbone: dict, preprocessing: dict) -> None:
    """Refuse a pretrained model whose backbone or preprocessing differs from the target's."""
    if pretrained_meta["backbone"] != backbone:
        diff = sorted(k for k in set(backbone) | set(pretrained_meta["backbone"]) if backbone.get(k) != pretrained_meta["backbone"].get(k))
        raise CheckpointError(f"{source}: pretrained backbone differs from the fine-tuning backbone in {', '.join(diff)}")
    if pretrained_meta["preprocessing"] != preprocessing:
        raise CheckpointError(
            f"{source}: pretrained with preprocessing {pretrained_meta['preprocessing']}, but this data needs {preprocessing}"
        )


def transfer_weights(network: nn.Module, pretrained: dict[str, torch.Tensor], mode: str = "encoder") -> TransferReport:
    """Copy the ``mode`` part of ``pretrained`` into ``network`` in place; returns the report."""
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode must be one of {TRANSFER_MODES}, got {mode!r}")
    target = network.state_dict()
    transferable = transferable_names(network, mode)
    report = TransferReport(mode)
    updates = {}
    for name, tensor in pretrained.items():
        shape = tuple(tensor.shape)
        if not name.startswith("backbone."):
            report.skipped.append((name, shape, "pretext head"))
        elif name not in target:
            report.skipped.append((name, shape, "no such tensor in the segmentation network"))
        elif name not in transferable:
            report.skipped.append((name, shape, "not part of the transferred backbone"))
        elif tuple(target[name].shape) != shape:
            report.skipped.append((name, shape, f"shape differs from {list(target[name].shape)}"))
        else:
            updates[name] = tensor
            report.matched.append((name, shape))
    if not updates:
        raise CheckpointError("no pretrained tensor matches the segmentation network")
    report.missing = [(n, tuple(t.shape)) for n, t in target.items() if n not in updates]
    target.update({k: v.to(target[k].dtype) for k, v in updates.items()})
    network.load_state_dict(target)
    return report
