"""Planning a run: the target spacing, the patch and the batch, from the dataset and a voxel budget.

nnU-Net plans each dataset from its fingerprint (median spacing and shape) and the memory of the GPU
it expects. Here the device enters as a :class:`VoxelBudget`: the voxels one patch and one step
(batch × patch) may hold, chosen so that a fine-tuning step of the default network stays near a
second on this project's reference machines (:data:`BUDGETS`; the measurements are in
``docs/performance.md``). From the budget:

- **spacing** (only when it is ``auto``): the median spacing (:func:`~vectorpose.data.resampling.target_spacing`),
  coarsened while the median scan holds more than ``1 / MIN_COVERAGE`` patches' worth of voxels, so
  that one patch still sees a good share of the body. The finer axes grow first, by 3 % a round,
  until they reach the coarsest; then all axes grow together. This is nnU-Net's rule for its
  low-resolution configuration, with the budget of the device instead of a GPU's;
- **patch** (``--patch auto``): the 95th percentile of the scans' shapes, rounded up to the network's
  size divisor; while it exceeds the budget, the axis with the largest extent in millimetres loses one
  divisor (down to two divisors while another axis can still give). On anisotropic data the patch is
  anisotropic in voxels and closer to a cube in millimetres;
- **batch** (``--batch auto``): as many patches as the step budget holds, between
  :data:`MIN_BATCH` and :data:`MAX_BATCH`.

Every choice comes with its reason, for ``vectorpose plan`` and the run's ``plan.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .resampling import choose_spacing, parse_spacing, same_spacing

MIN_COVERAGE = 0.25
SPACING_GROWTH = 1.03
MIN_BATCH = 2
MAX_BATCH = 8


@dataclass(frozen=True)
class VoxelBudget:
    """At most ``patch`` voxels in one patch and ``step`` voxels in one step's batch."""

    patch: int
    step: int

    def __post_init__(self):
        if self.patch < 1 or self.step < MIN_BATCH * self.patch:
            raise ValueError(f"a budget needs patch >= 1 and step >= {MIN_BATCH} patches, got patch {self.patch}, step {self.step}")


# cpu: on one thread of the 2-core reference machine, the default network's forward and backward pass
# over 4 x 48x64x48 voxels (Hippocampus) took 0.82 s; cuda: nnU-Net's usual 2 x 128^3 on one GPU.
BUDGETS = {"cpu": VoxelBudget(patch=64**3, step=4 * 48 * 64 * 48), "cuda": VoxelBudget(patch=128**3, step=2 * 128**3)}


def budget_for(device_type: str) -> VoxelBudget:
    """The budget of a ``torch.device.type``: ``cuda``'s for CUDA, the CPU's for anything else."""
    return BUDGETS["cuda" if device_type == "cuda" else "cpu"]


def median_extent(shapes, spacings) -> tuple[float, float, float]:
    """Median size in mm per axis of scans of ``shapes`` (voxels) at ``spacings`` (mm)."""
    extent = np.asarray(shapes, dtype=np.float64) * np.asarray(spacings, dtype=np.float64)
    return tuple(float(v) for v in np.median(extent, axis=0))  # type: ignore[return-value]


def coarsened_spacing(spacing, extent, patch_voxels: int, min_coverage: float = MIN_COVERAGE) -> tuple[float, float, float]:
    """``spacing`` (mm) coarsened until a scan of ``extent`` (mm) holds at most ``patch_voxels / min_coverage``
    voxels: the axes finer than the coarsest grow first (never past it), then all together."""
    s = np.asarray(spacing, dtype=np.float64).copy()
    e = np.asarray(extent, dtype=np.float64)
    if s.shape != (3,) or e.shape != (3,) or not (s > 0).all() or not (e > 0).all():
        raise ValueError(f"need three positive spacings and extents, got {spacing}, {extent}")
    limit = patch_voxels / min_coverage
    while np.prod(e / s) > limit:
        finer = s < s.max()
        if finer.any():
            s[finer] = np.minimum(s[finer] * SPACING_GROWTH, s.max())
        else:
            s *= SPACING_GROWTH
    return tuple(float(v) for v in s)  # type: ignore[return-value]


def planned_spacing(choice: str, spacings, shapes, budget: VoxelBudget | None) -> tuple[tuple[float, float, float] | None, str]:
    """The spacing ``choice`` (``auto``, ``native`` or ``X,Y,Z``) gives for scans of ``shapes`` at
    ``spacings`` (their own grids), and why; ``auto`` is coarsened to ``budget`` (none: not at all)."""
    target = choose_spacing(choice, spacings)
    parsed = parse_spacing(choice)
    if parsed == "native":
        return None, "spacing: each scan's own grid (--spacing native)"
    if parsed != "auto":
        return target, "spacing: given"
    assert target is not None
    reason = f"spacing: the dataset's spacing (median per axis; nnU-Net's rule for anisotropic data) is {_mm(target)}"
    if budget is not None:
        coarse = coarsened_spacing(target, median_extent(shapes, spacings), budget.patch)
        if not same_spacing(coarse, target):
            reason += (f"; the median scan would hold more than {1 / MIN_COVERAGE:g} patches of {budget.patch:,} voxels "
                       f"(this device's budget), so it is coarsened to {_mm(coarse)}, finer axes first")
            target = coarse
    return target, reason


def _mm(spacing) -> str:
    return " x ".join(f"{v:.3g}" for v in spacing) + " mm"


def planned_patch(shapes, spacing, divisor: int, patch_voxels: int) -> tuple[int, int, int]:
    """The 95th percentile of ``shapes`` per axis rounded up to ``divisor``, shrunk one ``divisor`` at a
    time on the axis of largest extent in mm (``spacing``) until it holds at most ``patch_voxels``;
    no axis goes below ``2 * divisor`` while another can still give."""
    p95 = np.percentile(np.asarray(shapes, dtype=np.float64), 95, axis=0)
    patch = [max(divisor, math.ceil(v / divisor) * divisor) for v in p95]
    spacing = np.asarray(spacing, dtype=np.float64)
    while math.prod(patch) > patch_voxels:
        # an axis keeps two divisors' worth (at least two voxels at the coarsest level) while another can give
        shrinkable = [a for a in range(3) if patch[a] > 2 * divisor] or [a for a in range(3) if patch[a] > divisor]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (patch[a] * spacing[a], patch[a]))
        patch[axis] -= divisor
    return tuple(patch)  # type: ignore[return-value]


def planned_batch(patch, step_voxels: int) -> int:
    """How many ``patch``-sized patches ``step_voxels`` holds, between :data:`MIN_BATCH` and :data:`MAX_BATCH`."""
    return int(min(MAX_BATCH, max(MIN_BATCH, step_voxels // math.prod(patch))))


@dataclass
class Plan:
    """A run's spacing (``None``: each scan's own grid), patch and batch, with the reasons for each;
    ``ct_window`` (HU) for CT."""

    spacing: tuple[float, float, float] | None
    patch: tuple[int, int, int]
    batch: int
    budget: VoxelBudget
    median_shape: tuple[int, int, int]
    reasons: list[str] = field(default_factory=list)
    ct_window: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {"spacing": None if self.spacing is None else list(self.spacing), "patch_size": list(self.patch), "batch_size": self.batch,
                "ct_window": None if self.ct_window is None else list(self.ct_window), "budget": asdict(self.budget),
                "median_shape": list(self.median_shape), "reasons": list(self.reasons)}

    def summary(self) -> str:
        spacing = "each scan's own" if self.spacing is None else _mm(self.spacing)
        lines = [f"spacing     {spacing}", f"patch       {' x '.join(map(str, self.patch))} voxels",
                 f"batch       {self.batch}"] + ([f"CT window   {self.ct_window[0]:.0f} to {self.ct_window[1]:.0f} HU"]
                                                     if self.ct_window else []) + [f"median scan {' x '.join(map(str, self.median_shape))} voxels at that spacing"]
        return "\n".join(lines + ["", "why:"] + [f"  - {r}" for r in self.reasons])


def plan_patch_and_batch(shapes, spacing, divisor: int, budget: VoxelBudget, patch: tuple[int, int, int] | None = None,
                         batch: int | None = None) -> Plan:
    """The plan for scans of ``shapes`` (voxels, already at ``spacing``); a given ``patch`` or ``batch`` is kept."""
    reasons = []
    if patch is None:
        patch = planned_patch(shapes, spacing, divisor, budget.patch)
        reasons.append(f"patch: the 95th percentile of the scans' shapes rounded up to {divisor} (the network's size divisor), "
                       f"shrunk along the longest axis in mm to at most {budget.patch:,} voxels")
    else:
        reasons.append("patch: given")
    if batch is None:
        batch = planned_batch(patch, budget.step)
        reasons.append(f"batch: {budget.step:,} voxels a step hold {budget.step // math.prod(patch)} such patches "
                       f"(kept within {MIN_BATCH}..{MAX_BATCH})")
    else:
        reasons.append("batch: given")
    median = tuple(int(v) for v in np.median(np.asarray(shapes), axis=0))
    return Plan(None, tuple(int(p) for p in patch), int(batch), budget, median, reasons)  # type: ignore[arg-type]
