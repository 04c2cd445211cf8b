"""The network an nnU-Net v2 plans file describes, as a VectorPOSE backbone.

nnU-Net v2 (Isensee et al., Nature Methods 2021) writes, per configuration of its plans file
(``nnUNetPlans.json``), the architecture it will train: ``architecture.network_class_name`` (a class
of the ``dynamic-network-architectures`` package, e.g. ``PlainConvUNet`` or ``ResidualEncoderUNet``),
its ``arch_kwargs`` and ``_kw_requires_import`` (the kwargs that name classes). This module builds
exactly that network with that package, and :class:`NnUNetBackbone` runs its encoder stages and its
decoder stages (transposed convolution, concatenation with the skip, convolutions) without the
segmentation layers, returning the features the VectorPOSE heads read
(:class:`~vectorpose.models.backbone.BackboneFeatures`):

- ``decoded``: the last decoder stage, ``(B, f_0, P, P, P)``, the input of nnU-Net's segmentation layer;
- ``coarse``: the bottleneck (last encoder stage) and the two coarsest decoder stages.

Its ``state_dict`` is the nnU-Net network's under ``net.``, each tensor once: nnU-Net's modules reach
some tensors under several names (``decoder.encoder.*`` is the encoder again, ``convs.N.all_modules.0``
is ``convs.N.conv``), which safetensors refuses to store twice, so the aliases are left out when saving
and filled in again when loading. :func:`nnunet_weights` gives the full nnU-Net state dict, aliases
included, as nnU-Net expects it. The segmentation layers (``decoder.seg_layers``) exist but are never
run or exported: nnU-Net replaces them for its own classes.

Inputs are single-channel cubes ``(B, 1, P, P, P)`` with ``P`` divisible by the network's total
stride on every axis (:meth:`NnUNetBackboneConfig.check_patch_size`). The first stage must keep full
resolution (stride 1), as in every nnU-Net plan, so that the voxel head sees full-resolution features.
"""

from __future__ import annotations

import copy
import math
import pydoc
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import VectorPoseError
from ..utils.files import read_json_object
from .backbone import BackboneFeatures
from .shared_tensors import store_each_tensor_once

KIND = "nnunet"
# a plans file is user input: only classes of these packages may be named in it (nothing that runs code)
ALLOWED_CLASS_PREFIXES = ("dynamic_network_architectures.", "torch.nn.")


class PlansError(VectorPoseError, ValueError):
    """A plans file that cannot be read or describes no usable network."""


def _require_dna():
    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError:
        raise VectorPoseError("the nnunet backbone needs nnU-Net's architecture package: pip install 'vectorpose[nnunet]'") from None


def _locate(name: object, what: str) -> type:
    if not isinstance(name, str) or not name.startswith(ALLOWED_CLASS_PREFIXES):
        raise PlansError(f"{what} {name!r} is not a class of dynamic_network_architectures or torch.nn")
    if name.startswith("dynamic_network_architectures."):
        _require_dna()
    found = pydoc.locate(name)
    if not isinstance(found, type):
        raise PlansError(f"{what} {name!r} not found (is dynamic-network-architectures up to date?)")
    return found


def resolve_configuration(plans: dict, name: str, source: str) -> dict:
    """Configuration ``name`` of a plans dict, with ``inherits_from`` resolved (the child's keys win)."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise PlansError(f"{source}: not an nnU-Net v2 plans file (no 'configurations')")
    chain, seen = [], []
    while True:
        if name in seen:
            raise PlansError(f"{source}: configurations inherit in a circle ({' -> '.join(seen + [name])})")
        if name not in configurations:
            raise PlansError(f"{source}: no configuration {name!r}; the plans have {', '.join(sorted(configurations))}")
        seen.append(name)
        chain.append(configurations[name])
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    merged: dict = {}
    for config in reversed(chain):
        merged.update(copy.deepcopy(config))
    merged.pop("inherits_from", None)
    return merged


@dataclass(frozen=True)
class NnUNetBackboneConfig:
    """An nnU-Net v2 architecture: what ``architecture`` of one plans configuration says; travels inside
    every model's metadata (``kind: "nnunet"``), so a run rebuilds it without the plans file."""

    network_class_name: str
    arch_kwargs: dict
    kw_requires_import: tuple[str, ...] = ()
    configuration: str = "3d_fullres"
    plans_name: str = ""
    dataset_name: str = ""
    nnunet_patch_size: tuple[int, ...] = ()
    in_channels: int = 1

    def __post_init__(self):
        """Raises :class:`PlansError` (a message without the file's name) for an unusable architecture."""
        object.__setattr__(self, "kw_requires_import", tuple(str(k) for k in self.kw_requires_import))
        object.__setattr__(self, "nnunet_patch_size", tuple(int(p) for p in self.nnunet_patch_size))
        if self.in_channels != 1:
            raise ValueError(f"only single-channel networks are pretrained, got in_channels={self.in_channels}")
        kwargs = self.arch_kwargs
        if not isinstance(kwargs, dict):
            raise PlansError("arch_kwargs is not an object")
        for key in ("n_stages", "features_per_stage", "strides", "conv_op"):
            if key not in kwargs:
                raise PlansError(f"arch_kwargs lacks {key!r}")
        _locate(self.network_class_name, "network class")
        if kwargs["conv_op"] != "torch.nn.modules.conv.Conv3d" and kwargs["conv_op"] != "torch.nn.Conv3d":
            raise PlansError(f"configuration {self.configuration!r} is not 3D (conv_op {kwargs['conv_op']}); use a 3d configuration")
        if int(kwargs["n_stages"]) < 3:
            raise PlansError(f"{kwargs['n_stages']} stages; the vector head needs at least 3 (bottleneck and two decoder stages)")
        if any(s != 1 for s in self.strides[0]):
            raise PlansError(f"the first stage has stride {self.strides[0]}; full resolution (stride 1) is needed for the voxel head")

    @property
    def strides(self) -> tuple[tuple[int, int, int], ...]:
        """Per stage, the stride on each axis."""
        out = []
        for s in self.arch_kwargs["strides"]:
            out.append(tuple(int(v) for v in s) if isinstance(s, (list, tuple)) else (int(s),) * 3)
        return tuple(out)  # type: ignore[return-value]

    @property
    def total_stride(self) -> tuple[int, int, int]:
        """Per axis, the product of the stage strides: every input side must be a multiple of it."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(3))  # type: ignore[return-value]

    @property
    def size_divisor(self) -> int:
        """The smallest side divisible by every axis's total stride (cubic patches)."""
        return math.lcm(*self.total_stride)

    @property
    def channels(self) -> tuple[int, ...]:
        features = self.arch_kwargs["features_per_stage"]
        n = int(self.arch_kwargs["n_stages"])
        return tuple(int(f) for f in features) if isinstance(features, (list, tuple)) else (int(features),) * n

    @property
    def coarse_channels(self) -> tuple[int, int, int]:
        """Channels of the bottleneck and the two coarsest decoder stages (the vector head's input)."""
        c = self.channels
        return c[-1], c[-2], c[-3]

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each decoder stage's output, coarse to fine (``BackboneFeatures.levels``)."""
        return tuple(reversed(self.channels[:-1]))

    def check_patch_size(self, patch: int) -> None:
        """Refuse a cubic pretraining patch ``P`` that some axis's total stride does not divide."""
        total = self.total_stride
        if any(patch % t for t in total):
            raise ValueError(f"patch {patch} is not divisible by the nnU-Net network's total stride per axis {list(total)}; "
                             f"use a multiple of {self.size_divisor} (e.g. {self.size_divisor * max(1, round(patch / self.size_divisor))})")

    def build_network(self) -> nn.Module:
        """nnU-Net's network, built by ``dynamic-network-architectures`` as nnU-Net builds it (no deep supervision)."""
        _require_dna()
        kwargs = copy.deepcopy(self.arch_kwargs)
        for key in self.kw_requires_import:
            if kwargs.get(key) is not None:
                kwargs[key] = _locate(kwargs[key], key)
        kwargs["deep_supervision"] = False
        network_class = _locate(self.network_class_name, "network class")
        try:
            network = network_class(input_channels=self.in_channels, num_classes=2, **kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise PlansError(f"{self.network_class_name} cannot be built from these arch_kwargs ({exc})") from None
        if hasattr(network, "initialize"):
            network.apply(network.initialize)
        return network

    def to_json(self) -> dict:
        return {
            "kind": KIND,
            "network_class_name": self.network_class_name,
            "arch_kwargs": copy.deepcopy(self.arch_kwargs),
            "kw_requires_import": list(self.kw_requires_import),
            "configuration": self.configuration,
            "plans_name": self.plans_name,
            "dataset_name": self.dataset_name,
            "nnunet_patch_size": list(self.nnunet_patch_size),
            "in_channels": self.in_channels,
        }

    @classmethod
    def from_json(cls, d: dict) -> NnUNetBackboneConfig:
        d = dict(d)
        if d.pop("kind", KIND) != KIND:
            raise ValueError("not an nnunet backbone")
        return cls(**d)

    @classmethod
    def from_plans(cls, plans_file: str | Path, configuration: str = "3d_fullres") -> NnUNetBackboneConfig:
        """Read configuration ``configuration`` of an nnU-Net v2 plans file (``nnUNetPlans.json``)."""
        path = Path(plans_file)
        plans = read_json_object(path, "plans file", PlansError)
        config = resolve_configuration(plans, configuration, str(path))
        arch = config.get("architecture")
        if not isinstance(arch, dict) or "network_class_name" not in arch or "arch_kwargs" not in arch:
            raise PlansError(f"{path}: configuration {configuration!r} has no 'architecture' (plans of nnU-Net before 2.4?); "
                             f"plan again with a current nnUNetv2_plan_and_preprocess")
        try:
            backbone = cls(network_class_name=arch["network_class_name"], arch_kwargs=arch["arch_kwargs"],
                           kw_requires_import=tuple(arch.get("_kw_requires_import", ())), configuration=configuration,
                           plans_name=str(plans.get("plans_name", path.name)), dataset_name=str(plans.get("dataset_name", "")),
                           nnunet_patch_size=tuple(config.get("patch_size", ())))
            backbone.build_network()  # every problem of the architecture surfaces here, naming the file
            return backbone
        except PlansError as exc:
            raise PlansError(f"{path}: {exc}") from None


class NnUNetBackbone(nn.Module):
    """nnU-Net's network from :class:`NnUNetBackboneConfig`, returning
    :class:`~vectorpose.models.backbone.BackboneFeatures`; see the module docstring for shapes."""

    def __init__(self, config: NnUNetBackboneConfig):
        super().__init__()
        self.config = config
        self.net = config.build_network()
        store_each_tensor_once(self)

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        total = self.config.total_stride
        if x.ndim != 5 or any(n % t for n, t in zip(x.shape[2:], total)):
            raise ValueError(f"input must be (B, C, X, Y, Z) with spatial sizes divisible by {list(total)}, got {tuple(x.shape)}")
        skips = self.net.encoder(x)  # every encoder stage's output, the bottleneck last
        decoder = self.net.decoder
        x = skips[-1]
        levels = [x]
        for s, stage in enumerate(decoder.stages):
            x = stage(torch.cat((decoder.transpconvs[s](x), skips[-(s + 2)]), dim=1))
            levels.append(x)
        return BackboneFeatures(decoded=x, coarse=(levels[0], levels[1], levels[2]), levels=tuple(levels[1:]))


# nnU-Net never loads these from pretrained weights: they depend on its classes
SEGMENTATION_LAYERS = ".seg_layers."


def nnunet_weights(config: NnUNetBackboneConfig, pretext_state: dict[str, torch.Tensor], prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """nnU-Net's state dict (every name nnU-Net's network has, aliases included, without the
    segmentation layers) holding the backbone tensors of a pretraining state dict; CPU tensors."""
    backbone = NnUNetBackbone(config)
    own = {k[len(prefix):]: v for k, v in pretext_state.items() if k.startswith(prefix)}
    try:
        backbone.load_state_dict(own)
    except RuntimeError as exc:
        raise VectorPoseError(f"the weights do not fit the nnU-Net network in the metadata ({str(exc).splitlines()[0]})") from None
    return {k: v.detach().to("cpu") for k, v in backbone.net.state_dict().items() if SEGMENTATION_LAYERS not in k}
