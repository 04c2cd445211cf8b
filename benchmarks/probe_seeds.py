"""Probe results of several seeds (each ``vectorpose probe --seed S``: another case split, other crops and
another random baseline) as one markdown table: per encoder, the mean ± sample std over seeds of each
probe score, and the paired difference of the run (the first encoder) to every other encoder, seed by
seed, with its Student-t 95 % interval. One split of few cases is noisy; the spread over splits is
what tells a difference from chance. Used by ``benchmarks/probe_study.sh``.

    python benchmarks/probe_seeds.py docs/results/probe/btcv.json docs/results/probe/btcv-seed1.json ... > docs/results/probe/btcv-seeds.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.benchmark.stats import paired_difference, summarise_values

SCORES = {  # column: how to read it from an encoder's entry
    "position R²": lambda e: e["position"]["r2"],
    "longitudinal position R² (z)": lambda e: e["position"]["r2_per_target"][2],
    "scale R²": lambda e: e["scale"]["r2"],
    "orientation acc. (48-way)": lambda e: e["orientation"]["accuracy"],
    "up acc. (6-way)": lambda e: e["up"]["accuracy"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="probe JSON files, one per seed, of the same encoders")
    args = parser.parse_args()
    probes = [json.loads(p.read_text(encoding="utf-8")) for p in args.results]
    seeds = [p["settings"]["seed"] for p in probes]
    if len(set(seeds)) != len(seeds):
        parser.error(f"each file must come from another seed, got seeds {seeds}")
    names = [e["name"] for e in probes[0]["encoders"]]
    if any([e["name"] for e in p["encoders"]] != names for p in probes):
        parser.error("every file must probe the same encoders in the same order")
    # {encoder: {score: {seed: value}}}
    values = {n: {s: {} for s in SCORES} for n in names}
    for probe, seed in zip(probes, seeds):
        for e in probe["encoders"]:
            for score, read in SCORES.items():
                values[e["name"]][score][seed] = read(e)

    first = probes[0]
    print(f"# Spatial-awareness probe over {len(seeds)} seeds\n")
    print(f"`vectorpose probe` on `{first['data']}` with seeds {', '.join(map(str, seeds))} (settings otherwise "
          f"{json.dumps({k: v for k, v in first['settings'].items() if k != 'seed'})}); each seed draws another split of the "
          f"cases into fit and evaluation halves ({len(first['split']['fit'])} and {len(first['split']['evaluation'])} cases), "
          "other crops and another random baseline. Mean ± sample std over seeds; chance is R² 0, orientation 1/48 = 0.021, "
          "up 1/6 = 0.167.\n")
    print("| encoder | " + " | ".join(SCORES) + " |")
    print("|---" + "|---:" * len(SCORES) + "|")
    for n in names:
        cells = []
        for score in SCORES:
            s = summarise_values(list(values[n][score].values()))
            cells.append(f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.std is not None else ""))
        print(f"| {n} | " + " | ".join(cells) + " |")
    run = names[0]
    print(f"\nPaired difference `{run}` − other encoder, seed by seed (95 % interval; seeds where `{run}` is higher):\n")
    print("| against | " + " | ".join(SCORES) + " |")
    print("|---" + "|---:" * len(SCORES) + "|")
    for other in names[1:]:
        cells = []
        for score in SCORES:
            d = paired_difference(values[run][score], values[other][score])
            interval = f" [{d.summary.ci_low:+.3f}, {d.summary.ci_high:+.3f}]" if d.summary.ci_low is not None else ""
            cells.append(f"{d.summary.mean:+.3f}{interval}, {d.positive} of {d.summary.n}")
        print(f"| {other} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
