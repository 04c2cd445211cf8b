"""`vectorpose bench` end to end on tiny settings: every measurement present and the ratios derived
from them (no timing is asserted: timings live in docs/performance.md)."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import assert_one_line_error, run

from vectorpose.training.speed import SpeedOptions

TINY = ["--patch", "16", "--batch", "2", "--steps", "2", "--warmup", "1", "--channels", "4,8,16", "--reference-samples", "2"]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_bench_writes_consistent_results(workers, synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, err = run(["bench", synthetic_dataset, *TINY, "--workers", workers, "--cache", tmp_path / "cache", "--out", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text(encoding="utf-8"))
    for key in ("model_step_s", "full_step_s", "pipeline_samples_per_s", "pipeline_inprocess_samples_per_s", "reference_samples_per_s"):
        assert result[key] > 0, key
    assert result["overhead"] == pytest.approx(result["full_step_s"] / result["model_step_s"])
    assert result["speedup"] == pytest.approx(result["pipeline_inprocess_samples_per_s"] / result["reference_samples_per_s"])
    assert result["settings"]["workers"] == int(workers) and result["machine"]["torch_threads"] >= 1
    assert "overhead (b)/(a)" in stdout
    code, _, err = run(["bench", synthetic_dataset, *TINY, "--out", out], capsys)
    assert_one_line_error(code, err, str(out), "--overwrite")


def test_bench_times_mae_and_refuses_blocks_that_do_not_fit(synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, _, err = run(["bench", synthetic_dataset, *TINY, "--method", "mae", "--workers", "0", "--cache", tmp_path / "cache", "--out", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["settings"]["method"] == "mae" and result["reference_samples_per_s"] > 0 and result["full_step_s"] > 0
    code, _, err = run(["bench", synthetic_dataset, "--method", "mae", "--patch", "18", "--channels", "4,8,16", "--cache", tmp_path / "cache"], capsys)
    assert code == 2 and "mask block size 4 must divide the patch size 18" in err and "Traceback" not in err


@pytest.mark.parametrize("boundary_in, main_process_pads", [("workers", False), ("device", True)])
def test_bench_profiles_show_where_the_boundary_is_made(boundary_in, main_process_pads, synthetic_dataset, tmp_path, capsys):
    """The boundary target's replicate padding (the network pads with zeros) is in the training
    process's profile of (b) exactly when the device, not the workers, makes the target."""
    profile = tmp_path / "profile"
    code, stdout, err = run(["bench", synthetic_dataset, *TINY, "--workers", "1", "--boundary-in", boundary_in, "--cache", tmp_path / "cache",
                             "--profile", profile], capsys)
    assert code == 0, err
    assert str(profile) in stdout
    ops = {}
    for step in ("model_step", "full_step"):
        assert "aten::convolution" in (profile / f"{step}.ops.txt").read_text(encoding="utf-8")
        ops[step] = {event.get("name") for event in json.loads((profile / f"{step}.trace.json").read_text(encoding="utf-8"))["traceEvents"]}
    assert ("aten::replication_pad3d" in ops["full_step"]) == main_process_pads
    assert "aten::replication_pad3d" not in ops["model_step"] and "aten::convolution_backward" in ops["model_step"]
    code, _, err = run(["bench", synthetic_dataset, *TINY, "--profile", profile], capsys)
    assert_one_line_error(code, err, str(profile), "--overwrite")


@pytest.mark.parametrize("boundary_in, device, in_workers", [
    ("auto", "cpu", True), ("auto", "cuda", False), ("workers", "cuda", True), ("device", "cpu", False), ("workers", "cpu", True),
])
def test_where_the_boundary_is_made(boundary_in, device, in_workers):
    assert SpeedOptions(boundary_in=boundary_in).boundary_in_workers(torch.device(device)) == in_workers


def test_speed_options():
    with pytest.raises(ValueError, match="amp"):
        SpeedOptions(amp="fp8")
    with pytest.raises(ValueError, match="boundary_in"):
        SpeedOptions(boundary_in="gpu")
    net = torch.nn.Conv3d(1, 2, 3)
    speed = SpeedOptions(channels_last=True)
    speed.layout(net)
    assert net.weight.is_contiguous(memory_format=torch.channels_last_3d)
    batch = speed.inputs({"input": torch.rand(2, 1, 4, 4, 4), "vectors": torch.rand(2, 9, 3)}, torch.device("cpu"))
    assert batch["input"].is_contiguous(memory_format=torch.channels_last_3d) and batch["vectors"].shape == (2, 9, 3)
