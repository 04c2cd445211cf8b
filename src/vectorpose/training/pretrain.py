"""The pretraining loop: a pretext method on crops of unlabelled scans, with safe checkpoints.

Writes into the run folder: ``config.json`` (everything needed to rerun), ``model.safetensors`` +
``model.json``, ``resume.pt`` (optimizer, scheduler, RNG, step), ``metrics.jsonl`` and TensorBoard
events under ``tensorboard/``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..data.datasets import Case, Dataset, load_dataset
from ..data.preprocessing import PreprocessingConfig, preprocess_dataset
from ..data.validation import check_crop_fits
from ..errors import DataError, OutputError, VectorPoseError
from ..methods import PretextMethod, get_method
from ..models.backbone import BackboneConfig
from ..models.pretext_network import PretextNetwork
from ..pretext.sample import PretextConfig
from ..utils.files import write_json
from .checkpoint import RESUME_FILE, load_model, load_weights, save_model, save_resume_state
from .pretext_data import PretextDataset
from .run import (CONFIG_FILE, MetricsLog, check_run_dir, create_run_dir, resolve_device, restore_training_state, saving_failed,
                  step_loader, stop_on_signal, training_state)


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
) -> PretrainResult:
    """Pretrain a backbone on the scans under ``data`` and write the run into ``out``.

    ``modality`` (``CT`` or ``MRI``) overrides ``dataset.json``; one of them must give it. With
    ``resume`` the run continues from ``out/resume.pt`` with the saved configuration (only ``steps``
    may grow).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    dataset = load_dataset(data, modality)
    if dataset.modality is None:
        raise DataError(Path(data), "modality unknown: dataset.json names none; pass --modality CT or MRI")
    preprocessing = PreprocessingConfig(modality=dataset.modality)

    check_run_dir(out, resume, overwrite)
    if resume:
        saved = PretrainConfig.from_json(json.loads((out / CONFIG_FILE).read_text())["pretrain"])
        if replace(saved, steps=config.steps) != config:
            differing = [k for k in config.to_json() if k != "steps" and config.to_json()[k] != saved.to_json()[k]]
            raise VectorPoseError(f"{out}: --resume with settings that differ from the saved run ({', '.join(differing)})")
    # pretraining reads images only: a broken label map must not stop it
    images_only = Dataset(dataset.root, tuple(Case(c.case_id, c.image) for c in dataset.cases), dataset.modality, dataset.labels)
    volumes, skipped = preprocess_dataset(images_only, preprocessing, cache_dir, skip_bad=skip_bad, progress=progress)
    check_crop_fits(config.pretext.patch_size, config.pretext.scale_range[0], [v.shape for v in volumes], Path(data))
    for problem in skipped:
        print(f"skipped: {problem}")
    create_run_dir(out, resume, overwrite)
    write_json(
        out / CONFIG_FILE,
        {"pretrain": config.to_json(), "data": str(Path(data).resolve()), "modality": dataset.modality, "preprocessing": preprocessing.to_json(),
         "cases": [v.case_id for v in volumes], "skipped": [str(p) for p in skipped]},
    )

    device = resolve_device(config.device)
    method = config.build_method()
    torch.manual_seed(config.seed)
    network = method.build_network(config.backbone).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    start = 0
    if resume:
        start = int(restore_training_state(out, network, optimizer, scheduler, config.steps, device)["step"])

    loader = step_loader(PretextDataset(volumes, config.pretext, config.seed), config.batch_size, start, config.steps, config.seed,
                         config.workers, device)

    saved_step = start if resume else None

    def checkpoint(step: int) -> Path:
        nonlocal saved_step
        path = save_model(out, network.state_dict(), model_metadata(config, method, preprocessing, step))
        save_resume_state(out / RESUME_FILE, training_state(step, network, optimizer, scheduler, device))
        saved_step = step
        return path

    try:
        logs = MetricsLog(out, start)
    except OutputError as exc:
        raise saving_failed(exc, out, saved_step) from exc
    bar = tqdm(total=config.steps, initial=start, desc=f"pretrain {method.name}", unit="step", disable=not progress, dynamic_ncols=True)
    sums: dict[str, float] = {}
    count, tic, t0 = 0, time.perf_counter(), time.perf_counter()
    last: dict = {}
    model_path = out / "model.safetensors"
    network.train()
    with stop_on_signal() as stop:
        try:
            for step, batch in enumerate(loader, start=start + 1):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                terms = method.losses(network(batch["input"]), batch)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                scheduler.step()
                values = {k: v.item() for k, v in terms.items()}
                if not math.isfinite(values["total"]):
                    raise VectorPoseError(f"loss became {values['total']} at step {step}; lower --lr")
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    elapsed = time.perf_counter() - tic
                    last = {"step": step, **{k: v / count for k, v in sums.items()}, "lr": scheduler.get_last_lr()[0],
                            "crops_per_s": count * config.batch_size / elapsed, "elapsed_s": time.perf_counter() - t0}
                    logs.write(last)
                    bar.set_postfix({k: f"{last[k]:.3f}" for k in ("vp", "rec", "boundary") if k in last} | {"crops/s": f"{last['crops_per_s']:.1f}"})
                    sums, count, tic = {}, 0, time.perf_counter()
                if step % config.checkpoint_every == 0 or step == config.steps or stop:
                    model_path = checkpoint(step)
                if stop:
                    raise stop.stopped(out, step)
        except OutputError as exc:
            raise saving_failed(exc, out, saved_step) from exc
        finally:
            bar.close()
            logs.close()
    network.eval()
    return PretrainResult(network=network, run_dir=out, model_path=model_path, last_metrics=last)
