"""The main job end to end on the built-in synthetic data, small enough for a CPU in a few minutes.

Writes the synthetic dataset, then runs a small label-efficiency benchmark on it
(:func:`vectorpose.benchmark.runner.run_benchmark`): pretrains with VectorPOSE and with Models
Genesis, fine-tunes every method from few labelled cases with two seeds (same split, cases and
recipe for every method), evaluates every model on the recorded test split, and prints the table.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .benchmark.report import headline_table
from .benchmark.runner import BenchmarkConfig, BenchmarkRun, run_benchmark
from .data.synthetic import make_synthetic_dataset
from .errors import VectorPoseError
from .training.finetune import FinetuneConfig


def demo_config(pretrain_steps: int, finetune_steps: int) -> BenchmarkConfig:
    # 4 fine-tuning patches of 32³ keep a step a fraction of a second on a 2-core CPU.
    return BenchmarkConfig(
        methods=("scratch", "genesis", "vectorpose"), fractions=(0.25,), seeds=2, pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps, val_every=max(1, finetune_steps // 4),
        finetuning=FinetuneConfig(patch_size=(32, 32, 32), batch_size=4),
    )


def run_demo(out: str | Path, pretrain_steps: int = 300, finetune_steps: int = 200, overwrite: bool = False,
             progress: bool = True) -> BenchmarkRun:
    """Run the demo into ``out`` and print its benchmark table."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise VectorPoseError(f"{out}: already holds results; pass --overwrite to replace them")
        shutil.rmtree(out)
    data = make_synthetic_dataset(out / "data", num_cases=20, seed=0)
    config = demo_config(pretrain_steps, finetune_steps)
    run = run_benchmark(data, out / "benchmark", config, cache_dir=out / "cache", progress=progress,
                        command=f"vectorpose demo {out}")
    labelled = run.cells[0]["labelled"]
    print(f"\nlabel-efficiency benchmark on synthetic data: mean test Dice ± std over {config.seeds} seeds "
          f"({labelled} labelled cases, {finetune_steps} fine-tuning steps, {run.cells[0]['test']['num_cases']} test cases)")
    print(headline_table(run.cells, run.statistics["test"]))
    print(f"report: {out / 'benchmark' / 'report.md'}; plots and results.json beside it; models under {out / 'benchmark' / 'cells'}")
    return run
