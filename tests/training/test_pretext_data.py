"""The pretext sample stream reads volumes through memory maps: streaming many volumes keeps the
process's own memory bounded, because the data stays in the (shared, reclaimable) page cache."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from vectorpose.data.io import ImageGeometry
from vectorpose.data.preprocessing import PreprocessedVolume
from vectorpose.pretext.sample import PretextConfig
from vectorpose.training.pretext_data import PretextDataset

EYE = tuple(tuple(float(v) for v in r) for r in np.eye(4))
SIDE = 64  # 1 MiB of float32 per volume


def anonymous_memory_mib() -> float:
    """Memory this process owns (not file pages it maps): ``RssAnon`` from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("/proc/self/status has no RssAnon on this system")


def cached_volumes(folder: Path, count: int) -> list[PreprocessedVolume]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    shape = (SIDE,) * 3
    geometry = ImageGeometry(EYE, shape, ("R", "A", "S"), EYE, shape, (1.0, 1.0, 1.0))
    volumes = []
    for i in range(count):
        np.save(folder / f"{i}.npy", rng.random(shape, dtype=np.float32))
        volumes.append(PreprocessedVolume(f"v{i}", folder / f"{i}.nii.gz", folder / f"{i}.npy", geometry, (0.0, 1.0)))
    return volumes


def test_streaming_many_volumes_keeps_memory_bounded(tmp_path):
    volumes = cached_volumes(tmp_path / "cache", 160)  # 160 MiB on disk
    dataset = PretextDataset(volumes, PretextConfig(patch_size=32), seed=0)
    gc.collect()
    before = anonymous_memory_mib()
    seen = set()
    for i in range(600):
        dataset[i]
        seen.add(int(np.random.default_rng([0, i]).integers(len(volumes))))
    gc.collect()
    growth = anonymous_memory_mib() - before
    assert len(seen) == len(volumes)  # every volume was read
    # copying the volumes would cost 160 MiB; samples and memory-map bookkeeping stay far below
    assert growth < 40, f"anonymous memory grew by {growth:.0f} MiB while streaming 160 MiB of volumes"
