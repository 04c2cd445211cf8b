"""Few-label fine-tuning: a segmentation network, from scratch or from a pretraining run.

Recipe: Dice + cross-entropy (MONAI ``DiceCELoss``, batch Dice), foreground-oversampled patches with
MONAI augmentation, AdamW with a cosine schedule, periodic validation Dice by sliding-window
inference on the validation split, and the best and last models saved as safetensors + JSON.

With ``init``, the backbone architecture and the preprocessing come from the pretrained model's
metadata, and ``transfer`` chooses what is loaded: ``encoder`` (encoder + bottleneck) or ``all``
(encoder, bottleneck and decoder, as in the paper). A probe here saw decoder transfer collapse
few-label fine-tuning to all-background (``../shared/docs/FINDINGS.md``), so ``encoder`` is the
default; ``pretrained_lr_scale`` and ``warmup_steps`` (transferred layers frozen while the new ones
settle) are there for the benchmark to decide on the validation split.

Run folder: ``config.json``, ``split.json``, ``transfer.json``, ``model.*`` (best validation Dice),
``last.*``, ``resume.pt``, ``metrics.jsonl``, ``tensorboard/``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from ..data.datasets import Dataset, load_dataset
from ..data.preprocessing import PreprocessedVolume, PreprocessingConfig, preprocess_dataset
from ..data.splits import Split, make_split
from ..data.validation import check_label_values, check_patch_fits
from ..errors import CheckpointError, DataError, OutputError, VectorPoseError
from ..inference.metrics import case_metrics
from ..inference.sliding_window import predict_labels
from ..models.backbone import BackboneConfig
from ..models.segmentation_network import SegmentationNetwork
from ..utils.files import write_json
from ..models.files import load_model, save_model
from .resume import RESUME_FILE, restore_training_state, save_resume_state, training_state
from .run import CONFIG_FILE, MetricsLog, check_run_dir, create_run_dir, resolve_device, saving_failed, step_loader, stop_on_signal
from .segmentation_data import SegmentationDataset
from .transfer import TRANSFER_MODES, TransferReport, check_compatible, transfer_weights

SPLIT_FILE = "split.json"
TRANSFER_FILE = "transfer.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a fine-tuning run; saved as ``config.json``.

    ``patch_size`` ``None`` means automatic: the 95th percentile of the training shapes per axis,
    rounded up to the backbone's size divisor and capped at 128. ``backbone`` ``None`` means the
    pretrained model's (or the default for a run from scratch).
    """

    steps: int = 1000
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    split_seed: int = 0
    label_fraction: float | None = 1.0
    labelled: int | None = None
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    patch_size: tuple[int, int, int] | None = None
    backbone: BackboneConfig | None = None
    transfer: str = "encoder"
    pretrained_lr_scale: float = 1.0
    warmup_steps: int = 0
    foreground_prob: float = 0.33
    flip_axes: tuple[int, ...] = (0,)
    val_every: int = 100
    log_every: int = 10
    device: str = "auto"
    workers: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "val_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.labelled is not None and self.label_fraction is not None:
            object.__setattr__(self, "label_fraction", None)  # an explicit count wins
        if self.label_fraction is not None and not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must lie in (0, 1], got {self.label_fraction}")
        if self.labelled is not None and self.labelled < 1:
            raise ValueError(f"labelled must be >= 1, got {self.labelled}")
        if self.transfer not in TRANSFER_MODES:
            raise ValueError(f"transfer must be one of {TRANSFER_MODES}, got {self.transfer!r}")
        if not self.pretrained_lr_scale >= 0:
            raise ValueError(f"pretrained_lr_scale must be >= 0, got {self.pretrained_lr_scale}")
        if self.warmup_steps < 0 or self.workers < 0:
            raise ValueError(f"warmup_steps and workers must be >= 0, got {self.warmup_steps}, {self.workers}")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ValueError(f"flip_axes must be among 0, 1, 2, got {self.flip_axes}")
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
            if len(self.patch_size) != 3 or min(self.patch_size) < 1:
                raise ValueError(f"patch_size must be three positive sizes, got {self.patch_size}")
        object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))

    def to_json(self) -> dict:
        d = asdict(self)
        d["backbone"] = self.backbone.to_json() if self.backbone else None
        d["patch_size"] = list(self.patch_size) if self.patch_size else None
        d["flip_axes"] = list(self.flip_axes)
        return d

    @classmethod
    def from_json(cls, d: dict) -> FinetuneConfig:
        d = dict(d)
        d["backbone"] = BackboneConfig.from_json(d["backbone"]) if d.get("backbone") else None
        d["patch_size"] = tuple(d["patch_size"]) if d.get("patch_size") else None
        d["flip_axes"] = tuple(d["flip_axes"])
        return cls(**d)


@dataclass
class FinetuneResult:
    network: SegmentationNetwork
    run_dir: Path
    best_dice: float
    best_step: int
    split: Split
    transfer: TransferReport | None = None
    history: list[dict] = field(default_factory=list)


def auto_patch_size(shapes: list[tuple[int, int, int]], divisor: int, cap: int = 128) -> tuple[int, int, int]:
    """Per axis: the 95th percentile of ``shapes``, rounded up to ``divisor``, at most ``cap``."""
    p95 = np.percentile(np.asarray(shapes), 95, axis=0)
    return tuple(int(min(cap, max(divisor, math.ceil(v / divisor) * divisor))) for v in p95)  # type: ignore[return-value]


def num_classes_of(labels: dict[int, str]) -> int:
    if not labels or 0 not in labels:
        raise ValueError("dataset.json must declare its labels, including 0 (background)")
    return max(labels) + 1


def validation_dice(network: SegmentationNetwork, volumes: list[PreprocessedVolume], patch, num_classes: int, device) -> float:
    """Mean foreground Dice over the volumes (sliding-window inference)."""
    scores = []
    for v in volumes:
        pred = predict_labels(network, np.asarray(v.image()), patch, device)
        scores.extend(case_metrics(pred, np.asarray(v.label()), num_classes, hd95=False)["dice"])
    network.train()
    return float(np.mean(scores)) if scores else float("nan")


def segmentation_metadata(config: FinetuneConfig, backbone: BackboneConfig, preprocessing: PreprocessingConfig, patch, num_classes: int,
                          labels: dict[int, str], step: int, init: str | None, val_dice: float) -> dict:
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
    from tqdm.auto import tqdm

    out = Path(out)
    check_run_dir(out, resume, overwrite)
    if resume:
        saved = json.loads((out / CONFIG_FILE).read_text())
        saved_config = FinetuneConfig.from_json(saved["finetune"])
        if replace(saved_config, steps=config.steps) != config or saved.get("init") != (str(init) if init else None):
            raise VectorPoseError(f"{out}: --resume with settings or --init that differ from the saved run")

    dataset = load_dataset(data, modality)
    labelled_cases = dataset.labelled
    if not labelled_cases:
        raise DataError(Path(data), "no labelled cases (fine-tuning needs label maps)")
    try:
        num_classes = num_classes_of(dataset.labels)
    except ValueError as exc:
        raise DataError(Path(data) / "dataset.json", str(exc)) from None

    pretrained_state, pretrained_meta = (
        load_model(init, task="pretext", hint="--init takes a pretraining run or model") if init is not None else (None, None)
    )
    if pretrained_meta is not None:
        preprocessing = PreprocessingConfig.from_json(pretrained_meta["preprocessing"])
        if dataset.modality is not None and dataset.modality != preprocessing.modality:
            raise CheckpointError(f"{init}: pretrained on {preprocessing.modality} data, but {data} is {dataset.modality}")
        backbone = BackboneConfig.from_json(pretrained_meta["backbone"])
        check_compatible(str(init), pretrained_meta, (config.backbone or backbone).to_json(), preprocessing.to_json())
    else:
        if dataset.modality is None:
            raise DataError(Path(data), "modality unknown: dataset.json names none; pass --modality CT or MRI")
        preprocessing = PreprocessingConfig(modality=dataset.modality)
        backbone = config.backbone or BackboneConfig()

    try:
        split = make_split([c.case_id for c in labelled_cases], config.split_seed, config.seed, config.label_fraction, config.labelled,
                           config.test_fraction, config.validation_fraction)
    except ValueError as exc:
        raise VectorPoseError(f"{data}: {exc}") from None
    # every labelled case, test cases included, so a broken file shows now and not at evaluation
    volumes, _ = preprocess_dataset(Dataset(dataset.root, labelled_cases, dataset.modality, dataset.labels), preprocessing, cache_dir,
                                    progress=progress)
    check_label_values(volumes, dataset.labels)
    vol_by_id = {v.case_id: v for v in volumes}
    train_volumes = [vol_by_id[i] for i in split.labelled]
    val_volumes = [vol_by_id[i] for i in split.validation]
    shapes = [v.shape for v in train_volumes + val_volumes]
    patch = config.patch_size or auto_patch_size(shapes, backbone.size_divisor)
    if any(p % backbone.size_divisor for p in patch):
        raise VectorPoseError(f"patch size {patch} must be a multiple of {backbone.size_divisor} on every axis")
    check_patch_fits(patch, shapes, backbone.size_divisor, Path(data))

    create_run_dir(out, resume, overwrite)
    write_json(out / CONFIG_FILE, {
        "finetune": config.to_json(), "init": str(init) if init else None, "data": str(Path(data).resolve()),
        "modality": preprocessing.modality, "preprocessing": preprocessing.to_json(), "backbone": backbone.to_json(),
        "patch_size": list(patch), "num_classes": num_classes, "labels": {str(k): v for k, v in sorted(dataset.labels.items())},
    })
    write_json(out / SPLIT_FILE, split.to_json())

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    network = SegmentationNetwork(backbone, num_classes)
    report = None
    if pretrained_state is not None:
        report = transfer_weights(network, pretrained_state, config.transfer)
        write_json(out / TRANSFER_FILE, report.to_json())
        if progress:
            print(report.summary())
    network.to(device)
    transferred = {n for n, _ in report.matched} if report else set()
    named = dict(network.named_parameters())
    groups = [{"params": [p for n, p in named.items() if n not in transferred], "lr": config.lr}]
    if transferred:
        groups.append({"params": [p for n, p in named.items() if n in transferred], "lr": config.lr * config.pretrained_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    start, best_dice, best_step = 0, -1.0, 0
    if resume:
        state = restore_training_state(out, network, optimizer, scheduler, config.steps, device)
        start, best_dice, best_step = int(state["step"]), float(state["best_dice"]), int(state["best_step"])

    loader = step_loader(SegmentationDataset(train_volumes, patch, config.seed, config.foreground_prob, flip_axes=config.flip_axes),
                         config.batch_size, start, config.steps, config.seed, config.workers, device)

    def metadata(step: int, dice: float) -> dict:
        return segmentation_metadata(config, backbone, preprocessing, patch, num_classes, dataset.labels, step,
                                     str(init) if init else None, dice)

    saved_step = start if resume else None

    def save_last(step: int, dice: float) -> None:
        nonlocal saved_step
        save_model(out, network.state_dict(), metadata(step, dice), name="last")
        save_resume_state(out / RESUME_FILE, training_state(step, network, optimizer, scheduler, device,
                                                            best_dice=best_dice, best_step=best_step))
        saved_step = step

    try:
        logs = MetricsLog(out, start)
    except OutputError as exc:
        raise saving_failed(exc, out, saved_step) from exc
    history: list[dict] = []
    bar = tqdm(total=config.steps, initial=start, desc="finetune", unit="step", disable=not progress, dynamic_ncols=True)
    loss_sum, count, tic = 0.0, 0, time.perf_counter()
    network.train()
    with stop_on_signal() as stop:
        try:
            for step, batch in enumerate(loader, start=start + 1):
                frozen = step <= config.warmup_steps
                for n in transferred:
                    named[n].requires_grad_(not frozen)
                image, label = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
                loss = loss_fn(network(image), label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                value = loss.item()
                if not math.isfinite(value):
                    raise VectorPoseError(f"loss became {value} at step {step}; lower --lr")
                loss_sum, count = loss_sum + value, count + 1
                bar.update(1)
                row: dict = {}
                if step % config.log_every == 0 or step == config.steps:
                    row = {"step": step, "dice_ce": loss_sum / count, "lr": scheduler.get_last_lr()[0],
                           "patches_per_s": count * config.batch_size / (time.perf_counter() - tic)}
                    loss_sum, count, tic = 0.0, 0, time.perf_counter()
                if step % config.val_every == 0 or step == config.steps:
                    dice = validation_dice(network, val_volumes, patch, num_classes, device) if val_volumes else float("nan")
                    row = {"step": step, **row, "val/dice": dice}
                    if not val_volumes or dice > best_dice:
                        best_dice, best_step = (dice if val_volumes else float("nan")), step
                        save_model(out, network.state_dict(), metadata(step, dice))
                    save_last(step, dice)
                    tic = time.perf_counter()  # validation time is not training throughput
                elif stop:
                    save_last(step, float("nan"))
                if row:
                    logs.write(row)
                    history.append(row)
                    bar.set_postfix({"loss": f"{row.get('dice_ce', float('nan')):.3f}"} | ({"val_dice": f"{row['val/dice']:.3f}"} if "val/dice" in row else {}))
                if stop:
                    raise stop.stopped(out, step)
        except OutputError as exc:
            raise saving_failed(exc, out, saved_step) from exc
        finally:
            bar.close()
            logs.close()
    network.eval()
    return FinetuneResult(network=network, run_dir=out, best_dice=best_dice, best_step=best_step, split=split, transfer=report, history=history)
