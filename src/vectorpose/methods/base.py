"""What a pretraining method is: which heads it trains and how its loss terms are weighted."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses.masked import masked_mse
from ..losses.vector import vector_loss
from ..models.backbones import AnyBackboneConfig
from ..models.pretext_network import PretextNetwork
from ..pretext.boundary import boundary_target


@dataclass(frozen=True)
class PretextMethod:
    """A pretext objective ``w_vp * L_VP + w_rec * L_rec + w_b * L_boundary``; a zero weight drops that head.

    ``pretrains=False`` (all weights zero) marks the no-pretraining baseline, so that benchmarks can
    name it like any other method. Batches are dicts with ``"input"`` ``(B, 1, P, P, P)``, ``"clean"`` ``(B, 1, P, P, P)`` in
    ``[0, 1]`` and ``"vectors"`` ``(B, 9, 3)`` (see :mod:`vectorpose.pretext.sample`); a ``"boundary"``
    ``(B, 1, P, P, P)`` already computed by the data pipeline is used as the boundary target.

    ``masked_input`` (masked image modelling): the input is the clean crop with random blocks hidden
    instead of a corrupted one, the batch carries their ``"mask"`` ``(B, 1, P, P, P)`` (bool), and the
    reconstruction term is the mean squared error over the hidden voxels
    (:func:`~vectorpose.losses.masked.masked_mse`) instead of L1 over all voxels.
    """

    name: str
    description: str
    vector_weight: float = 0.0
    reconstruction_weight: float = 0.0
    boundary_weight: float = 0.0
    pretrains: bool = True
    masked_input: bool = False

    def __post_init__(self):
        weights = (self.vector_weight, self.reconstruction_weight, self.boundary_weight)
        if any(w < 0 for w in weights):
            raise ValueError(f"loss weights must be >= 0, got {weights} for method {self.name!r}")
        if not self.pretrains:
            if any(weights):
                raise ValueError(f"method {self.name!r} does not pretrain, so its loss weights must be 0, got {weights}")
            if self.masked_input:
                raise ValueError(f"method {self.name!r} does not pretrain, so it masks no input")
            return
        if self.boundary_weight > 0 and self.reconstruction_weight == 0:
            raise ValueError(f"method {self.name!r}: a boundary term needs the reconstruction term")
        if self.vector_weight == 0 and self.reconstruction_weight == 0:
            raise ValueError(f"method {self.name!r} has no loss term")
        if self.masked_input and self.reconstruction_weight == 0:
            raise ValueError(f"method {self.name!r}: a masked input needs the reconstruction term")

    def build_network(self, backbone: AnyBackboneConfig) -> PretextNetwork:
        if not self.pretrains:
            raise ValueError(f"method {self.name!r} has no pretext network")
        return PretextNetwork(
            backbone,
            vector_head=self.vector_weight > 0,
            restoration=self.reconstruction_weight > 0,
            boundary=self.boundary_weight > 0,
        )

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss term (unweighted, for logging) and ``"total"`` (weighted sum, for backprop)."""
        terms: dict[str, torch.Tensor] = {}
        total = outputs[next(iter(outputs))].new_zeros(())
        if self.vector_weight > 0:
            vp = vector_loss(outputs["vectors"], batch["vectors"])
            terms.update({"vp": vp["total"], "vp_r": vp["r"], "vp_theta": vp["theta"], "vp_phi": vp["phi"]})
            total = total + self.vector_weight * vp["total"]
        if self.reconstruction_weight > 0:
            if self.masked_input:
                terms["rec"] = masked_mse(outputs["restored"], batch["clean"], batch["mask"])
            else:
                terms["rec"] = F.l1_loss(outputs["restored"], batch["clean"])
            total = total + self.reconstruction_weight * terms["rec"]
        if self.boundary_weight > 0:
            target = batch.get("boundary")
            if target is None:
                with torch.no_grad():
                    target = boundary_target(batch["clean"])
            terms["boundary"] = F.l1_loss(outputs["boundary"], target)
            total = total + self.boundary_weight * terms["boundary"]
        terms["total"] = total
        return terms


METHODS: dict[str, PretextMethod] = {}


def register(method: PretextMethod) -> PretextMethod:
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> PretextMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}") from None
