"""Per-organ validation Dice at every validation round of fine-tuning runs, as a markdown table: when
each organ arrives, and whether it was still arriving when the step budget ran out (validation split
only; no test numbers). With --arrivals, one row per run instead: the first validation round at which each
organ's Dice reached the collapse threshold (0.01), and its Dice at the last round; a run is named by its
folder and the folder above it (a benchmark's method and cell).

    python benchmarks/class_curves.py runs/btcv/budget/n5-s1-1000 runs/btcv/budget/n5-s1-2000 [--every 200]
    python benchmarks/class_curves.py --arrivals docs/results/btcv/steps-4000/cells/*/cells/*/n5-s*
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vectorpose.training.convergence import COLLAPSE_DICE, validation_curves
from vectorpose.training.run import METRICS_FILE

MEAN = "mean"


def curve(run: Path) -> dict[int, dict[str, float]]:
    """``{step: {"mean" or organ: validation Dice}}`` of the validation rounds of ``run``."""
    mean, organs = validation_curves(run / METRICS_FILE)
    rounds: dict[int, dict[str, float]] = {step: {MEAN: dice} for step, dice in mean}
    for organ, points in organs.items():
        for step, dice in points:
            rounds.setdefault(step, {})[organ] = dice
    return rounds


def organ_names(curves: list[dict[int, dict[str, float]]]) -> list[str]:
    return list(dict.fromkeys(k for rounds in curves for r in rounds.values() for k in r if k != MEAN))


def arrival(rounds: dict[int, dict[str, float]], organ: str) -> int | None:
    """The first validation step at which ``organ`` reached ``COLLAPSE_DICE``, or None if it never did."""
    return next((s for s in sorted(rounds) if rounds[s].get(organ, 0.0) >= COLLAPSE_DICE), None)


def print_arrivals(runs: list[Path], curves: list[dict[int, dict[str, float]]]) -> None:
    organs = organ_names(curves)
    print("First validation step at which each organ's Dice reached "
          f"{COLLAPSE_DICE} (its Dice at the last round); never: not by the last round.\n")
    print("| run | last step | " + " | ".join(organs) + " |")
    print("|---|---:" + "|---:" * len(organs) + "|")
    for run, rounds in zip(runs, curves):
        last = max(rounds)
        cells = [f"{arrival(rounds, k) or 'never'} ({rounds[last][k]:.2f})" if k in rounds[last] else "n/a" for k in organs]
        print(f"| {run.parent.name}/{run.name} | {last} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="fine-tuning run folders")
    parser.add_argument("--every", type=int, default=None, help="show only the rounds at multiples of this step (and the last)")
    parser.add_argument("--arrivals", action="store_true", help="one row per run: when each organ's Dice left 0")
    args = parser.parse_args()
    curves = [curve(run) for run in args.runs]
    for run, rounds in zip(args.runs, curves):
        if not rounds:
            parser.error(f"{run}: no validation rounds in metrics.jsonl")
    if args.arrivals:
        print_arrivals(args.runs, curves)
        return
    for run, rounds in zip(args.runs, curves):
        last = max(rounds)
        steps = [s for s in sorted(rounds) if args.every is None or s % args.every == 0 or s == last]
        organs = organ_names([rounds])
        print(f"## {run}\n")
        print("| step | mean | " + " | ".join(organs) + " |")
        print("|---:" * (2 + len(organs)) + "|")
        for s in steps:
            r = rounds[s]
            print(f"| {s} | {r[MEAN]:.3f} | " + " | ".join(f"{r[k]:.3f}" if k in r else "n/a" for k in organs) + " |")
        print()


if __name__ == "__main__":
    main()
