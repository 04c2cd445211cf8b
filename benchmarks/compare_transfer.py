"""Compare two benchmark runs that differ only in ``--transfer`` on the validation split.

    python benchmarks/compare_transfer.py runs/bench-h runs/bench-h-all --method vectorpose

Prints a markdown table: per fraction and seed, the best validation Dice (the number the choice is
made on) of each run, and their paired difference with its 95 % t-interval. Test Dice is printed
beside it for the record only; the choice must not be made on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.benchmark.stats import paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="benchmark folder (results.json inside)")
    parser.add_argument("second", type=Path)
    parser.add_argument("--method", default="vectorpose")
    args = parser.parse_args()
    runs = [json.loads((p / "results.json").read_text(encoding="utf-8")) for p in (args.first, args.second)]
    names = [r["settings"]["transfer"] for r in runs]
    cells = [{(c["fraction"], c["seed"]): c for c in r["cells"] if c["method"] == args.method} for r in runs]
    shared = sorted(set(cells[0]) & set(cells[1]))
    print(f"# `{args.method}`: `--transfer {names[0]}` against `--transfer {names[1]}`\n")
    print(f"`python benchmarks/compare_transfer.py {args.first} {args.second} --method {args.method}`. The choice is made on the")
    print("validation split; test Dice is shown for the record only.\n")
    print(f"| labelled | seed | val Dice, {names[0]} | val Dice, {names[1]} | test Dice, {names[0]} | test Dice, {names[1]} |")
    print("|---|---|---|---|---|---|")
    for key in shared:
        a, b = cells[0][key], cells[1][key]
        print(f"| {a['labelled']} ({key[0]:.0%}) | {key[1]} | {a['val_dice']:.3f} | {b['val_dice']:.3f} | "
              f"{a['test']['mean_dice']:.3f} | {b['test']['mean_dice']:.3f} |")
    print()
    print(f"| labelled | val Dice, {names[1]} − {names[0]} (mean) | 95 % CI | seeds where {names[1]} is higher |")
    print("|---|---|---|---|")
    for fraction in sorted({f for f, _ in shared}):
        seeds = [s for f, s in shared if f == fraction]
        d = paired_difference({s: cells[1][(fraction, s)]["val_dice"] for s in seeds}, {s: cells[0][(fraction, s)]["val_dice"] for s in seeds})
        ci = "n/a" if d.summary.ci_low is None else f"[{d.summary.ci_low:+.3f}, {d.summary.ci_high:+.3f}]"
        print(f"| {cells[0][(fraction, seeds[0])]['labelled']} ({fraction:.0%}) | {d.summary.mean:+.3f} | {ci} | {d.positive} of {d.summary.n} |")


if __name__ == "__main__":
    main()
