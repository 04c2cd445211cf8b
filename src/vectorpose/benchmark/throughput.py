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

from ..data.datasets import Case, Dataset, load_dataset
from ..data.preprocessing import PreprocessingConfig, preprocess_dataset
from ..devices import resolve_device
from ..errors import DataError
from ..methods import get_method
from ..models.backbone import BackboneConfig
from ..pretext.sample import PretextConfig
from ..training.prefetch import DevicePrefetcher
from ..training.pretext_data import PretextDataset, pipeline_collate
from ..training.pretrain import pretext_step
from ..training.run import step_loader
from ..training.speed import SpeedOptions
from ..utils.files import atomic_write
from .reference import reference_sample


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
    host = machine()  # before any work: what this process was given
    dataset = load_dataset(data, modality)
    if dataset.modality is None:
        raise DataError(Path(data), "modality unknown: dataset.json names none; pass --modality CT or MRI")
    images = Dataset(dataset.root, tuple(Case(c.case_id, c.image) for c in dataset.cases), dataset.modality)
    volumes, _ = preprocess_dataset(images, PreprocessingConfig(modality=dataset.modality), cache_dir)
    dev = resolve_device(device)
    pretext = PretextConfig(patch_size=patch_size)
    samples = PretextDataset(volumes, pretext, seed)
    objective = get_method(method)
    needs_boundary = objective.boundary_weight > 0
    torch.manual_seed(seed)
    network = objective.build_network(backbone).to(dev)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    model = speed.compiled(speed.layout(network))
    total = warmup + steps

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        pretext_step(model, objective, optimizer, batch, speed, dev)

    def loader(n_workers: int, start: int):
        return step_loader(samples, batch_size, start, start + total, seed, n_workers, dev,
                           collate_fn=pipeline_collate(dev, needs_boundary, speed))

    def prepared(n_workers: int, start: int):
        return iter(DevicePrefetcher(loader(n_workers, start), dev, speed, boundary=needs_boundary))

    # (c) the pipeline alone, with workers and in this process
    rates = {}
    for name, n_workers in (("pipeline", workers), ("pipeline_inprocess", 0)):
        it = prepared(n_workers, 0)
        for _ in range(warmup):
            next(it)
        _sync(dev)
        tic = time.perf_counter()
        for _ in range(steps):
            next(it)
        _sync(dev)
        rates[name] = steps * batch_size / (time.perf_counter() - tic)
        it.close()

    # (a) the model alone, on batches already on the device
    it = prepared(0, 0)
    cached = [next(it) for _ in range(min(total, 8))]
    it.close()
    network.train()
    for i in range(warmup):
        train_step(cached[i % len(cached)])
    _sync(dev)
    tic = time.perf_counter()
    for i in range(steps):
        train_step(cached[i % len(cached)])
    _sync(dev)
    model_step = (time.perf_counter() - tic) / steps

    # (b) the real step, fed by the real pipeline (fresh samples, not the cached ones)
    it = prepared(workers, total)
    for _ in range(warmup):
        train_step(next(it))
    _sync(dev)
    tic = time.perf_counter()
    for _ in range(steps):
        train_step(next(it))
    _sync(dev)
    full_step = (time.perf_counter() - tic) / steps
    it.close()

    if profile_dir is not None:
        # 10 steps show the pattern; a trace holds every op, about 1 MB a step
        profiled = min(steps, PROFILED_STEPS)
        profile_steps(Path(profile_dir) / "model_step", dev, lambda i: train_step(cached[i % len(cached)]), profiled)
        it = prepared(workers, 2 * total)
        for _ in range(warmup):
            train_step(next(it))
        profile_steps(Path(profile_dir) / "full_step", dev, lambda i: train_step(next(it)), profiled)
        it.close()

    # (d) the per-crop SciPy reference, drawing volumes as the dataset does
    tic = time.perf_counter()
    for i in range(reference_samples):
        rng = np.random.default_rng([seed, i])
        v = volumes[int(rng.integers(len(volumes)))]
        reference_sample(np.asarray(v.image()), v.intensity_range, rng, pretext)
    reference_rate = reference_samples / (time.perf_counter() - tic)

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


def profile_steps(stem: Path, device: torch.device, step, steps: int) -> None:
    """Run ``step(i)`` for ``i < steps`` under ``torch.profiler``; write ``stem.trace.json`` and ``stem.ops.txt``."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(steps):
            step(i)
        _sync(device)
    table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=40)
    atomic_write(stem.with_name(stem.name + ".ops.txt"), lambda tmp: tmp.write_text(table + "\n"))
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
