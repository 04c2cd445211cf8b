"""The pretraining loop: a pretext method on crops of unlabelled scans, with safe checkpoints.

Writes into the run folder: ``config.json`` (everything needed to rerun), ``model.safetensors`` +
``model.json``, ``resume.pt`` (optimizer, scheduler, RNG, step), ``metrics.jsonl`` and TensorBoard
events under ``tensorboard/``. Started by ``torchrun``, it trains in every process with
DistributedDataParallel and rank 0 alone writes (see :func:`pretrain`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.datasets import Case, Dataset, load_dataset
from ..data.preprocessing import PreprocessingConfig, preprocess_dataset
from ..data.validation import check_crop_fits
from ..errors import DataError, OutputError, VectorPoseError
from ..methods import PretextMethod, get_method
from ..models.backbone import BackboneConfig
from ..models.pretext_network import PretextNetwork
from ..pretext.sample import PretextConfig
from ..utils.files import write_json
from ..models.files import load_model, load_weights, save_model
from .distributed import DistributedContext, any_rank, gather_objects, in_turn, init_distributed, mean_across_ranks
from .prefetch import DevicePrefetcher
from .pretext_data import PretextDataset, pipeline_collate
from .resume import RESUME_FILE, restore_training_state, save_resume_state, training_state
from .run import CONFIG_FILE, MetricsLog, check_run_dir, create_run_dir, saving_failed, step_loader, stop_on_signal
from .speed import SpeedOptions


@dataclass(frozen=True)
class PretrainConfig:
    """Every setting of a pretraining run; saved as ``config.json`` in the run folder."""

    method: str = "vectorpose"
    steps: int = 2000
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    loss_weights: dict[str, float] | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)

    def __post_init__(self):
        if not get_method(self.method).pretrains:
            raise ValueError(f"method {self.method!r} trains no pretext task; fine-tune without --init instead")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.pretext.patch_size % self.backbone.size_divisor:
            raise ValueError(
                f"patch size {self.pretext.patch_size} must be a multiple of {self.backbone.size_divisor} (the product of the backbone's strides)"
            )
        self.build_method()

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
        return d

    @classmethod
    def from_json(cls, d: dict) -> PretrainConfig:
        d = dict(d)
        d["backbone"] = BackboneConfig.from_json(d["backbone"])
        d["pretext"] = PretextConfig.from_json(d["pretext"])
        return cls(**d)


@dataclass
class PretrainResult:
    network: PretextNetwork
    run_dir: Path
    model_path: Path
    last_metrics: dict


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
    network = PretextNetwork(BackboneConfig.from_json(meta["backbone"]), bool(heads.get("vector")), bool(heads.get("restoration")), bool(heads.get("boundary")))
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
    return PretextDataset(volumes, config.pretext, config.seed, stream=rank)


def pretext_step(model: torch.nn.Module, method: PretextMethod, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                 speed: SpeedOptions, device: torch.device) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch already on ``device``; returns the loss terms (see :class:`PretextMethod`)."""
    with speed.autocast(device):
        terms = method.losses(model(batch["input"]), batch)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
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
    from tqdm.auto import tqdm

    dataset = load_dataset(data, modality)
    if dataset.modality is None:
        raise DataError(Path(data), "modality unknown: dataset.json names none; pass --modality CT or MRI")
    preprocessing = PreprocessingConfig(modality=dataset.modality)

    def check_folder() -> None:
        check_run_dir(out, resume, overwrite)
        if not resume:
            return
        saved_run = json.loads((out / CONFIG_FILE).read_text())
        saved = PretrainConfig.from_json(saved_run["pretrain"])
        if replace(saved, steps=config.steps) != config:
            differing = [k for k in config.to_json() if k != "steps" and config.to_json()[k] != saved.to_json()[k]]
            raise VectorPoseError(f"{out}: --resume with settings that differ from the saved run ({', '.join(differing)})")
        saved_world = int(saved_run.get("world_size", 1))
        if saved_world != ctx.world_size:
            raise VectorPoseError(f"{out}: the run was trained by {saved_world} process(es), not {ctx.world_size}; resume it with "
                                  f"{saved_world} (torchrun --nnodes x --nproc_per_node), since each process's crop stream depends on its rank")

    # Every rank checks the folder (reading only; on several machines it must be on a shared file
    # system to resume). Waiting for all keeps rank 0 from clearing it (--overwrite) while others read.
    in_turn(ctx, True, check_folder)
    # pretraining reads images only: a broken label map must not stop it
    images_only = Dataset(dataset.root, tuple(Case(c.case_id, c.image) for c in dataset.cases), dataset.modality, dataset.labels)

    def prepare() -> tuple[list, list]:
        volumes, skipped = preprocess_dataset(images_only, preprocessing, cache_dir, skip_bad=skip_bad, progress=progress and ctx.is_main)
        check_crop_fits(config.pretext.patch_size, config.pretext.scale_range[0], [v.shape for v in volumes], Path(data))
        return volumes, skipped

    # Rank 0 checks the data (reporting its problems once) and fills the cache first; then the first
    # process of each other machine (whose cache may be its own disk), then the rest, which find the
    # cache filled. Cache entries are written atomically, so machines sharing one cache do no harm.
    prepared = in_turn(ctx, ctx.is_main, prepare)
    prepared = in_turn(ctx, ctx.local_rank == 0 and not ctx.is_main, prepare) or prepared
    volumes, skipped = in_turn(ctx, ctx.local_rank != 0, prepare) or prepared
    if ctx.is_main:
        for problem in skipped:
            print(f"skipped: {problem}")
    in_turn(ctx, ctx.is_main, lambda: create_run_dir(out, resume, overwrite))

    device = ctx.device
    method = config.build_method()
    torch.manual_seed(config.seed)
    network = method.build_network(config.backbone).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    start = 0
    if resume:
        # every rank reads resume.pt; the weights would agree anyway, as DDP broadcasts rank 0's
        start = int(restore_training_state(out, network, optimizer, scheduler, config.steps, device)["step"])
    model = speed.layout(network)
    if ctx.distributed:
        # static_graph: the same weights take part in every step, and DDP finds those that never do
        # (without the voxel head, the finer decoder levels) instead of waiting for their gradients
        model = DistributedDataParallel(network, device_ids=[ctx.local_rank] if device.type == "cuda" else None,
                                        static_graph=True)
    model = speed.compiled(model)

    loader = step_loader(rank_dataset(volumes, config, ctx.rank), config.batch_size, start, config.steps, config.seed,
                         config.workers, device, collate_fn=pipeline_collate(device, method.boundary_weight > 0, speed))
    saved_step = start if resume else None

    def checkpoint(step: int) -> Path:
        nonlocal saved_step
        path = save_model(out, network.state_dict(), model_metadata(config, method, preprocessing, step))
        save_resume_state(out / RESUME_FILE, training_state(step, network, optimizer, scheduler, device))
        saved_step = step
        return path

    def record(step: int, log_now: bool, save_now: bool) -> Path | None:
        # rank 0 alone writes; the others learn through in_turn whether it failed
        if log_now:
            logs.write(last)
        return checkpoint(step) if save_now else None

    def open_run(ranks: list[dict]) -> MetricsLog:
        write_json(
            out / CONFIG_FILE,
            {"pretrain": config.to_json(), "data": str(Path(data).resolve()), "modality": dataset.modality, "preprocessing": preprocessing.to_json(),
             "cases": [v.case_id for v in volumes], "skipped": [str(p) for p in skipped], "world_size": ctx.world_size, "ranks": ranks,
             "speed": speed.to_json()},
        )
        try:
            return MetricsLog(out, start)
        except OutputError as exc:
            raise saving_failed(exc, out, saved_step) from exc

    sums: dict[str, float] = {}
    last: dict = {}
    model_path = out / "model.safetensors"
    network.train()
    with stop_on_signal() as stop:
        count, tic, t0 = 0, time.perf_counter(), time.perf_counter()
        # DataLoader workers start here, inheriting the handlers: with the default ones Ctrl-C would end them
        batches = iter(DevicePrefetcher(loader, device, speed, boundary=method.boundary_weight > 0))
        first = next(batches, None)
        # which crops each rank trains on first, to show they differ (and which stream each used)
        ranks = gather_objects(ctx, {"rank": ctx.rank, "stream": ctx.rank, "first_step": start + 1 if first is not None else None,
                                     "first_batch": batch_fingerprint(first["input"]) if first is not None else None})
        logs = in_turn(ctx, ctx.is_main, lambda: open_run(ranks))
        bar = tqdm(total=config.steps, initial=start, desc=f"pretrain {method.name}", unit="step", disable=not (progress and ctx.is_main),
                   dynamic_ncols=True)
        try:
            for step, batch in enumerate(itertools.chain([first] if first is not None else [], batches), start=start + 1):
                terms = pretext_step(model, method, optimizer, batch, speed, device)
                scheduler.step()
                # means over the ranks, so all of them see the same numbers and stop alike on a NaN
                values = mean_across_ranks(ctx, {k: v.item() for k, v in terms.items()})
                if not math.isfinite(values["total"]):
                    raise VectorPoseError(f"loss became {values['total']} at step {step}; lower --lr")
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                # a signal may reach the ranks at different steps: they stop together, at the first
                # step any of them was asked to
                stopping = any_rank(ctx, bool(stop))
                log_now = step % config.log_every == 0 or step == config.steps
                if log_now:
                    elapsed = time.perf_counter() - tic
                    last = {"step": step, **{k: v / count for k, v in sums.items()}, "lr": scheduler.get_last_lr()[0],
                            "crops_per_s": count * config.batch_size * ctx.world_size / elapsed, "elapsed_s": time.perf_counter() - t0}
                    bar.set_postfix({k: f"{last[k]:.3f}" for k in ("vp", "rec", "boundary") if k in last} | {"crops/s": f"{last['crops_per_s']:.1f}"})
                    sums, count, tic = {}, 0, time.perf_counter()
                save_now = step % config.checkpoint_every == 0 or step == config.steps or stopping
                if log_now or save_now:
                    model_path = in_turn(ctx, ctx.is_main, lambda: record(step, log_now, save_now)) or model_path
                if stopping:
                    raise stop.stopped(out, step)
        except OutputError as exc:
            raise saving_failed(exc, out, saved_step) from exc
        finally:
            batches.close()  # stops the prefetching thread
            bar.close()
            if logs is not None:
                logs.close()
    network.eval()
    return PretrainResult(network=network, run_dir=out, model_path=model_path, last_metrics=last)
