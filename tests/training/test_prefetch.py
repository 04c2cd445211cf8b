"""The prefetcher yields the loader's batches, in order, on the device, with the boundary target;
errors in its thread reach the caller, and leaving early stops the thread."""

from __future__ import annotations

import threading

import pytest
import torch

from vectorpose.pretext.boundary import boundary_target
from vectorpose.training.prefetch import DevicePrefetcher


def batches(n: int):
    g = torch.Generator().manual_seed(0)
    return [{"input": torch.rand(2, 1, 8, 8, 8, generator=g), "clean": torch.rand(2, 1, 8, 8, 8, generator=g)} for _ in range(n)]


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_same_batches_in_order_with_boundary(background, depth):
    source = batches(7)
    out = list(DevicePrefetcher(source, torch.device("cpu"), boundary=True, depth=depth, background=background))
    assert len(out) == 7
    for got, want in zip(out, source):
        assert torch.equal(got["input"], want["input"])
        assert torch.equal(got["boundary"], boundary_target(want["clean"]))


def test_boundary_made_by_the_workers_is_kept():
    source = [{**b, "boundary": torch.zeros(2, 1, 8, 8, 8)} for b in batches(2)]
    out = list(DevicePrefetcher(source, torch.device("cpu"), boundary=True, background=True))
    assert all(torch.equal(b["boundary"], torch.zeros(2, 1, 8, 8, 8)) for b in out)


def test_error_in_the_loader_reaches_the_caller():
    def failing():
        yield from batches(2)
        raise RuntimeError("bad batch 3")

    seen = []
    with pytest.raises(RuntimeError, match="bad batch 3"):
        for b in DevicePrefetcher(failing(), torch.device("cpu"), background=True):
            seen.append(b)
    assert len(seen) == 2


def test_leaving_early_stops_the_thread():
    def endless():
        while True:
            yield batches(1)[0]

    it = iter(DevicePrefetcher(endless(), torch.device("cpu"), depth=2, background=True))
    next(it)
    it.close()
    assert not any(t.name == "vectorpose-prefetch" and t.is_alive() for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetcher([], torch.device("cpu"), depth=0)
