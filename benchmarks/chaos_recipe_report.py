"""The table of ``benchmarks/chaos_recipe.sh``: per run and organ, the test Dice, and which organs were
not learned (Dice below 0.01), for groups of runs given as ``LABEL=FOLDER`` or ``LABEL=FOLDER@PREFIX``
(the runs of FOLDER whose names start with PREFIX); markdown on stdout.

    python benchmarks/chaos_recipe_report.py "before=runs/chaos-before" "after=runs/chaos-after@s" > recipe.md
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

NOT_LEARNED = 0.01


def runs(folder: Path, prefix: str) -> list[tuple[str, dict, float | None, dict]]:
    """``(name, test metrics, fine-tuning seconds, config)`` of every scored run in ``folder`` whose name
    starts with ``prefix``, in name order."""
    out = []
    for metrics in sorted(folder.glob(f"{prefix}*-test.json")):
        name = metrics.name[: -len("-test.json")]
        rows = [json.loads(line) for line in (folder / name / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        seconds = max((r["elapsed_s"] for r in rows if "elapsed_s" in r), default=None)
        config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        out.append((name, json.loads(metrics.read_text(encoding="utf-8")), seconds, config))
    return out


def main() -> None:
    groups = {}
    for arg in sys.argv[1:]:
        label, _, where = arg.partition("=")
        folder, _, prefix = where.partition("@")
        groups[label] = runs(Path(folder), prefix)
    organs = list(next(m for g in groups.values() for _, m, _, _ in g)["per_class"])
    print("# CHAOS T2, two labelled scans: the fine-tuning recipe before and after\n")
    print("Made by `bash benchmarks/chaos_recipe.sh` (the commands are in it) on "
          f"{platform.machine()}, 2 CPU cores, no GPU, one torch thread per run, beside other jobs (times are upper bounds). "
          "CHAOS MR T2-SPIR as in `../shared/data/CHAOS_T2` (19 scans, 1.25 × 1.25 × 7.7 mm); split seed 0: 4 test scans, "
          "2 validation scans, 2 labelled training scans drawn by each seed from the other 13. Test Dice per organ on the 4 test "
          f"scans (`vectorpose evaluate`, native grid). An organ with test Dice below {NOT_LEARNED} counts as not learned.\n")
    print("| recipe | run | spacing (mm) | patch | steps | mean Dice | " + " | ".join(organs) + " | not learned | fine-tune time |")
    print("|---" * (8 + len(organs)) + "|")
    summary = []
    for label, group in groups.items():
        for name, m, seconds, config in group:
            per = [m["per_class"][o]["dice"] for o in organs]
            lost = [o for o, d in zip(organs, per) if d < NOT_LEARNED]
            minutes = f"{seconds / 60:.1f} min" if seconds else "n/a"
            spacing = config["preprocessing"].get("spacing")
            grid = "native" if spacing is None else " × ".join(f"{v:.3g}" for v in spacing)
            patch = "×".join(str(p) for p in config["patch_size"])
            print(f"| {label} | {name} | {grid} | {patch} | {config['finetune']['steps']} | {m['mean_dice']:.3f} | "
                  + " | ".join(f"{d:.3f}" for d in per) + f" | {', '.join(lost) or 'none'} | {minutes} |")
        if group:
            means = np.array([[m["per_class"][o]["dice"] for o in organs] for _, m, _, _ in group])
            total = np.array([m["mean_dice"] for _, m, _, _ in group])
            std = f" ± {total.std(ddof=1):.3f}" if len(total) > 1 else ""
            summary.append(f"| {label} | {len(group)} | {total.mean():.3f}{std} | " + " | ".join(f"{v:.3f}" for v in means.mean(0))
                           + f" | {int((means < NOT_LEARNED).sum())} |")
    print("\nMeans over seeds:\n")
    print("| recipe | runs | mean Dice (± std over seeds) | " + " | ".join(organs) + " | organs not learned (all runs) |")
    print("|---" * (4 + len(organs)) + "|")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
