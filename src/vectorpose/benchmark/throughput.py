"""Pretraining throughput: does the data pipeline ever make the network wait?

One run measures, on the same data and settings:

(a) ``model_step_s``: a training step (forward, loss, backward, optimiser) on batches already in
    the device's memory, boundary targets included, so no data work at all;
(b) ``full_step_s``: the real pretraining step, fed by the real pipeline (DataLoader workers
    cropping memory-mapped volumes, the boundary target on the GPU or in the workers);
(c) ``pipeline_samples_per_s``: the pipeline alone, with the configured workers, and
    ``pipeline_inprocess_samples_per_s`` in the calling process only;
(d) ``reference_samples_per_s``: :func:`~vectorpose.benchmark.reference.reference_sample`, the
    per-crop SciPy pipeline (interpolating zoom and rotation, median filter), in one process.

``overhead = (b) / (a)`` says how much the pipeline slows training (1.0: not at all);
``speedup = (c in-process) / (d)`` compares the two pipelines on equal terms (one process each).

With ``profile_dir``, (a) and (b) are run once more for up to 10 steps, untimed, under
``torch.profiler``, to show where an overhead comes from. Each gives ``<name>.trace.json`` (a Chrome
trace with every thread of this process, the prefetch thread included; open it in Perfetto) and
``<name>.ops.txt`` (ops by self time).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import load_dataset
from ..data.preprocessing import PreprocessingConfig, preprocess_dataset
from ..devices import resolve_device
from ..errors import DataError
from ..methods import get_method
from ..models.backbone import BackboneConfig
from ..pretext.masking import MaskingConfig
from ..pretext.sample import PretextConfig
from ..training.prefetch import DevicePrefetcher
from ..training.pretext_data import PretextDataset, pipeline_collate
from ..training.pretrain import pretext_step
from ..training.run import step_loader
from ..training.speed import SpeedOptions
from ..utils.files import atomic_write
from .reference import reference_sample


# 10 steps show the pattern; a trace holds every op, about 1 MB a step
PROFILED_STEPS = 10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def measure_throughput(
    data: str | Path,
    method: str = "vectorpose",
    patch_size: int = 32,
    batch_size: int = 4,
    steps: int = 20,
    warmup: int = 3,
    workers: int = 1,
    device: str = "auto",
    backbone: BackboneConfig = BackboneConfig(),
    speed: SpeedOptions = SpeedOptions(),
    reference_samples: int = 16,
    modality: str | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    profile_dir: str | Path | None = None,
) -> dict:
    """Measure (a)–(d) above on the scans of ``data``; returns the numbers, the settings and the machine."""
    if steps < 1 or warmup < 0 or reference_samples < 1:
        raise ValueError(f"steps and reference_samples must be positive and warmup >= 0, got {steps}, {reference_samples}, {warmup}")
    # a method that masks its input (mae) gets the default blocks, as `pretrain` would; checked before any work
    masking = MaskingConfig() if get_method(method).masked_input else None
    if masking is not None:
        masking.grid(patch_size)
    host = machine()  # before any work: what this process was given
    dataset = load_dataset(data, modality)
    if dataset.modality is None:
        raise DataError(Path(data), "modality unknown: dataset.json names none; pass --modality CT or MRI")
    volumes, _ = preprocess_dataset(dataset.images_only(), PreprocessingConfig(modality=dataset.modality), cache_dir)
    dev = resolve_device(device)
    pretext = PretextConfig(patch_size=patch_size)
    samples = PretextDataset(volumes, pretext, seed, masking=masking)
    needs_boundary = get_method(method).boundary_weight > 0
    network, train_step = _training_step(method, backbone, speed, dev, seed)
    total = warmup + steps

    def prepared(n_workers: int, start: int):
        loader = step_loader(samples, batch_size, start, start + total, seed, n_workers, dev,
                             collate_fn=pipeline_collate(dev, needs_boundary, speed))
        return iter(DevicePrefetcher(loader, dev, speed, boundary=needs_boundary))

    # (c) the pipeline alone, with workers and in this process
    rates = {name: _pipeline_rate(prepared(n_workers, 0), warmup, steps, batch_size, dev)
             for name, n_workers in (("pipeline", workers), ("pipeline_inprocess", 0))}
    # (a) the model alone, on batches already on the device
    it = prepared(0, 0)
    cached = [next(it) for _ in range(min(total, 8))]
    it.close()
    network.train()
    model_step = _step_time(lambda i: train_step(cached[i % len(cached)]), warmup, steps, dev)
    # (b) the real step, fed by the real pipeline (fresh samples, not the cached ones)
    it = prepared(workers, total)
    full_step = _step_time(lambda i: train_step(next(it)), warmup, steps, dev)
    it.close()

    if profile_dir is not None:
        _profile(Path(profile_dir), dev, train_step, cached, prepared(workers, 2 * total), warmup, min(steps, PROFILED_STEPS))

    reference_rate = _reference_rate(volumes, pretext, masking, reference_samples, seed)
    return {
        "settings": {"data": str(Path(data).resolve()), "method": method, "patch_size": patch_size, "batch_size": batch_size,
                     "steps": steps, "warmup": warmup, "workers": workers, "device": str(dev), "backbone": backbone.to_json(),
                     "speed": speed.to_json(), "reference_samples": reference_samples, "seed": seed, "volumes": len(volumes),
                     "profile": str(Path(profile_dir).resolve()) if profile_dir is not None else None},
        "machine": host,
        "model_step_s": model_step,
        "full_step_s": full_step,
        "pipeline_samples_per_s": rates["pipeline"],
        "pipeline_inprocess_samples_per_s": rates["pipeline_inprocess"],
        "reference_samples_per_s": reference_rate,
        "model_samples_per_s": batch_size / model_step,
        "overhead": full_step / model_step,
        "speedup": rates["pipeline_inprocess"] / reference_rate,
    }


def _training_step(method: str, backbone: BackboneConfig, speed: SpeedOptions, device: torch.device, seed: int):
    """A new network of ``method`` and a function that trains it one step on a batch: ``(network, step)``."""
    objective = get_method(method)
    torch.manual_seed(seed)
    network = objective.build_network(backbone).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    model = speed.compiled(speed.layout(network))

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        pretext_step(model, objective, optimizer, batch, speed, device)

    return network, train_step


def _profile(folder: Path, device: torch.device, train_step, cached: list, batches, warmup: int, steps: int) -> None:
    """Profiles of (a) on ``cached`` and of (b) on ``batches`` (an iterator it closes), ``steps`` steps each."""
    profile_steps(folder / "model_step", device, lambda i: train_step(cached[i % len(cached)]), steps)
    for _ in range(warmup):
        train_step(next(batches))
    profile_steps(folder / "full_step", device, lambda i: train_step(next(batches)), steps)
    batches.close()


def _pipeline_rate(batches, warmup: int, steps: int, batch_size: int, device: torch.device) -> float:
    """Samples per second of ``batches`` (an iterator it closes) over ``steps`` batches after ``warmup``."""
    seconds_per_batch = _step_time(lambda i: next(batches), warmup, steps, device)
    batches.close()
    return batch_size / seconds_per_batch


def _step_time(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step(i)`` over ``steps`` calls, after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
    _sync(device)
    tic = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync(device)
    return (time.perf_counter() - tic) / steps


def _reference_rate(volumes: list, pretext: PretextConfig, masking: MaskingConfig | None, samples: int, seed: int) -> float:
    """(d): samples per second of the per-crop SciPy reference, drawing volumes as the dataset does."""
    tic = time.perf_counter()
    for i in range(samples):
        rng = np.random.default_rng([seed, i])
        v = volumes[int(rng.integers(len(volumes)))]
        reference_sample(np.asarray(v.image()), v.intensity_range, rng, pretext, masking)
    return samples / (time.perf_counter() - tic)


def profile_steps(stem: Path, device: torch.device, step, steps: int) -> None:
    """Run ``step(i)`` for ``i < steps`` under ``torch.profiler``; write ``stem.trace.json`` and ``stem.ops.txt``."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(steps):
            step(i)
        _sync(device)
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=40)
    atomic_write(stem.with_name(stem.name + ".ops.txt"), lambda tmp: tmp.write_text(table + "\n", encoding="utf-8"))
    atomic_write(stem.with_name(stem.name + ".trace.json"), lambda tmp: prof.export_chrome_trace(str(tmp)))


def format_throughput(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"device {s['device']} ({result['machine'].get('gpu', result['machine']['processor'])}), {result['machine']['torch_threads']} torch threads, "
        f"{s['workers']} workers, batch {s['batch_size']} of {s['patch_size']}^3, method {s['method']}, speed {s['speed']}",
        f"(a) model step on cached batches   {result['model_step_s'] * 1e3:8.1f} ms  ({result['model_samples_per_s']:.1f} samples/s)",
        f"(b) full step with the pipeline     {result['full_step_s'] * 1e3:8.1f} ms",
        f"(c) pipeline alone                  {result['pipeline_samples_per_s']:8.1f} samples/s with {s['workers']} workers, "
        f"{result['pipeline_inprocess_samples_per_s']:.1f} in-process",
        f"(d) per-crop SciPy reference        {result['reference_samples_per_s']:8.1f} samples/s",
        f"overhead (b)/(a) = {result['overhead']:.2f}    speed-up (c in-process)/(d) = {result['speedup']:.1f}",
    ]
    return "\n".join(lines)
