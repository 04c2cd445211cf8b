"""Per-organ validation Dice at every validation round of fine-tuning runs, as a markdown table: when
each organ arrives, and whether it was still arriving when the step budget ran out (validation split
only; no test numbers).

    python benchmarks/class_curves.py runs/btcv/budget/n5-s1-1000 runs/btcv/budget/n5-s1-2000 [--every 200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.training.convergence import CLASS_PREFIX, MEAN_KEY


def curve(run: Path) -> dict[int, dict[str, float]]:
    """``{step: {column: value}}`` of the validation rounds in ``run/metrics.jsonl``."""
    rows = (json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["step"]: {k: v for k, v in r.items() if k == MEAN_KEY or k.startswith(CLASS_PREFIX)} for r in rows if MEAN_KEY in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="fine-tuning run folders")
    parser.add_argument("--every", type=int, default=None, help="show only the rounds at multiples of this step (and the last)")
    args = parser.parse_args()
    for run in args.runs:
        rounds = curve(run)
        if not rounds:
            parser.error(f"{run}: no validation rounds in metrics.jsonl")
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
