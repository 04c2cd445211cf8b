"""Validation Dice at every validation round of every cell of a benchmark folder, as a markdown table.

    python benchmarks/validation_curves.py runs/bench-h [--fractions 0.05,0.1]

Shows whether a cell's fine-tuning had converged when its step budget ran out (validation split
only; no test numbers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.benchmark.runner import cell_dir
from vectorpose.training.convergence import validation_curves
from vectorpose.training.run import METRICS_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", type=Path)
    parser.add_argument("--fractions", default=None, help="comma-separated fractions to show (default: all)")
    args = parser.parse_args()
    results = json.loads((args.benchmark / "results.json").read_text(encoding="utf-8"))
    wanted = None if args.fractions is None else {float(f) for f in args.fractions.split(",")}
    rows, steps = [], set()
    for cell in results["cells"]:
        if wanted is not None and cell["fraction"] not in wanted:
            continue
        amount = cell["finetune"].get("labelled") or cell["fraction"]  # a benchmark of labelled counts names its cells by count
        curve = dict(validation_curves(cell_dir(args.benchmark, cell["method"], amount, cell["seed"]) / METRICS_FILE)[0])
        steps |= set(curve)
        rows.append((cell, curve))
    order = sorted(steps)
    shown = "all fractions" if args.fractions is None else f"fractions {args.fractions}"
    print(f"# Validation Dice per validation round ({shown})\n")
    print(f"`python benchmarks/validation_curves.py {args.benchmark}`; {results['cells'][0]['finetune']['steps']} fine-tuning steps "
          "per cell, cosine learning-rate decay to zero at the last step.\n")
    print("| method | labelled | seed | " + " | ".join(f"step {s}" for s in order) + " |")
    print("|---" * (3 + len(order)) + "|")
    for cell, curve in rows:
        values = " | ".join(f"{curve[s]:.3f}" if s in curve else "" for s in order)
        print(f"| {cell['method']} | {cell['labelled']} ({cell['fraction']:.0%}) | {cell['seed']} | {values} |")


if __name__ == "__main__":
    main()
