"""Pretrain on a dataset through the CLI and document every loss term's curve.

Runs ``vectorpose pretrain DATA --out RUN --steps N`` (default backbone, seed 0), times it, then
writes ``docs/pretraining_losses.md`` (a table of each term's mean over windows of the run, the
command, the wall time and the machine, and the Vector Prediction terms of the final model on fresh
crops beside the best constant prediction) and ``docs/pretraining_losses.png`` (the curves).

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
HELD_OUT_SEED = 20231  # a crop stream the run never trained on


def windows(rows: list[dict], steps: int, n: int = 8) -> list[tuple[int, int, dict[str, float]]]:
    edges = np.linspace(0, steps, n + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = [r for r in rows if a < r["step"] <= b]
        out.append((int(a) + 1, int(b), {t: float(np.mean([r[t] for r in sel])) for t in TERMS if sel and t in sel[0]}))
    return out


def circle_distance(a, b):
    d = np.abs(a - b) % 2.0
    return np.minimum(d, 2.0 - d)


def vector_term_errors(pred: np.ndarray, target: np.ndarray, min_sin: float) -> dict[str, float]:
    """Mean L1 of r̂ and θ̂ and circular L1 of φ̂ (where defined) over ``(N, 9, 3)`` arrays."""
    defined = np.sin(np.pi * target[..., 1]) >= min_sin
    return {"vp_r": float(np.abs(pred[..., 0] - target[..., 0]).mean()),
            "vp_theta": float(np.abs(pred[..., 1] - target[..., 1]).mean()),
            "vp_phi": float(circle_distance(pred[..., 2], target[..., 2])[defined].mean())}


def best_constant(target: np.ndarray, min_sin: float) -> np.ndarray:
    """The ``(9, 3)`` constant with the least error on ``target`` itself: the median per slot for
    ``r̂`` and ``θ̂`` and, for ``φ̂``, the best of 401 points of the circle per slot."""
    constant = np.median(target, axis=0)
    defined = np.sin(np.pi * target[..., 1]) >= min_sin
    grid = np.linspace(-1.0, 1.0, 401)
    for slot in range(target.shape[1]):
        phis = target[defined[:, slot], slot, 2]
        if len(phis):
            constant[slot, 2] = grid[np.argmin([circle_distance(g, phis).mean() for g in grid])]
    return constant


def held_out_vector_errors(run: Path, data: str, cache: str | None, crops: int) -> dict[str, dict[str, float]]:
    """VP errors of the run's final model and of the best constant on ``crops`` fresh corrupted crops."""
    import torch

    from vectorpose.data.datasets import load_dataset
    from vectorpose.data.preprocessing import PreprocessingConfig, preprocess_dataset
    from vectorpose.losses.vector import AZIMUTH_MIN_SIN
    from vectorpose.pretext.sample import PretextConfig
    from vectorpose.training.pretext_data import PretextDataset
    from vectorpose.training.pretrain import load_pretext_network

    network, meta = load_pretext_network(run)
    pretext = PretextConfig.from_json(meta["pretext"])
    volumes, _ = preprocess_dataset(load_dataset(data), PreprocessingConfig.from_json(meta["preprocessing"]), cache)
    stream = PretextDataset(volumes, pretext, seed=HELD_OUT_SEED)
    preds, targets = [], []
    with torch.no_grad():
        for start in range(0, crops, 16):
            samples = [stream[i] for i in range(start, min(start + 16, crops))]
            preds.append(network(torch.stack([s["input"] for s in samples]))["vectors"].double().numpy())
            targets.append(torch.stack([s["vectors"] for s in samples]).double().numpy())
    pred, target = np.concatenate(preds), np.concatenate(targets)
    return {"model": vector_term_errors(pred, target, AZIMUTH_MIN_SIN),
            "constant": vector_term_errors(np.broadcast_to(best_constant(target, AZIMUTH_MIN_SIN), target.shape), target, AZIMUTH_MIN_SIN)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--out", default="runs/pretrain-losses")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--extra", default="", help="extra options passed to vectorpose pretrain")
    parser.add_argument("--held-out-crops", type=int, default=1024, help="fresh crops for the VP-against-constant table")
    parser.add_argument("--cache", default=None, help="preprocessing cache folder")
    parser.add_argument("--existing", action="store_true",
                        help="--out already holds a finished run made by this command (e.g. a benchmark's pretrain/vectorpose): report on it without training")
    args = parser.parse_args()

    cmd = ["vectorpose", "pretrain", args.data, "--out", args.out, "--steps", str(args.steps), "--seed", "0", "--quiet"]
    cmd += shlex.split(args.extra)
    if args.cache:
        cmd += ["--cache", args.cache]
    if Path(args.out).exists() and not args.existing:
        cmd.append("--overwrite")
    exe = Path(sys.executable).with_name("vectorpose")
    t0 = time.perf_counter()
    if not args.existing:
        subprocess.run([str(exe)] + cmd[1:], check=True)
    wall = time.perf_counter() - t0

    rows = [json.loads(l) for l in (Path(args.out) / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    if args.existing:
        wall = rows[-1]["elapsed_s"]
        made = json.loads((Path(args.out) / "config.json").read_text(encoding="utf-8"))["pretrain"]
        if (made["steps"], made["seed"]) != (args.steps, 0):
            sys.exit(f"{args.out}: made with steps {made['steps']} and seed {made['seed']}, not by this command")
    config = json.loads((Path(args.out) / "config.json").read_text(encoding="utf-8"))
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
    vp_section = ""
    if "vp" in rows[-1]:
        errors = held_out_vector_errors(Path(args.out), args.data, args.cache, args.held_out_crops)
        model, constant = errors["model"], errors["constant"]
        vp_rows = "\n".join(f"| `{t}` | {model[t]:.4f} | {constant[t]:.4f} | {100 * (model[t] / constant[t] - 1):+.0f} % |"
                            for t in ("vp_r", "vp_theta", "vp_phi"))
        vp_section = f"""
## Does Vector Prediction learn?

The final model on {args.held_out_crops} fresh crops (stream seed {HELD_OUT_SEED}, never trained on; corrupted,
flipped and rotated as in training), against the best constant prediction (the per-slot median for
`r̂` and `θ̂`, the best point of the circle per slot for `φ̂`, fitted on these same crops, which favours
the constant). `φ̂` counts where `sin θ ≥ 0.05`, as in the loss.

| term | final model | best constant | model against constant |
|---|---|---|---|
{vp_rows}
"""
    text = f"""# Pretraining loss curves

Produced by `python benchmarks/pretrain_losses.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`, which runs

```
{pretty}
```

- data: `{Path(args.data).name}`, {len(config['cases'])} scans, modality {config['modality']}
- method `{config['pretrain']['method']}`, patch {config['pretrain']['pretext']['patch_size']}³, batch {config['pretrain']['batch_size']},
  lr {config['pretrain']['lr']} (AdamW, cosine), seed {config['pretrain']['seed']}, backbone channels {config['pretrain']['backbone']['channels']}
- wall time: {wall / 60:.1f} min ({args.steps / wall:.2f} steps/s, {rows[-1]['crops_per_s']:.1f} crops/s in the last log window),
  {'training only (the run was made earlier, by the same settings, and reported with --existing)' if args.existing else 'preprocessing included'}
- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}, no GPU

Mean of each loss term over eight equal windows of the run (logged every {config['pretrain']['log_every']} steps):

{chr(10).join(table)}

![loss curves](pretraining_losses.png)
{vp_section}"""
    (docs / "pretraining_losses.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
