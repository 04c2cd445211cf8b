"""Pretraining in two processes on the CPU (gloo) under torchrun: one checkpoint written by rank 0,
a different crop stream per rank, resume, ranks stopping together on a signal, and the refusal to
resume with another number of processes; plus the process-group helpers alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run

from vectorpose.data.datasets import Case, Dataset, load_dataset
from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset
from vectorpose.data.splits import make_split
from vectorpose.errors import VectorPoseError
from vectorpose.pretext.sample import PretextConfig, make_pretext_sample
from vectorpose.models.files import load_model
from vectorpose.training.resume import load_resume_state
from vectorpose.training.distributed import DistributedContext, any_rank, gather_objects, in_turn, init_distributed, mean_across_ranks
from vectorpose.training.pretext_data import PretextDataset
from vectorpose.training.pretrain import PretrainConfig, batch_fingerprint, rank_dataset
from vectorpose.training.run import step_loader

BATCH = 2
COMMON = ["--batch", str(BATCH), "--patch", "16", "--channels", "4,8,16", "--quiet", "--log-every", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            "-m", "vectorpose.cli", "pretrain", str(data), "--out", str(out), "--cache", str(cache), *COMMON, *extra]


def child_env() -> dict:
    # one thread per process: two processes share the 2 cores of a small test machine; a worker that
    # aborts in native code prints where its Python threads were, into the stderr a failure shows
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def torchrun(data: Path, out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(data, out, cache, *extra), env=child_env(), capture_output=True, text=True, timeout=300)


def first_batches(data: Path, out: Path, cache: Path, start: int) -> list[torch.Tensor]:
    """The input crops that ranks 0 and 1 of the run in ``out`` draw at step ``start + 1``, computed here."""
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config = PretrainConfig.from_json(saved["pretrain"])
    dataset = load_dataset(data)
    # pretraining reads every case outside the test split that fine-tuning draws with the same settings
    test = set(make_split([c.case_id for c in dataset.labelled], config.split_seed, test_fraction=config.test_fraction).test)
    images_only = Dataset(dataset.root, tuple(Case(c.case_id, c.image) for c in dataset.cases if c.case_id not in test), dataset.modality)
    volumes, _ = preprocess_dataset(images_only, PreprocessingConfig(modality=dataset.modality), cache)
    assert [v.case_id for v in volumes] == saved["cases"]
    return [next(iter(step_loader(rank_dataset(volumes, config, rank), BATCH, start, start + 1, config.seed, 0, torch.device("cpu"))))["input"]
            for rank in (0, 1)]


@pytest.fixture(scope="module")
def two_rank_run(synthetic_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """A 4-step run in two processes: ``(run folder, cache)``."""
    root = tmp_path_factory.mktemp("ddp")
    out, cache = root / "run", root / "cache"
    done = torchrun(synthetic_dataset, out, cache, "--steps", "4")
    assert done.returncode == 0, done.stderr
    return out, cache


def test_two_processes_write_one_checkpoint_from_different_crops(two_rank_run, synthetic_dataset):
    out, cache = two_rank_run
    # rank 0 alone wrote: one checkpoint, one log, one TensorBoard file, nothing left half-written
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl", "model.json", "model.safetensors", "resume.pt", "tensorboard"]
    assert len(list((out / "tensorboard").iterdir())) == 1
    state, meta = load_model(out, task="pretext")
    assert meta["step"] == 4 and state
    assert load_resume_state(out / "resume.pt")["step"] == 4
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()] == [2, 4]

    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["world_size"] == 2
    expected = first_batches(synthetic_dataset, out, cache, start=0)
    assert not torch.equal(expected[0], expected[1])
    # the fingerprints the ranks sent to rank 0 are those of the streams computed here, so they
    # really drew different crops (and rank 0 the stream of a one-process run)
    assert [(r["rank"], r["stream"], r["first_step"]) for r in saved["ranks"]] == [(0, 0, 1), (1, 1, 1)]
    assert [r["first_batch"] for r in saved["ranks"]] == [batch_fingerprint(x) for x in expected]


def test_resume_under_torchrun_continues_each_stream(two_rank_run, synthetic_dataset, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_rank_run[0], out)
    done = torchrun(synthetic_dataset, out, two_rank_run[1], "--steps", "6", "--resume")
    assert done.returncode == 0, done.stderr
    assert load_resume_state(out / "resume.pt")["step"] == 6
    assert load_model(out, task="pretext")[1]["step"] == 6
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()] == [2, 4, 6]
    ranks = json.loads((out / "config.json").read_text(encoding="utf-8"))["ranks"]
    expected = first_batches(synthetic_dataset, out, two_rank_run[1], start=4)
    assert [(r["first_step"], r["first_batch"]) for r in ranks] == [(5, batch_fingerprint(x)) for x in expected]


def test_resume_with_another_number_of_processes_is_refused(two_rank_run, synthetic_dataset, capsys, monkeypatch):
    out, cache = two_rank_run
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    code, _, err = run(["pretrain", synthetic_dataset, "--out", out, "--cache", cache, *COMMON, "--steps", "6", "--resume"], capsys)
    assert code == 1
    assert_one_line_error(code, err, str(out), "2 process", "not 1")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def worker_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` started by process ``parent`` (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name in parentheses may hold spaces: the parent pid is 2nd after it
            if int(stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1]) != parent:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the workers through /proc")
def test_a_signal_to_one_rank_stops_both_at_the_same_step(synthetic_dataset, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(torchrun_command(synthetic_dataset, out, tmp_path / "cache", "--steps", "400", "--log-every", "1",
                                             "--checkpoint-every", "1000"),
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not (metrics.is_file() and len(metrics.read_text(encoding="utf-8").splitlines()) >= 3):
            time.sleep(0.05)
        pid = worker_pid(proc.pid, rank=1)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGTERM)  # rank 1 alone: rank 0 must learn of it and save
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = [int(s) for s in re.findall(r"stopped by .*? after step (\d+); its state is saved", err)]
    assert len(stopped) == 2 and stopped[0] == stopped[1], err
    assert load_resume_state(out / "resume.pt")["step"] == stopped[0] < 400
    assert json.loads(metrics.read_text(encoding="utf-8").splitlines()[-1])["step"] == stopped[0]


# --- the pieces, in this process -------------------------------------------------------------------

def test_stream_zero_is_the_one_process_stream_and_streams_differ(synthetic_dataset, cache_dir):
    dataset = load_dataset(synthetic_dataset)
    volumes, _ = preprocess_dataset(dataset, PreprocessingConfig(modality=dataset.modality), cache_dir)
    config = PretextConfig(patch_size=16)
    # sample i of stream 0 comes from default_rng([seed, i]), as before streams existed
    rng = np.random.default_rng([7, 3])
    k = int(rng.integers(len(volumes)))
    expected = make_pretext_sample(volumes[k].image(), volumes[k].intensity_range, rng, config)
    assert torch.equal(PretextDataset(volumes, config, 7)[3]["input"], torch.as_tensor(expected.input))
    # default_rng([seed, 1, 0]) == default_rng([seed, 1]): a naive stream word would replay stream 0
    streams = [[PretextDataset(volumes, config, 7, stream=s)[i]["input"] for i in range(3)] for s in range(3)]
    flat = [x for stream in streams for x in stream]
    assert all(not torch.equal(a, b) for i, a in enumerate(flat) for b in flat[i + 1:])
    with pytest.raises(ValueError, match="stream"):
        PretextDataset(volumes, config, 7, stream=-1)


def test_one_process_context_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with init_distributed("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.device) == (0, 1, True, torch.device("cpu"))
        assert mean_across_ranks(ctx, {"a": 1.5}) == {"a": 1.5}
        assert any_rank(ctx, True) and not any_rank(ctx, False)
        assert gather_objects(ctx, "x") == ["x"]
        assert in_turn(ctx, True, lambda: 3) == 3 and in_turn(ctx, False, lambda: 3) is None
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("kwargs,match", [(dict(world_size=0), "world_size"), (dict(rank=2, world_size=2), "rank"),
                                          (dict(local_rank=-1), "local_rank")])
def test_context_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistributedContext(**kwargs)


def test_one_gpu_for_several_processes_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(VectorPoseError, match="cuda:1 would put all 2 processes on one GPU"):
        init_distributed("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(VectorPoseError, match="WORLD_SIZE must be an integer"):
        init_distributed("cpu")


EXIT_SCRIPT = """
import atexit, sys
from vectorpose.training.distributed import exit_torchrun_worker
atexit.register(lambda: print(" shutdown"))
sys.stdout.write("buffered")
exit_torchrun_worker(3)
print(" returned")
"""


@pytest.mark.parametrize("world_size,code,out", [("2", 3, "buffered"), ("1", 0, "buffered returned\n shutdown\n"),
                                                 (None, 0, "buffered returned\n shutdown\n")])
def test_a_torchrun_worker_exits_without_interpreter_shutdown(world_size, code, out):
    # a torchrun worker ends at once with the flushed output (no atexit handler runs); a lone process returns
    env = {k: v for k, v in child_env().items() if k != "PYTHONFAULTHANDLER"} | ({"WORLD_SIZE": world_size} if world_size else {})
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (code, out), done.stderr
