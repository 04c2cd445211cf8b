"""Paired test-Dice differences between methods of different benchmark reports of one study.

    python benchmarks/paired_across_reports.py docs/results/hippocampus/converged/ablation-5pct/results.json \
        docs/results/hippocampus/converged/results.json --method bfr --others genesis,mae --fraction 0.05

A study's parts are separate reports (the main part, the ablation), each with the differences among its
own methods. Cells of the same recipe, amount of labels and seed share their labelled cases and patch
stream across parts, so they pair the same way: this prints `method − other` per other method, with the
Student-t 95 % interval over the shared seeds and how many seeds were higher (the report's convention).
It refuses to pair cells whose fine-tuning recipes differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.benchmark.runner import finetuning_recipe
from vectorpose.benchmark.stats import paired_difference


def amount_of(cell: dict) -> float | int:
    return cell["labelled"] if cell.get("fraction") is None else cell["fraction"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of the study's reports")
    parser.add_argument("--method", required=True)
    parser.add_argument("--others", required=True, help="comma-separated methods to compare with")
    parser.add_argument("--fraction", type=float, default=None, help="the labelled fraction (default: every amount)")
    args = parser.parse_args()

    scores: dict[tuple[str, float | int], dict[int, float]] = {}
    reference = None
    for path in args.results:
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            # the benchmark's own notion of a recipe, and the split, which it leaves to each cell
            recipe = (finetuning_recipe(cell["finetune"]), cell["finetune"].get("split"))
            what = f"{path}: cell {cell['method']} {amount_of(cell)} seed {cell['seed']}"
            if recipe[0] is None:
                raise SystemExit(f"{what}: its fine-tuning settings do not read under today's code; it cannot be paired")
            reference = reference or recipe
            if recipe != reference:
                raise SystemExit(f"{what} has another fine-tuning recipe than the first cell; their differences would not be paired")
            scores.setdefault((cell["method"], amount_of(cell)), {})[cell["seed"]] = cell["test"]["mean_dice"]

    amounts = sorted({a for _, a in scores if args.fraction is None or a == args.fraction})
    print(f"| other method | amount | {args.method} − other | 95 % CI | seeds where {args.method} is higher |")
    print("|---|---|---|---|---|")
    for amount in amounts:
        for other in args.others.split(","):
            pair = paired_difference(scores.get((args.method, amount), {}), scores.get((other, amount), {}))
            if pair is None:
                raise SystemExit(f"no seed has both {args.method} and {other} at {amount}")
            s = pair.summary
            print(f"| {other} | {amount:g} | {s.mean:+.3f} | [{s.ci_low:+.3f}, {s.ci_high:+.3f}] | {pair.positive} of {len(pair.seeds)} |")


if __name__ == "__main__":
    main()
