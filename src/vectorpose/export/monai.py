"""Weights for ``monai.networks.nets.DynUNet``: ``OUT.safetensors`` (its state dict) and ``OUT.json``
(the class and its constructor arguments).

A run made with ``--backbone dynunet`` holds a real DynUNet (:mod:`~vectorpose.models.dynunet_backbone`),
so its weights are DynUNet's under DynUNet's own names. ``OUT.safetensors`` holds every name of
``DynUNet(**args).state_dict()``: DynUNet reaches its blocks a second time through ``skip_layers``,
and those names are written as copies (safetensors cannot store one tensor under two names), so that
a plain ``net.load_state_dict(load_file(path))`` succeeds with ``strict=True``. The file is therefore
about twice the size of the weights.

- A fine-tuned segmentation run: its 1×1×1 head (``head.conv``, ``(num_classes, c_0, 1, 1, 1)``)
  becomes DynUNet's ``output_block.conv.conv``; ``args["out_channels"]`` is the number of classes and
  the DynUNet computes exactly the run's logits ``(B, num_classes, X, Y, Z)``.
- A pretraining run: everything but the output layer, which belongs to the task. ``args`` then lacks
  ``out_channels`` (``missing_args``) and ``missing_weights`` names the ``output_block`` tensors
  that a ``strict=False`` load leaves at their initialisation.

``OUT.json`` also carries what an input must look like (the run's ``preprocessing``: RAS+ voxel order,
the intensity normalisation) and where the weights came from (``source``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import DynUNet
from safetensors.torch import save_file

from .. import __version__
from ..errors import CheckpointError, VectorPoseError
from ..models.dynunet_backbone import KIND as DYNUNET, MONAI_CLASS, DynUNetBackboneConfig
from ..models.files import load_model
from ..utils.files import atomic_write, write_json

WEIGHTS_SUFFIX = ".safetensors"
SPEC_SUFFIX = ".json"
# names in a VectorPOSE model -> names in DynUNet
BACKBONE_PREFIX = "backbone.net."
HEAD_TO_OUTPUT_BLOCK = {"head.conv.weight": "output_block.conv.conv.weight", "head.conv.bias": "output_block.conv.conv.bias"}


def monai_paths(out: str | Path) -> tuple[Path, Path]:
    """``(OUT.safetensors, OUT.json)``; an ``out`` that already ends in either suffix names the same pair."""
    out = Path(out)
    if out.suffix in (WEIGHTS_SUFFIX, SPEC_SUFFIX):
        out = out.with_suffix("")
    return out.with_name(out.name + WEIGHTS_SUFFIX), out.with_name(out.name + SPEC_SUFFIX)


def export_monai(run: str | Path, out: str | Path, overwrite: bool = False) -> tuple[Path, Path, dict]:
    """Write the DynUNet of a ``--backbone dynunet`` run (pretraining or fine-tuning; folder or model
    file) as ``OUT.safetensors`` + ``OUT.json``; returns both paths and the JSON written.

    Raises:
        VectorPoseError: an output exists (without ``overwrite``), the run has another backbone, or
        its weights do not fit the DynUNet its metadata describes.
        CheckpointError: the run's model files are missing or unsafe.
    """
    weights_path, spec_path = monai_paths(out)
    for path in (weights_path, spec_path):
        if path.exists() and not overwrite:
            raise VectorPoseError(f"{path}: already exists; pass --overwrite to replace it")
    state, meta = load_model(run)
    if meta["backbone"].get("kind") != DYNUNET:
        raise VectorPoseError(f"{run}: trained with the {meta['backbone'].get('kind', 'unet')} backbone, which is no MONAI network class; "
                              f"export to MONAI needs a run pretrained with --backbone dynunet")
    backbone = DynUNetBackboneConfig.from_json(meta["backbone"])
    segmentation = meta["task"] == "segmentation"
    if segmentation and "num_classes" not in meta:
        raise CheckpointError(f"{run}: segmentation metadata lacks 'num_classes'")
    out_channels = int(meta["num_classes"]) if segmentation else 1
    weights, missing = _dynunet_state(backbone, state, out_channels, segmentation, run)
    args = backbone.monai_args(out_channels)
    spec: dict = {"class": MONAI_CLASS}
    if segmentation:
        spec["args"] = args
        spec["labels"] = meta.get("labels", {})
    else:
        del args["out_channels"]
        spec.update({
            "args": args,
            "missing_args": ["out_channels"],
            "missing_weights": missing,
            "note": "pretrained without a segmentation head: pass out_channels (your number of classes) and load with "
                    "strict=False; the missing output_block tensors keep DynUNet's initialisation",
        })
    spec["preprocessing"] = meta["preprocessing"]
    spec["source"] = {"run": str(run), "task": meta["task"], "method": meta["method"], "step": meta["step"], "vectorpose": __version__}
    atomic_write(weights_path, lambda tmp: save_file(weights, str(tmp), metadata={"class": MONAI_CLASS}))
    write_json(spec_path, spec)
    return weights_path, spec_path, spec


def _dynunet_state(backbone: DynUNetBackboneConfig, state: dict[str, torch.Tensor], out_channels: int, segmentation: bool,
                   run: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every tensor of ``DynUNet(**args).state_dict()`` filled from the run (aliases as copies; without the
    output layer for a pretraining run), and the names left out."""
    network = DynUNet(**backbone.monai_args(out_channels))
    own = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if segmentation:
        own.update({name: state[key] for key, name in HEAD_TO_OUTPUT_BLOCK.items() if key in state})
    # DynUNet lists each tensor of its blocks twice (the second time under skip_layers.*); the run stores it once
    first: dict[int, str] = {}
    for name, tensor in network.state_dict(keep_vars=True).items():
        first.setdefault(id(tensor), name)
        if first[id(tensor)] != name and first[id(tensor)] in own:
            own[name] = own[first[id(tensor)]]
    try:
        missing, unexpected = network.load_state_dict(own, strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        raise VectorPoseError(f"{run}: the weights do not fit the DynUNet in its metadata ({str(exc).strip().splitlines()[-1].strip()})") from None
    allowed = set() if segmentation else set(HEAD_TO_OUTPUT_BLOCK.values())
    if unexpected or set(missing) - allowed:
        problem = f"unexpected {sorted(unexpected)[:3]}" if unexpected else f"missing {sorted(set(missing) - allowed)[:3]}"
        raise VectorPoseError(f"{run}: the weights do not fit the DynUNet in its metadata ({problem})")
    weights = {k: v.detach().to("cpu").clone().contiguous() for k, v in network.state_dict().items() if k not in missing}
    return weights, sorted(missing)
