"""Few-label fine-tuning: a segmentation network, from scratch or from a pretraining run.

Recipe: Dice (over the foreground classes) + cross-entropy (MONAI ``DiceCELoss``, batch Dice),
class-balanced foreground-oversampled patches with MONAI augmentation, AdamW with a linear warm-up
then cosine decay (or nnU-Net's SGD with Nesterov momentum and polynomial decay: ``optimizer="sgd"``,
``schedule="poly"``), periodic validation Dice per class by sliding-window inference on the validation
split, and the final model kept as safetensors + JSON (``keep="best"``: the best validation model).

With ``init``, the backbone architecture and the preprocessing come from the pretrained model's
metadata, and ``transfer`` chooses what is loaded: ``encoder`` (encoder + bottleneck) or ``all``
(encoder, bottleneck and decoder, as in the paper). ``pretrained_lr_scale`` and ``freeze_steps``
(transferred layers frozen while the new ones settle) let a benchmark choose how the transferred
layers train, on the validation split.

``precision="bf16"`` runs the training step's forward pass under bfloat16 autocast (the convolutions
in bfloat16, the loss on float32 logits); validation, evaluation and prediction stay in float32. It
changes the numbers, so it is part of the recipe, not a speed option.

The steps, logs, checkpoints and resume are :class:`~vectorpose.training.loop.TrainingLoop`'s; this
module adds :class:`SegmentationTask` (the loss, validation and model files) and what comes before.

Run folder: ``config.json``, ``split.json``, ``transfer.json``, ``model.*`` (the kept weights: the last
step's, or with ``keep="best"`` those of the best validation Dice), ``last.*`` (the newest checkpoint),
``resume.pt``, ``metrics.jsonl``, ``tensorboard/``, and ``convergence.json``
(:mod:`~vectorpose.training.convergence`: whether validation Dice still rose in the last quarter,
which classes collapsed: validation Dice near 0 through the whole last quarter, with the voxel
confusion counts of the final weights on the validation cases then, and which still rose).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.optimizers import WarmupCosineSchedule

from ..data.ct_window import CT_WINDOW_HELP, parse_ct_window, resolve_ct_window
from ..data.datasets import Dataset, load_dataset
from ..data.planning import Plan, budget_for, plan_patch_and_batch, planned_spacing
from ..data.preprocessing import PreprocessedVolume, PreprocessingConfig, preprocess_dataset, resample_volume
from ..data.resampling import SPACING_HELP, parse_spacing
from ..data.splits import SPLIT_HELP, Split, cases_in_split, make_split, read_test_split
from ..data.validation import check_label_values, check_patch_fits
from ..devices import resolve_device
from ..errors import CheckpointError, DataError, VectorPoseError
from ..inference.metrics import case_metrics, confusion_counts
from ..inference.sliding_window import predict_labels
from ..models.backbone import BackboneConfig
from ..models.backbones import AnyBackboneConfig, backbone_from_json
from ..models.files import load_model, save_model
from ..models.segmentation_network import SegmentationNetwork, inference_state
from ..settings import setting
from ..utils.files import write_json
from .distributed import DistributedContext
from .loop import LoopConfig, TrainingLoop, TrainingTask
from .prefetch import DevicePrefetcher
from .convergence import CLASS_PREFIX, MEAN_KEY, Convergence, convergence, validation_curves
from .run import CONFIG_FILE, METRICS_FILE, check_run_dir, create_run_dir, resume_conflicts, step_loader
from .segmentation_data import AUGMENTATIONS, FOREGROUND_SAMPLING, SegmentationDataset
from .speed import bf16_autocast
from .transfer import TRANSFER_MODES, TransferReport, check_compatible, transfer_weights

SPLIT_FILE = "split.json"
PLAN_FILE = "plan.json"
TRANSFER_FILE = "transfer.json"
CONVERGENCE_FILE = "convergence.json"
# Which weights become model.*: the last step's, as nnU-Net tests its final checkpoint, or the best
# validation Dice's, which few validation cases make noisy (a single early round can win).
KEEP_CHOICES = ("final", "best")
OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("cosine", "poly")
SGD_MOMENTUM = 0.99  # nnU-Net's, with Nesterov momentum
POLY_EXPONENT = 0.9  # nnU-Net's: lr · (1 − progress)^0.9

# What a config.json written before a setting existed had run with: reading one back keeps its recipe.
RECIPE_BEFORE_SETTING = {"foreground_sampling": "voxel", "dice_background": True, "warmup": 0.0, "augmentation": "light",
                         "deep_supervision": False, "spacing": "native", "ct_window": "-1000,1000", "keep": "best"}


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a fine-tuning run; saved as ``config.json``.

    ``patch_size`` and ``batch_size`` ``None`` mean automatic (:mod:`~vectorpose.data.planning`: the
    95th percentile of the training shapes within the device's voxel budget). ``backbone`` ``None`` means the
    pretrained model's (or the default for a run from scratch). The labelled cases are given as
    ``label_fraction`` (a share of the training pool) or ``labelled`` (a count), not both; neither
    means all of them. ``freeze_steps``: the first steps, in which the transferred parameters stay
    frozen. ``flip_axes`` ``None`` means automatic (:func:`mirrored_axes`). ``warmup``: the share of
    the steps over which the learning rate rises linearly from 0, before the decay to 0 (``schedule``).
    """

    steps: int = setting(1000, "Optimisation steps.")
    batch_size: int | None = setting(None, "Patches per step [auto: as many as the device's voxel budget holds, 2 to 8].",
                                     flag="batch")
    lr: float = setting(2e-3, "Peak learning rate, reached after the warm-up (for --optimizer sgd, nnU-Net uses 0.01).")
    warmup: float = setting(0.05, "Share of the steps with a linear learning-rate warm-up from 0.")
    weight_decay: float = setting(1e-4, "Weight decay: AdamW's decoupled one, or SGD's L2 term (nnU-Net: 3e-5).")
    optimizer: str = setting("adamw", "adamw, or sgd: SGD with Nesterov momentum 0.99, as nnU-Net.", choices=OPTIMIZERS)
    schedule: str = setting("cosine", "Decay after the warm-up: cosine, or poly: (1 - progress)^0.9, as nnU-Net.", choices=SCHEDULES)
    precision: str = setting("fp32", "Arithmetic of the training step: fp32, or bf16 (bfloat16 autocast for the forward pass, the "
                                     "loss in float32; faster on CPUs with AMX and on recent GPUs).", choices=PRECISIONS)
    seed: int = setting(0, "Seed of the labelled subset, the weights and the patch stream.")
    split_seed: int = setting(0, "Seed of the test / validation split (keep it fixed across a study).")
    label_fraction: float | None = setting(None, "Share of the training pool that is labelled [1.0].", excludes="labelled")
    labelled: int | None = setting(None, "Number of labelled training cases (instead of a fraction).", flag=("labeled", "labelled"),
                                   excludes="label_fraction")
    test_fraction: float = setting(0.2, "Share of the cases held out as the test split (without --split).")
    split: str | None = setting(None, SPLIT_HELP)
    validation_fraction: float = setting(0.1, "Share of the cases held out for validation.")
    patch_size: tuple[int, int, int] | None = None
    backbone: AnyBackboneConfig | None = None
    transfer: str = setting("encoder", "What --init loads: encoder (+ bottleneck), or all (encoder and decoder).", choices=TRANSFER_MODES)
    pretrained_lr_scale: float = setting(1.0, "Learning-rate factor of the transferred layers.")
    freeze_steps: int = setting(0, "First steps, during which the transferred layers stay frozen.")
    foreground_prob: float = setting(0.33, "Share of patches centred on a labelled voxel.")
    foreground_sampling: str = setting("class", "How that voxel is drawn: class (a class present in the case, each equally likely, "
                                       "then one of its voxels) or voxel (any labelled voxel).", choices=FOREGROUND_SAMPLING)
    dice_background: bool = setting(False, "Count the background class in the Dice term of the loss.")
    deep_supervision: bool = setting(True, "An output layer on every decoder level below full resolution but the coarsest, "
                                           "whose loss is added (weights halving per level), as nnU-Net.")
    augmentation: str = setting("nnunet", "Patch augmentation: nnunet (nnU-Net's default kinds and strengths) or light.",
                                choices=AUGMENTATIONS)
    flip_axes: tuple[int, ...] | None = None
    val_every: int = setting(100, "Steps between validation rounds.")
    keep: str = setting("final", "Which weights become model.*: final (the last step's, as nnU-Net) or best (the best validation "
                                 "Dice; noisy when the validation split has few cases).", choices=KEEP_CHOICES)
    log_every: int = setting(10, "Steps between log rows.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(0, "DataLoader worker processes.")
    spacing: str = setting("auto", SPACING_HELP + " With --init, the pretrained model's spacing.")
    ct_window: str = setting("auto", CT_WINDOW_HELP + " With --init, the pretrained model's window.")

    def __post_init__(self):
        for name in ("steps", "batch_size", "val_every", "log_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.labelled is not None and self.label_fraction is not None:
            raise ValueError("give label_fraction (--label-fraction) or labelled (--labeled), not both")
        if self.labelled is None and self.label_fraction is None:
            object.__setattr__(self, "label_fraction", 1.0)  # every training case
        if self.label_fraction is not None and not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must lie in (0, 1], got {self.label_fraction}")
        if self.labelled is not None and self.labelled < 1:
            raise ValueError(f"labelled must be >= 1, got {self.labelled}")
        parse_spacing(self.spacing)
        parse_ct_window(self.ct_window)
        for name, choices in (("transfer", TRANSFER_MODES), ("keep", KEEP_CHOICES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("precision", PRECISIONS),
                              ("augmentation", AUGMENTATIONS), ("foreground_sampling", FOREGROUND_SAMPLING)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must lie in [0, 1), got {self.warmup}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.pretrained_lr_scale >= 0:
            raise ValueError(f"pretrained_lr_scale must be >= 0, got {self.pretrained_lr_scale}")
        if self.freeze_steps < 0 or self.workers < 0:
            raise ValueError(f"freeze_steps and workers must be >= 0, got {self.freeze_steps}, {self.workers}")
        if self.flip_axes is not None and any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ValueError(f"flip_axes must be among 0, 1, 2, got {self.flip_axes}")
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
            if len(self.patch_size) != 3 or min(self.patch_size) < 1:
                raise ValueError(f"patch_size must be three positive sizes, got {self.patch_size}")
        if self.flip_axes is not None:
            object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))

    def to_json(self) -> dict:
        d = asdict(self)
        d["backbone"] = self.backbone.to_json() if self.backbone else None
        d["patch_size"] = list(self.patch_size) if self.patch_size else None
        d["flip_axes"] = None if self.flip_axes is None else list(self.flip_axes)
        return d

    @classmethod
    def from_json(cls, d: dict) -> FinetuneConfig:
        d = {**RECIPE_BEFORE_SETTING, **d}
        d["backbone"] = backbone_from_json(d["backbone"]) if d.get("backbone") else None
        d["patch_size"] = tuple(d["patch_size"]) if d.get("patch_size") else None
        d["flip_axes"] = None if d.get("flip_axes") is None else tuple(d["flip_axes"])
        return cls(**d)


@dataclass
class FinetuneResult:
    network: SegmentationNetwork
    run_dir: Path
    best_dice: float  # the best validation Dice, and its step
    best_step: int
    split: Split
    model_dice: float  # the validation Dice and step of the weights in model.* (see ``FinetuneConfig.keep``)
    model_step: int
    transfer: TransferReport | None = None
    history: list[dict] = field(default_factory=list)
    convergence: Convergence | None = None


def num_classes_of(labels: dict[int, str]) -> int:
    if not labels or 0 not in labels:
        raise ValueError("dataset.json must declare its labels, including 0 (background)")
    return max(labels) + 1


def validation_class_dice(network: SegmentationNetwork, volumes: list[PreprocessedVolume], patch, num_classes: int, device) -> list[float]:
    """Dice of each foreground class, averaged over the volumes that score it (sliding-window inference
    in eval mode; the network is left in the mode it was in); NaN for a class no volume scores (absent
    from every label map and every prediction)."""
    scores = []
    for v in volumes:
        pred = predict_labels(network, np.asarray(v.image()), patch, device)
        dice = case_metrics(pred, np.asarray(v.label()), num_classes, hd95=False)["dice"]
        scores.append([np.nan if d is None else d for d in dice])
    scores = np.asarray(scores, dtype=float)
    scored = ~np.isnan(scores)
    sums = np.where(scored, scores, 0.0).sum(axis=0)
    return [float(s / n) if n else float("nan") for s, n in zip(sums, scored.sum(axis=0))]


def validation_confusion(network: SegmentationNetwork, volumes: list[PreprocessedVolume], patch, class_names: list[str], device) -> dict:
    """``{"classes": ["background", *class_names], "counts"}``: the voxel confusion counts of ``network``
    summed over ``volumes`` (:func:`~vectorpose.inference.metrics.confusion_counts`), predicted as in
    :func:`validation_class_dice`."""
    num_classes = len(class_names) + 1
    counts = sum((confusion_counts(predict_labels(network, np.asarray(v.image()), patch, device), np.asarray(v.label()), num_classes)
                  for v in volumes), np.zeros((num_classes, num_classes), dtype=np.int64))
    return {"classes": ["background", *class_names], "counts": counts.tolist()}


def segmentation_metadata(config: FinetuneConfig, backbone: AnyBackboneConfig, preprocessing: PreprocessingConfig, patch, num_classes: int,
                          labels: dict[int, str], flip_axes: tuple[int, ...], step: int, init: str | None, val_dice: float) -> dict:
    meta = {
        "task": "segmentation",
        "method": "scratch",
        "backbone": backbone.to_json(),
        "heads": {"segmentation": True},
        "patch_size": list(patch),
        "preprocessing": preprocessing.to_json(),
        "step": step,
        "num_classes": num_classes,
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "flip_axes": list(flip_axes),  # inference mirrors these too (test-time augmentation)
    }
    if math.isfinite(val_dice):
        meta["val_dice"] = float(val_dice)
    if init is not None:
        meta["init"] = init
        meta["transfer"] = config.transfer
    return meta


def finetune(
    data: str | Path,
    out: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    init: str | Path | None = None,
    modality: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune a segmentation network on the labelled cases of ``data``; write the run into ``out``."""
    out = Path(out)
    init_name = str(init) if init else None
    check_finetuning_folder(out, config, init_name, resume, overwrite)
    plan = plan_finetuning(Path(data), config, init, modality, cache_dir, progress)
    create_run_dir(out, resume, overwrite)
    write_json(out / CONFIG_FILE, {
        "finetune": config.to_json(), "init": init_name, "data": str(Path(data).resolve()),
        "modality": plan.preprocessing.modality, "preprocessing": plan.preprocessing.to_json(), "backbone": plan.backbone.to_json(),
        "patch_size": list(plan.patch), "num_classes": plan.num_classes, "labels": {str(k): v for k, v in sorted(plan.labels.items())},
    })
    write_json(out / SPLIT_FILE, plan.split.to_json())
    write_json(out / PLAN_FILE, plan.run_plan.to_json())

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    network = SegmentationNetwork(plan.backbone, plan.num_classes, config.deep_supervision)
    report = None
    if plan.pretrained is not None:
        report = transfer_weights(network, plan.pretrained, config.transfer)
        write_json(out / TRANSFER_FILE, report.to_json())
        if progress:
            print(report.summary())
    network.to(device)
    transferred = {n for n, _ in report.matched} if report else set()
    optimizer = make_optimizer(parameter_groups(network, transferred, config), config)
    scheduler = make_schedule(optimizer, config)
    loop = TrainingLoop(out, network, optimizer, scheduler, LoopConfig(config.steps, plan.run_plan.batch, config.log_every, config.val_every,
                        unit="patches"), DistributedContext(device=device), progress, description="finetune")
    metadata = functools.partial(segmentation_metadata, config, plan.backbone, plan.preprocessing, plan.patch, plan.num_classes,
                                 plan.labels, plan.flip_axes, init=init_name)
    task = SegmentationTask(out, network, [p for n, p in network.named_parameters() if n in transferred], config.freeze_steps,
                            plan.validation, plan.patch, plan.num_classes, device, metadata, config.dice_background,
                            [plan.labels.get(c, f"class {c}") for c in range(1, plan.num_classes)], config.keep, config.steps,
                            config.precision)
    if resume:
        state = loop.resume()
        task.best_dice, task.best_step = float(state["best_dice"]), int(state["best_step"])
        # a run saved before model_* existed kept its best model
        task.model_dice, task.model_step = float(state.get("model_dice", task.best_dice)), int(state.get("model_step", task.best_step))
    samples = SegmentationDataset(plan.training, plan.patch, config.seed, config.foreground_prob, flip_axes=plan.flip_axes,
                                  foreground_sampling=config.foreground_sampling, augmentation_name=config.augmentation)
    loader = step_loader(samples, plan.run_plan.batch, loop.start, config.steps, config.seed, config.workers, device)
    result = loop.run(task, DevicePrefetcher(loader, device))
    curve, classes = validation_curves(out / METRICS_FILE)
    verdict = convergence(curve, config.steps, classes=classes)
    if verdict.collapsed and plan.validation:
        # where a collapsed class went (background or another class) says what failed; final weights
        verdict = replace(verdict, validation_confusion=validation_confusion(network, plan.validation, plan.patch, task.class_names, device))
    write_json(out / CONVERGENCE_FILE, verdict.to_json())
    return FinetuneResult(network=network, run_dir=out, best_dice=task.best_dice, best_step=task.best_step, split=plan.split,
                          model_dice=task.model_dice, model_step=task.model_step, transfer=report, history=result.history, convergence=verdict)


def check_finetuning_folder(out: Path, config: FinetuneConfig, init: str | None, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds another run, or a ``--resume`` with other settings or another ``--init``."""
    check_run_dir(out, resume, overwrite)
    if resume:
        saved_run, differing = resume_conflicts(out, "finetune", config)
        if saved_run.get("init") != init:
            differing.append("init")
        if differing:
            raise VectorPoseError(f"{out}: --resume with settings that differ from the saved run ({', '.join(differing)})")


@dataclass
class FinetuningPlan:
    """What a fine-tuning run trains on and with: checked data, split, spacing, patch, batch and architecture."""

    preprocessing: PreprocessingConfig
    backbone: AnyBackboneConfig
    pretrained: dict[str, torch.Tensor] | None
    num_classes: int
    labels: dict[int, str]
    split: Split
    training: list[PreprocessedVolume]
    validation: list[PreprocessedVolume]
    run_plan: Plan
    flip_axes: tuple[int, ...]

    @property
    def patch(self) -> tuple[int, int, int]:
        return self.run_plan.patch


# "left" or "right" as a word of a label name: "left kidney", "Kidney_Left", "LeftKidney"; not "cleft"
SIDED_LABEL = re.compile(r"(?i:(?<![a-z])(left|right)(?![a-z]))|(Left|Right)(?=[A-Z])")


def mirrored_axes(config: FinetuneConfig, labels: dict[int, str]) -> tuple[int, ...]:
    """The axes training flips: ``config.flip_axes`` if given; else left–right (axis 0, which maps anatomy
    onto plausible anatomy), unless a label name says ``left`` or ``right``: mirroring would then show
    the left organ where the right one belongs, under the left organ's label."""
    if config.flip_axes is not None:
        return config.flip_axes
    sided = any(SIDED_LABEL.search(name) for name in labels.values())
    return () if sided else (0,)


def plan_finetuning(data: Path, config: FinetuneConfig, init: str | Path | None, modality: str | None, cache_dir: str | Path | None,
                    progress: bool) -> FinetuningPlan:
    """Read and check everything a run needs before its folder is touched, so bad input never costs an old run."""
    dataset = load_dataset(data, modality)
    labelled_cases = dataset.labelled
    test = None
    if config.split is not None:
        test, train = read_test_split(dataset.root, config.split)
        labelled_cases = cases_in_split(labelled_cases, test, train)
    if not labelled_cases:
        raise DataError(data, "no labelled cases (fine-tuning needs label maps)")
    try:
        num_classes = num_classes_of(dataset.labels)
    except ValueError as exc:
        raise DataError(data / "dataset.json", str(exc)) from None
    pretrained, preprocessing, backbone = _starting_point(data, dataset, config, init)
    try:
        split = make_split([c.case_id for c in labelled_cases], config.split_seed, config.seed, config.label_fraction, config.labelled,
                           config.test_fraction, config.validation_fraction, test)
    except ValueError as exc:
        raise VectorPoseError(f"{data}: {exc}") from None
    # every labelled case, test cases included, so a broken file shows now and not at evaluation
    labelled = Dataset(dataset.root, labelled_cases, dataset.modality, dataset.labels)
    budget = budget_for(resolve_device(config.device).type)
    reasons = []
    if pretrained is None:
        # the window comes from the scans the run trains and validates on, never from the test split
        by_case = {c.case_id: c for c in labelled_cases}
        window = resolve_ct_window(config.ct_window, preprocessing.modality, [by_case[i] for i in split.labelled + split.validation],
                                   use_labels=True, cache_dir=cache_dir)
        if window is not None:
            preprocessing = replace(preprocessing, ct_window=window)
            reasons.append(f"CT window: {window[0]:.0f} to {window[1]:.0f} HU" +
                           (" (0.5th and 99.5th percentiles of the labelled voxels of the training and validation scans)"
                            if config.ct_window == "auto" else " (given)"))
        volumes, _ = preprocess_dataset(labelled, preprocessing, cache_dir, progress=progress)
        # the spacing comes from every scan outside the test split (their headers, not their labels)
        planning = [v for v in volumes if v.case_id not in set(split.test)]
        spacing, reason = planned_spacing(config.spacing, [v.geometry.spacing for v in planning],
                                          [v.geometry.canonical_shape for v in planning], budget)
        reasons.append(reason)
        preprocessing = replace(preprocessing, spacing=spacing)
        if spacing is not None:
            volumes = [resample_volume(v, spacing, cache_dir) for v in volumes]
    else:
        volumes, _ = preprocess_dataset(labelled, preprocessing, cache_dir, progress=progress)
        reasons.append("spacing and CT window: the pretrained model's")
    check_label_values(volumes, dataset.labels)
    by_id = {v.case_id: v for v in volumes}
    training, validation = [by_id[i] for i in split.labelled], [by_id[i] for i in split.validation]
    shapes = [v.shape for v in training + validation]
    if config.patch_size is not None and any(p % backbone.size_divisor for p in config.patch_size):
        raise VectorPoseError(f"patch size {config.patch_size} must be a multiple of {backbone.size_divisor} on every axis")
    spacing = np.median([v.spacing for v in training + validation], axis=0)
    run_plan = plan_patch_and_batch(shapes, spacing, backbone.size_divisor, budget, config.patch_size, config.batch_size)
    run_plan.spacing = preprocessing.spacing
    run_plan.ct_window = preprocessing.ct_window if preprocessing.modality == "CT" else None
    run_plan.reasons[:0] = reasons
    check_patch_fits(run_plan.patch, shapes, backbone.size_divisor, data)
    return FinetuningPlan(preprocessing, backbone, pretrained, num_classes, dataset.labels, split, training, validation, run_plan,
                          mirrored_axes(config, dataset.labels))


def _starting_point(data: Path, dataset: Dataset, config: FinetuneConfig,
                    init: str | Path | None) -> tuple[dict[str, torch.Tensor] | None, PreprocessingConfig, AnyBackboneConfig]:
    """``(pretrained weights or None, preprocessing, backbone)``: those of the ``init`` model, or new ones."""
    if init is None:
        if dataset.modality is None:
            raise DataError(data, "modality unknown: dataset.json names none; pass --modality CT or MRI")
        return None, PreprocessingConfig(modality=dataset.modality), config.backbone or BackboneConfig()
    state, meta = load_model(init, task="pretext", hint="--init takes a pretraining run or model")
    preprocessing = PreprocessingConfig.from_json(meta["preprocessing"])
    if dataset.modality is not None and dataset.modality != preprocessing.modality:
        raise CheckpointError(f"{init}: pretrained on {preprocessing.modality} data, but {data} is {dataset.modality}")
    if meta["backbone"].get("kind") == "nnunet":
        raise CheckpointError(f"{init}: pretrained with --backbone nnunet, which VectorPOSE does not fine-tune; train it with nnU-Net: "
                              f"vectorpose export {init} --to nnunet OUT.pth, then nnUNetv2_train ... -pretrained_weights OUT.pth")
    backbone = backbone_from_json(meta["backbone"])
    check_compatible(str(init), meta, (config.backbone or backbone).to_json(), preprocessing.to_json())
    return state, preprocessing, backbone


def make_optimizer(groups: list[dict], config: FinetuneConfig) -> torch.optim.Optimizer:
    """``config.optimizer`` over the parameter ``groups``: AdamW, or SGD with Nesterov momentum 0.99 (nnU-Net)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def poly_factor(step: int, warmup_steps: int, steps: int) -> float:
    """The learning rate of step ``step`` as a share of the peak: ``step / warmup_steps`` during the warm-up,
    then ``(1 - progress) ** 0.9`` with ``progress`` going from 0 to 1 over the remaining steps (nnU-Net's decay)."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, 1.0 - (step - warmup_steps) / max(1, steps - warmup_steps)) ** POLY_EXPONENT


def make_schedule(optimizer: torch.optim.Optimizer, config: FinetuneConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of ``config``: a linear warm-up over ``config.warmup`` of the steps, then
    a cosine (MONAI's ``WarmupCosineSchedule``) or polynomial (:func:`poly_factor`) decay to 0."""
    warmup_steps = round(config.warmup * config.steps)
    if config.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(poly_factor, warmup_steps=warmup_steps, steps=config.steps))
    return WarmupCosineSchedule(optimizer, warmup_steps=warmup_steps, t_total=config.steps)


def parameter_groups(network: torch.nn.Module, transferred: set[str], config: FinetuneConfig) -> list[dict]:
    """The new parameters at ``config.lr``; the ``transferred`` ones at ``config.lr * config.pretrained_lr_scale``."""
    named = dict(network.named_parameters())
    groups = [{"params": [p for n, p in named.items() if n not in transferred], "lr": config.lr}]
    if transferred:
        groups.append({"params": [p for n, p in named.items() if n in transferred], "lr": config.lr * config.pretrained_lr_scale})
    return groups


class SegmentationTask(TrainingTask):
    """Fine-tuning's part of the loop: Dice (foreground classes only unless ``dice_background``) +
    cross-entropy (with deep supervision, the weighted sum over the output levels, the label map
    down-sampled by nearest neighbour to each; weights ``2^-k``, normalised to sum to 1), with the
    ``transferred`` parameters frozen for the first ``freeze_steps`` steps and the forward pass under bfloat16 autocast
    with ``precision="bf16"`` (the loss on float32 logits); at each scheduled checkpoint the validation Dice
    (mean and per class, ``val/dice/<class name>``) and ``last.*``; ``model.*`` at step ``steps`` (``keep="final"``), or
    whenever the mean is the best so far (``keep="best"``; every time without validation cases)."""

    loss_key = "dice_ce"
    progress_keys = ("dice_ce", "val/dice")

    def __init__(self, out: Path, network: SegmentationNetwork, transferred: list[torch.nn.Parameter], freeze_steps: int,
                 validation: list[PreprocessedVolume], patch: tuple[int, int, int], num_classes: int, device: torch.device,
                 metadata: Callable[..., dict], dice_background: bool, class_names: list[str], keep: str, steps: int,
                 precision: str = "fp32"):
        if len(class_names) != num_classes - 1:
            raise ValueError(f"need a name for each of the {num_classes - 1} foreground classes, got {len(class_names)}")
        if keep not in KEEP_CHOICES or steps < 1:
            raise ValueError(f"keep must be one of {KEEP_CHOICES} and steps positive, got {keep!r}, {steps}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.out, self.network, self.transferred, self.freeze_steps = out, network, transferred, freeze_steps
        self.validation, self.patch, self.num_classes, self.device, self.metadata = validation, patch, num_classes, device, metadata
        self.class_names, self.keep, self.steps, self.precision = class_names, keep, steps, precision
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, include_background=dice_background)
        self.best_dice, self.best_step = -1.0, 0
        self.model_dice, self.model_step = float("nan"), 0

    def losses(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        frozen = step <= self.freeze_steps
        for parameter in self.transferred:
            parameter.requires_grad_(not frozen)
        with bf16_autocast(self.device, self.precision == "bf16"):
            outputs = [o.float() for o in self.network.forward_levels(batch["image"])]
        weights = [2.0**-k for k in range(len(outputs))]
        label = batch["label"]
        total = sum(w * self.loss_fn(out, label if out.shape[2:] == label.shape[2:] else
                                     F.interpolate(label.float(), size=out.shape[2:], mode="nearest-exact").long())
                    for w, out in zip(weights, outputs))
        return {"dice_ce": total / sum(weights)}

    def checkpoint(self, step: int, scheduled: bool) -> dict:
        state = inference_state(self.network.state_dict())
        if not scheduled:
            save_model(self.out, state, self.metadata(step=step, val_dice=float("nan")), name="last")
            return {}
        per_class = validation_class_dice(self.network, self.validation, self.patch, self.num_classes, self.device) if self.validation else []
        scored = [d for d in per_class if math.isfinite(d)]
        dice = float(np.mean(scored)) if scored else float("nan")
        best = not self.validation or dice > self.best_dice
        if best:
            self.best_dice, self.best_step = dice, step
        if (best and self.keep == "best") or (step == self.steps and self.keep == "final"):
            self.model_dice, self.model_step = dice, step
            save_model(self.out, state, self.metadata(step=step, val_dice=dice))
        save_model(self.out, state, self.metadata(step=step, val_dice=dice), name="last")
        # a class no validation case scores has no column in this row
        return {MEAN_KEY: dice, **{f"{CLASS_PREFIX}{name}": d for name, d in zip(self.class_names, per_class) if math.isfinite(d)}}

    def resume_state(self) -> dict:
        return {"best_dice": self.best_dice, "best_step": self.best_step, "model_dice": self.model_dice, "model_step": self.model_step}
