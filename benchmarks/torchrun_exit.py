"""How often a two-process DDP run on the CPU (gloo) aborts while its processes exit, two ways.

    python benchmarks/torchrun_exit.py --runs 60

Each run starts ``torchrun --nproc_per_node=2`` on this file's worker: one DDP step of a linear
layer, ``destroy_process_group``, rank 0 waits ``--delay`` seconds (ranks that leave a few
milliseconds apart), then the process ends either through the interpreter's shutdown (``return``)
or through :func:`vectorpose.training.distributed.exit_torchrun_worker` (``exit_torchrun_worker``),
as the ``vectorpose`` command does. The DDP model stays referenced until the process ends: then the
gloo worker thread's last collective is released during the shutdown often enough to count (in the
``vectorpose`` command the model is gone by then, and the abort was rarer: once in a CI run of the
test suite, whose ``test_distributed.py`` starts torchrun three times). Printed: per way, the runs
whose torchrun failed, and how many of those printed ``terminate called without an active exception``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


KEPT: list = []  # the DDP model, referenced until the interpreter shuts down


def worker(way: str, delay: float) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from vectorpose.training.distributed import exit_torchrun_worker

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = DistributedDataParallel(torch.nn.Linear(3, 1))
    model(torch.ones(2, 3)).sum().backward()
    KEPT.append(model)
    dist.destroy_process_group()
    if rank == 0:
        time.sleep(delay)
    if way == "exit_torchrun_worker":
        exit_torchrun_worker(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60, help="torchrun runs per way")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds rank 0 waits before it exits")
    parser.add_argument("--worker", choices=("return", "exit_torchrun_worker"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.delay)
        return
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    for way in ("return", "exit_torchrun_worker"):
        failed = aborted = 0
        for _ in range(args.runs):
            done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                                   f"--master_port={free_port()}", __file__, "--worker", way, "--delay", str(args.delay)],
                                  env=env, capture_output=True, text=True, timeout=300)
            failed += done.returncode != 0
            aborted += "terminate called without an active exception" in done.stderr
        print(f"{way}: {failed} of {args.runs} runs failed, {aborted} with 'terminate called without an active exception'", flush=True)


if __name__ == "__main__":
    main()
