"""Pretrain on a dataset through the CLI and document every loss term's curve.

Runs ``vectorpose pretrain DATA --out RUN --steps N`` (default backbone, seed 0), times it, then
writes ``docs/pretraining_losses.md`` (a table of each term's mean over windows of the run, the
command, the wall time and the machine) and ``docs/pretraining_losses.png`` (the curves).

    python benchmarks/pretrain_losses.py ../shared/data/Task04_Hippocampus --out runs/h --steps 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TERMS = ("total", "vp", "rec", "boundary", "vp_r", "vp_theta", "vp_phi")


def windows(rows: list[dict], steps: int, n: int = 8) -> list[tuple[int, int, dict[str, float]]]:
    edges = np.linspace(0, steps, n + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = [r for r in rows if a < r["step"] <= b]
        out.append((int(a) + 1, int(b), {t: float(np.mean([r[t] for r in sel])) for t in TERMS if sel and t in sel[0]}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--out", default="runs/pretrain-losses")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--extra", default="", help="extra options passed to vectorpose pretrain")
    args = parser.parse_args()

    cmd = ["vectorpose", "pretrain", args.data, "--out", args.out, "--steps", str(args.steps), "--seed", "0", "--quiet"]
    cmd += shlex.split(args.extra)
    if Path(args.out).exists():
        cmd.append("--overwrite")
    exe = Path(sys.executable).with_name("vectorpose")
    t0 = time.perf_counter()
    subprocess.run([str(exe)] + cmd[1:], check=True)
    wall = time.perf_counter() - t0

    rows = [json.loads(l) for l in (Path(args.out) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    config = json.loads((Path(args.out) / "config.json").read_text())
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in rows]
    for term in ("total", "vp", "rec", "boundary"):
        axes[0].plot(steps, [r[term] for r in rows], label=term, lw=1)
    for term in ("vp_r", "vp_theta", "vp_phi"):
        axes[1].plot(steps, [r[term] for r in rows], label=term, lw=1)
    for ax, title in zip(axes, ("loss terms", "vector loss components")):
        ax.set_xlabel("step")
        ax.set_ylabel(f"mean L1 over {config['pretrain']['log_every']} steps")
        ax.set_title(title)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"vectorpose pretrain on {Path(args.data).name}: {args.steps} steps")
    fig.tight_layout()
    fig.savefig(docs / "pretraining_losses.png", dpi=110)

    table = ["| steps | " + " | ".join(TERMS) + " |", "|---|" + "---|" * len(TERMS)]
    for a, b, means in windows(rows, args.steps):
        table.append(f"| {a}–{b} | " + " | ".join(f"{means[t]:.4f}" for t in TERMS) + " |")
    first, last = windows(rows, args.steps)[0][2], windows(rows, args.steps)[-1][2]
    change = " | ".join(f"{100 * (last[t] / first[t] - 1):+.0f} %" for t in TERMS)
    table.append(f"| change | {change} |")
    pretty = " ".join(shlex.quote(c) for c in cmd if c not in ("--overwrite", "--quiet"))
    text = f"""# Pretraining loss curves

Produced by `python benchmarks/pretrain_losses.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`, which runs

```
{pretty}
```

- data: `{Path(args.data).name}`, {len(config['cases'])} scans, modality {config['modality']}
- method `{config['pretrain']['method']}`, patch {config['pretrain']['pretext']['patch_size']}³, batch {config['pretrain']['batch_size']},
  lr {config['pretrain']['lr']} (AdamW, cosine), seed {config['pretrain']['seed']}, backbone channels {config['pretrain']['backbone']['channels']}
- wall time: {wall / 60:.1f} min ({args.steps / wall:.2f} steps/s, {rows[-1]['crops_per_s']:.1f} crops/s in the last log window),
  preprocessing included
- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}, no GPU

Mean of each loss term over eight equal windows of the run (logged every {config['pretrain']['log_every']} steps):

{chr(10).join(table)}

![loss curves](pretraining_losses.png)
"""
    (docs / "pretraining_losses.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
