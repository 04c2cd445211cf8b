"""Per run and organ, the test Dice, and which organs were not learned (Dice below 0.01), for groups of
fine-tuning runs given as ``LABEL=FOLDER`` or ``LABEL=FOLDER@PREFIX`` (the runs of FOLDER whose names
start with PREFIX, each scored into ``<run>-test.json``); markdown on stdout, under ``--title``, with
``--about`` (how the runs were made) as its first paragraph. With two groups, also the paired
difference of their mean Dice, matched by fine-tuning seed. Used by ``benchmarks/chaos_recipe.sh``
and ``benchmarks/btcv_study.sh``.

    python benchmarks/recipe_runs_report.py --title "..." --about "..." "before=runs/chaos-before" "after=runs/chaos-after@s"
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from vectorpose.benchmark.runner import sittings_s
from vectorpose.benchmark.stats import paired_difference

NOT_LEARNED = 0.01


def runs(folder: Path, prefix: str) -> list[tuple[str, dict, float | None, dict]]:
    """``(name, test metrics, fine-tuning seconds over all sittings, config)`` of every scored run in ``folder`` whose name
    starts with ``prefix``, in name order."""
    out = []
    for metrics in sorted(folder.glob(f"{prefix}*-test.json")):
        name = metrics.name[: -len("-test.json")]
        seconds = sum(sittings_s(folder / name / "metrics.jsonl")) or None
        config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        out.append((name, json.loads(metrics.read_text(encoding="utf-8")), seconds, config))
    return out


def _fmt(d: float | None) -> str:
    return "n/a" if d is None or np.isnan(d) else f"{d:.3f}"


def _column_means(values: np.ndarray) -> list[float | None]:
    """Each column's mean over its scored runs (NaN marks an unscored organ)."""
    return [float(c[~np.isnan(c)].mean()) if (~np.isnan(c)).any() else None for c in values.T]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--about", required=True, help="How the runs were made (a markdown paragraph).")
    parser.add_argument("groups", nargs="+", help="LABEL=FOLDER or LABEL=FOLDER@PREFIX")
    args = parser.parse_args()
    groups = {}
    for arg in args.groups:
        label, _, where = arg.partition("=")
        folder, _, prefix = where.partition("@")
        groups[label] = runs(Path(folder), prefix)
    organs = list(next(m for g in groups.values() for _, m, _, _ in g)["per_class"])
    print(f"# {args.title}\n")
    print(f"{args.about} Machine: {platform.machine()}, 2 CPU cores, no GPU. An organ with test Dice below {NOT_LEARNED} counts "
          "as not learned.\n")
    print("| recipe | run | spacing (mm) | patch | steps | mean Dice | " + " | ".join(organs) + " | not learned | fine-tune time |")
    print("|---" * (8 + len(organs)) + "|")
    summary = []
    for label, group in groups.items():
        for name, m, seconds, config in group:
            per = [m["per_class"][o]["dice"] for o in organs]  # None: no test scan has the organ, none predicted it
            lost = [o for o, d in zip(organs, per) if d is not None and d < NOT_LEARNED]
            minutes = f"{seconds / 60:.1f} min" if seconds else "n/a"
            spacing = config["preprocessing"].get("spacing")
            grid = "native" if spacing is None else " × ".join(f"{v:.3g}" for v in spacing)
            patch = "×".join(str(p) for p in config["patch_size"])
            print(f"| {label} | {name} | {grid} | {patch} | {config['finetune']['steps']} | {m['mean_dice']:.3f} | "
                  + " | ".join(_fmt(d) for d in per) + f" | {', '.join(lost) or 'none'} | {minutes} |")
        if group:
            means = np.array([[m["per_class"][o]["dice"] for o in organs] for _, m, _, _ in group], dtype=float)
            total = np.array([m["mean_dice"] for _, m, _, _ in group])
            std = f" ± {total.std(ddof=1):.3f}" if len(total) > 1 else ""
            summary.append(f"| {label} | {len(group)} | {total.mean():.3f}{std} | " + " | ".join(_fmt(v) for v in _column_means(means))
                           + f" | {int((means < NOT_LEARNED).sum())} |")
    print("\nMeans over seeds:\n")
    print("| recipe | runs | mean Dice (± std over seeds) | " + " | ".join(organs) + " | organs not learned (all runs) |")
    print("|---" * (4 + len(organs)) + "|")
    print("\n".join(summary))
    if len(groups) == 2:
        (first, a), (second, b) = groups.items()
        by_seed = lambda group: {config["finetune"]["seed"]: m["mean_dice"] for _, m, _, config in group}  # noqa: E731
        d = paired_difference(by_seed(b), by_seed(a))
        if d is not None:
            interval = f", 95 % interval [{d.summary.ci_low:+.3f}, {d.summary.ci_high:+.3f}]" if d.summary.ci_low is not None else ""
            print(f"\nPaired by seed, `{second}` − `{first}`: {d.summary.mean:+.3f} mean Dice{interval} (Student t over "
                  f"seeds {', '.join(map(str, d.seeds))}); `{second}` higher on {d.positive} of {d.summary.n}.")


if __name__ == "__main__":
    main()
