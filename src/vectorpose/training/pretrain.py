"""The pretraining loop: a pretext method on crops of unlabelled scans, with safe checkpoints.

Writes into the run folder: ``config.json`` (everything needed to rerun), ``model.safetensors`` +
``model.json``, ``resume.pt`` (optimizer, scheduler, RNG, step), ``metrics.jsonl`` and TensorBoard
events under ``tensorboard/``. Started by ``torchrun``, it trains in every process with
DistributedDataParallel and rank 0 alone writes (see :func:`pretrain`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.ct_window import CT_WINDOW_HELP, parse_ct_window, resolve_ct_window
from ..data.datasets import Dataset, load_dataset
from ..data.planning import budget_for
from ..data.preprocessing import PreprocessingConfig, preprocess_at_spacing
from ..data.resampling import SPACING_HELP, parse_spacing
from ..data.splits import SPLIT_HELP, training_part
from ..data.validation import check_crop_fits
from ..errors import DataError, VectorPoseError
from ..methods import PretextMethod, get_method
from ..models.backbone import BackboneConfig
from ..models.backbones import AnyBackboneConfig, backbone_from_json
from ..models.pretext_network import PretextNetwork
from ..pretext.masking import MaskingConfig
from ..pretext.sample import PretextConfig
from ..settings import setting, settings_group
from ..models.files import MODEL_FILE, load_model, load_weights, save_model
from ..utils.files import write_json
from .distributed import DistributedContext, gather_objects, in_turn, init_distributed
from .loop import LoopConfig, TrainingLoop, TrainingTask, optimise
from .prefetch import DevicePrefetcher
from .pretext_data import PretextDataset, pipeline_collate
from .run import CONFIG_FILE, check_run_dir, create_run_dir, resume_conflicts, step_loader
from .speed import SpeedOptions


@dataclass(frozen=True)
class PretrainConfig:
    """Every setting of a pretraining run; saved as ``config.json`` in the run folder.

    ``masking`` is used only by a method that masks its input (``mae``), and only such a run records
    it in ``config.json``, so the files of every other method are as before it existed.
    """

    method: str = setting("vectorpose", "Pretext method: vectorpose (VP + BFR), vp, bfr, genesis or mae (masked image modelling).")
    steps: int = setting(2000, "Optimisation steps.")
    batch_size: int = setting(4, "Crops per step (per process under torchrun).", flag="batch")
    lr: float = setting(1e-3, "AdamW learning rate (cosine schedule).")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    seed: int = setting(0, "Seed of weights and of the crop stream.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(0, "DataLoader worker processes.")
    log_every: int = setting(10, "Steps between log rows.")
    checkpoint_every: int = setting(250, "Steps between checkpoints.")
    spacing: str = setting("auto", SPACING_HELP)
    ct_window: str = setting("auto", CT_WINDOW_HELP)
    split: str | None = setting(None, SPLIT_HELP + " Pretraining never reads the images of its test cases.")
    split_seed: int = setting(0, "Seed of the test split held out without --split: the cases finetune and benchmark "
                                 "test on with the same seed and --test-fraction.")
    test_fraction: float = setting(0.2, "Share of the labelled cases held out as the test split without --split "
                                        "(0: pretrain on every scan).")
    loss_weights: dict[str, float] | None = None
    backbone: AnyBackboneConfig = field(default_factory=BackboneConfig)
    pretext: PretextConfig = settings_group(PretextConfig)
    masking: MaskingConfig = settings_group(MaskingConfig)

    def __post_init__(self):
        if not get_method(self.method).pretrains:
            raise ValueError(f"method {self.method!r} trains no pretext task; fine-tune without --init instead")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        parse_spacing(self.spacing)
        parse_ct_window(self.ct_window)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.pretext.patch_size % self.backbone.size_divisor:
            raise ValueError(
                f"patch size {self.pretext.patch_size} must be a multiple of {self.backbone.size_divisor} (the product of the backbone's strides)"
            )
        if self.build_method().masked_input:
            self.masking.grid(self.pretext.patch_size)

    def input_masking(self) -> MaskingConfig | None:
        """The masking the crops get: ``masking`` for a method that masks its input, else ``None``."""
        return self.masking if get_method(self.method).masked_input else None

    def build_method(self) -> PretextMethod:
        """The method with ``loss_weights`` applied (only to terms the method has)."""
        method = get_method(self.method)
        if not self.loss_weights:
            return method
        fields = {"vp": "vector_weight", "rec": "reconstruction_weight", "boundary": "boundary_weight"}
        changes = {}
        for key, value in self.loss_weights.items():
            if key not in fields:
                raise ValueError(f"unknown loss weight {key!r}; use {', '.join(fields)}")
            if getattr(method, fields[key]) == 0:
                raise ValueError(f"method {method.name!r} has no {key!r} term to weight")
            changes[fields[key]] = float(value)
        return replace(method, **changes)

    def to_json(self) -> dict:
        d = asdict(self)
        d["backbone"] = self.backbone.to_json()
        d["pretext"] = self.pretext.to_json()
        d.pop("masking")
        if (masking := self.input_masking()) is not None:
            d["masking"] = masking.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> PretrainConfig:
        # a run from before these settings existed trained on each scan's own grid, with a fixed CT window,
        # on every scan
        d = {"spacing": "native", "ct_window": "-1000,1000", "test_fraction": 0.0, **d}
        d["backbone"] = backbone_from_json(d["backbone"])
        d["pretext"] = PretextConfig.from_json(d["pretext"])
        if "masking" in d:
            d["masking"] = MaskingConfig.from_json(d["masking"])
        return cls(**d)


@dataclass
class PretrainResult:
    """The trained network (eval mode), where it was written, the last log row, and this process's rank."""

    network: PretextNetwork
    run_dir: Path
    model_path: Path
    last_metrics: dict
    rank: int = 0


def model_metadata(config: PretrainConfig, method: PretextMethod, preprocessing: PreprocessingConfig, step: int) -> dict:
    return {
        "task": "pretext",
        "method": method.name,
        "loss_weights": {"vp": method.vector_weight, "rec": method.reconstruction_weight, "boundary": method.boundary_weight},
        "backbone": config.backbone.to_json(),
        "heads": {"vector": method.vector_weight > 0, "restoration": method.reconstruction_weight > 0, "boundary": method.boundary_weight > 0},
        "patch_size": config.pretext.patch_size,
        "pretext": config.pretext.to_json(),
        "preprocessing": preprocessing.to_json(),
        "step": step,
    }


def load_pretext_network(path: str | Path) -> tuple[PretextNetwork, dict]:
    """Rebuild a pretraining network from a run folder or model file; returns ``(network, metadata)``."""
    state, meta = load_model(path, task="pretext")
    heads = meta["heads"]
    network = PretextNetwork(backbone_from_json(meta["backbone"]), bool(heads.get("vector")), bool(heads.get("restoration")), bool(heads.get("boundary")))
    load_weights(network, state, path)
    network.eval()
    return network, meta


def rank_dataset(volumes: list, config: PretrainConfig, rank: int) -> PretextDataset:
    """The crop stream of process ``rank`` of a run: stream ``rank`` of ``config.seed``.

    Rank 0 (and a one-process run) draws exactly the stream of a one-process run; every other rank an
    independent one (see :mod:`~vectorpose.training.pretext_data`). Sample ``i`` of a rank is a pure
    function of ``(seed, rank, i)``, so a resumed run continues each rank's stream exactly, provided
    it runs with the same number of processes.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return PretextDataset(volumes, config.pretext, config.seed, stream=rank, masking=config.input_masking())


def pretext_losses(model: torch.nn.Module, method: PretextMethod, batch: dict[str, torch.Tensor], speed: SpeedOptions,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """The loss terms of a batch already on ``device`` (see :class:`PretextMethod`), ``"total"`` among them."""
    with speed.autocast(device):
        return method.losses(model(batch["input"]), batch)


def pretext_step(model: torch.nn.Module, method: PretextMethod, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                 speed: SpeedOptions, device: torch.device) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch already on ``device``; returns the loss terms."""
    terms = pretext_losses(model, method, batch, speed, device)
    optimise(optimizer, terms["total"])
    return terms


def batch_fingerprint(inputs: torch.Tensor) -> str:
    """A short hash of a batch of input crops: equal crops give equal fingerprints on any machine."""
    return hashlib.sha256(inputs.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def pretrain(
    data: str | Path,
    out: str | Path,
    config: PretrainConfig = PretrainConfig(),
    modality: str | None = None,
    cache_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
    speed: SpeedOptions = SpeedOptions(),
) -> PretrainResult:
    """Pretrain a backbone on the scans under ``data`` and write the run into ``out``.

    ``modality`` (``CT`` or ``MRI``) overrides ``dataset.json``; one of them must give it. With
    ``resume`` the run continues from ``out/resume.pt`` with the saved configuration (only ``steps``
    may grow).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), every process runs this function: the network is
    wrapped in DistributedDataParallel, ``config.batch_size`` crops per process and step, and rank
    ``r`` draws crop stream ``r`` (:func:`rank_dataset`). Rank 0 alone preprocesses first (filling
    the cache the others then read), writes the run folder and prints; the losses it logs are means
    over all processes. ``config.json`` records ``world_size``, and a resume with another number of
    processes is refused, since the crop streams would differ. ``config.json`` also lists, per rank,
    its stream and a fingerprint of the first batch it trained on in this invocation (``"ranks"``).

    ``speed`` (bf16 autocast, channels-last, ``torch.compile``; for CUDA) says how, not what, it
    computes, so it may change when a run is resumed; it is recorded in ``config.json``.
    """
    with init_distributed(config.device) as ctx:
        return _pretrain(ctx, data, Path(out), config, modality, cache_dir, resume, overwrite, skip_bad, progress, speed)


def _pretrain(ctx: DistributedContext, data: str | Path, out: Path, config: PretrainConfig, modality: str | None,
              cache_dir: str | Path | None, resume: bool, overwrite: bool, skip_bad: bool, progress: bool,
              speed: SpeedOptions) -> PretrainResult:
    dataset = load_dataset(data, modality)
    if dataset.modality is None:
        raise DataError(Path(data), "modality unknown: dataset.json names none; pass --modality CT or MRI")
    dataset = training_part(dataset, config.split, config.split_seed, config.test_fraction)
    # Every rank checks the folder (reading only; on several machines it must be on a shared file
    # system to resume). Waiting for all keeps rank 0 from clearing it (--overwrite) while others read.
    in_turn(ctx, True, lambda: check_pretraining_folder(out, config, resume, overwrite, ctx.world_size))
    volumes, skipped, preprocessing = _prepare_volumes(ctx, Path(data), dataset, PreprocessingConfig(modality=dataset.modality), config,
                                                       cache_dir, skip_bad, progress)
    if ctx.is_main:
        for problem in skipped:
            print(f"skipped: {problem}")
    in_turn(ctx, ctx.is_main, lambda: create_run_dir(out, resume, overwrite))

    method = config.build_method()
    torch.manual_seed(config.seed)
    network = method.build_network(config.backbone).to(ctx.device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    loop = TrainingLoop(out, network, optimizer, scheduler, LoopConfig(config.steps, config.batch_size, config.log_every,
                        config.checkpoint_every, unit="crops"), ctx, progress, description=f"pretrain {method.name}")
    if resume:
        # every rank reads resume.pt; the weights would agree anyway, as DDP broadcasts rank 0's
        loop.resume()
    run_record = {"pretrain": config.to_json(), "data": str(Path(data).resolve()), "modality": dataset.modality,
                  "preprocessing": preprocessing.to_json(), "cases": [v.case_id for v in volumes], "skipped": [str(p) for p in skipped],
                  "world_size": ctx.world_size}
    task = PretextTask(out, network, _training_model(network, ctx, speed), method, speed, ctx, loop.start,
                       lambda step: model_metadata(config, method, preprocessing, step), run_record)
    boundary = method.boundary_weight > 0
    loader = step_loader(rank_dataset(volumes, config, ctx.rank), config.batch_size, loop.start, config.steps, config.seed,
                         config.workers, ctx.device, collate_fn=pipeline_collate(ctx.device, boundary, speed))
    result = loop.run(task, DevicePrefetcher(loader, ctx.device, speed, boundary=boundary))
    return PretrainResult(network=network, run_dir=out, model_path=task.model_path, last_metrics=result.last, rank=ctx.rank)


def check_pretraining_folder(out: Path, config: PretrainConfig, resume: bool, overwrite: bool, world_size: int) -> None:
    """Refuse a folder that holds another run, or a ``--resume`` with other settings or another number of processes."""
    check_run_dir(out, resume, overwrite)
    if not resume:
        return
    saved_run, differing = resume_conflicts(out, "pretrain", config)
    if differing:
        raise VectorPoseError(f"{out}: --resume with settings that differ from the saved run ({', '.join(differing)})")
    saved_world = int(saved_run.get("world_size", 1))
    if saved_world != world_size:
        raise VectorPoseError(f"{out}: the run was trained by {saved_world} process(es), not {world_size}; resume it with "
                              f"{saved_world} (torchrun --nnodes x --nproc_per_node), since each process's crop stream depends on its rank")


def _prepare_volumes(ctx: DistributedContext, data: Path, dataset: Dataset, preprocessing: PreprocessingConfig, config: PretrainConfig,
                     cache_dir: str | Path | None, skip_bad: bool, progress: bool) -> tuple[list, list, PreprocessingConfig]:
    """The preprocessed scans (images only: a broken label map must not stop pretraining) at the run's
    spacing, the skipped problems, and ``preprocessing`` with that spacing."""
    images_only = dataset.images_only()

    def prepare() -> tuple[list, list, PreprocessingConfig]:
        window = resolve_ct_window(config.ct_window, preprocessing.modality, images_only.cases, use_labels=False, cache_dir=cache_dir,
                                   skip_bad=skip_bad)
        with_window = preprocessing if window is None else replace(preprocessing, ct_window=window)
        volumes, skipped, resolved = preprocess_at_spacing(images_only, with_window, config.spacing, cache_dir, skip_bad=skip_bad,
                                                           progress=progress and ctx.is_main, budget=budget_for(ctx.device.type))
        check_crop_fits(config.pretext.patch_size, config.pretext.scale_range[0], [v.shape for v in volumes], data)
        return volumes, skipped, resolved

    # Rank 0 checks the data (reporting its problems once) and fills the cache first; then the first
    # process of each other machine (whose cache may be its own disk), then the rest, which find the
    # cache filled. Cache entries are written atomically, so machines sharing one cache do no harm.
    prepared = in_turn(ctx, ctx.is_main, prepare)
    prepared = in_turn(ctx, ctx.local_rank == 0 and not ctx.is_main, prepare) or prepared
    return in_turn(ctx, ctx.local_rank != 0, prepare) or prepared


def _training_model(network: torch.nn.Module, ctx: DistributedContext, speed: SpeedOptions) -> torch.nn.Module:
    """``network`` as the steps call it: in the chosen memory layout, under DDP with several processes, compiled if asked."""
    model = speed.layout(network)
    if ctx.distributed:
        # static_graph: the same weights take part in every step, and DDP finds those that never do
        # (without the voxel head, the finer decoder levels) instead of waiting for their gradients
        model = DistributedDataParallel(network, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                                        static_graph=True)
    return speed.compiled(model)


class PretextTask(TrainingTask):
    """Pretraining's part of the loop: the method's loss terms, ``model.*`` at each checkpoint, and
    ``config.json`` once the first batch shows which crops each rank trains on."""

    loss_key = "total"
    progress_keys = ("vp", "rec", "boundary")

    def __init__(self, out: Path, network: torch.nn.Module, model: torch.nn.Module, method: PretextMethod, speed: SpeedOptions,
                 ctx: DistributedContext, start: int, metadata: Callable[[int], dict], run_record: dict):
        self.out, self.network, self.model, self.method, self.speed, self.ctx = out, network, model, method, speed, ctx
        self.start, self.metadata, self.run_record = start, metadata, run_record
        self.model_path = out / MODEL_FILE

    def losses(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return pretext_losses(self.model, self.method, batch, self.speed, self.ctx.device)

    def checkpoint(self, step: int, scheduled: bool) -> dict:
        self.model_path = save_model(self.out, self.network.state_dict(), self.metadata(step))
        return {}

    def started(self, first_batch) -> None:
        # which crops each rank trains on first, to show they differ (and which stream each used)
        ranks = gather_objects(self.ctx, {"rank": self.ctx.rank, "stream": self.ctx.rank,
                                          "first_step": self.start + 1 if first_batch is not None else None,
                                          "first_batch": batch_fingerprint(first_batch["input"]) if first_batch is not None else None})
        in_turn(self.ctx, self.ctx.is_main,
                lambda: write_json(self.out / CONFIG_FILE, {**self.run_record, "ranks": ranks, "speed": self.speed.to_json()}))
