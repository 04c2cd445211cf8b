"""Shared fixtures: the built-in synthetic dataset and the real data beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VECTORPOSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
HIPPOCAMPUS = SHARED_DATA / "Task04_Hippocampus"
CHAOS_T2 = SHARED_DATA / "CHAOS_T2"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from vectorpose.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "data", num_cases=6, seed=0)


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"real data not found at {HIPPOCAMPUS}")
    return HIPPOCAMPUS


@pytest.fixture(scope="session")
def chaos_t2() -> Path:
    if not (CHAOS_T2 / "dataset.json").is_file():
        pytest.skip(f"real data not found at {CHAOS_T2}")
    return CHAOS_T2


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Commands may set torch's thread count (``--threads``, or the rule for --workers on the CPU); a
    leaked count would change float results of later tests that compare runs across processes."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
