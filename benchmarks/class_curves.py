"""Per-organ validation Dice at every validation round of fine-tuning runs, as a markdown table: when
each organ arrives, and whether it was still arriving when the step budget ran out (validation split
only; no test numbers). With --arrivals, one row per run instead: the first validation round at which each
organ's Dice reached the collapse threshold (0.01), and its Dice at the last round.

    python benchmarks/class_curves.py runs/btcv/budget/n5-s1-1000 runs/btcv/budget/n5-s1-2000 [--every 200]
    python benchmarks/class_curves.py --arrivals docs/results/btcv/steps-4000/cells/*/cells/*/n5-s*
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.training.convergence import CLASS_PREFIX, COLLAPSE_DICE, MEAN_KEY


def curve(run: Path) -> dict[int, dict[str, float]]:
    """``{step: {column: value}}`` of the validation rounds in ``run/metrics.jsonl``."""
    rows = (json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["step"]: {k: v for k, v in r.items() if k == MEAN_KEY or k.startswith(CLASS_PREFIX)} for r in rows if MEAN_KEY in r}


def arrival(rounds: dict[int, dict[str, float]], column: str) -> int | None:
    """The first validation step at which ``column`` reached ``COLLAPSE_DICE``, or None if it never did."""
    return next((s for s in sorted(rounds) if rounds[s].get(column, 0.0) >= COLLAPSE_DICE), None)


def print_arrivals(runs: list[Path], curves: list[dict[int, dict[str, float]]]) -> None:
    organs = list(dict.fromkeys(k for rounds in curves for r in rounds.values() for k in r if k.startswith(CLASS_PREFIX)))
    print("First validation step at which each organ's Dice reached "
          f"{COLLAPSE_DICE} (its Dice at the last round); never: not by the last round.\n")
    print("| run | last step | " + " | ".join(k[len(CLASS_PREFIX):] for k in organs) + " |")
    print("|---|---:" + "|---:" * len(organs) + "|")
    for run, rounds in zip(runs, curves):
        last = max(rounds)
        cells = [f"{arrival(rounds, k) or 'never'} ({rounds[last][k]:.2f})" if k in rounds[last] else "n/a" for k in organs]
        print(f"| {run} | {last} | " + " | ".join(cells) + " |")


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
        organs = list(dict.fromkeys(k for r in rounds.values() for k in r if k.startswith(CLASS_PREFIX)))
        print(f"## {run}\n")
        print("| step | mean | " + " | ".join(k[len(CLASS_PREFIX):] for k in organs) + " |")
        print("|---:" * (2 + len(organs)) + "|")
        for s in steps:
            r = rounds[s]
            print(f"| {s} | {r[MEAN_KEY]:.3f} | " + " | ".join(f"{r[k]:.3f}" if k in r else "n/a" for k in organs) + " |")
        print()


if __name__ == "__main__":
    main()
