"""The benchmark's outputs: ``results.json``, ``report.md`` and two PNG plots.

- ``results.json``: the settings, versions, machine, pretraining runs and every cell (method,
  fraction, seed, labelled cases, per-class and mean Dice and HD95 on the test split and on
  ``--test-data``, wall times), plus the statistics below.
- ``report.md``: per method and fraction, mean ± std and the 95 % t-interval of the test Dice; the
  difference to ``scratch`` paired over seeds with its interval; every cell; the command.
- ``dice_vs_labels.png``: mean test Dice against labelled cases, one line per method, error bars =
  95 % interval. ``gain_over_scratch.png``: the paired gain per fraction and method.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ..inference.metrics import voxels_went_to
from ..training.convergence import COLLAPSE_DICE, TOLERANCE
from ..utils.files import atomic_write, write_json
from .stats import paired_difference, summarise_values

BASELINE = "scratch"
MAIN_METHOD = "vectorpose"
SCORES = {"test": "test split", "external": "external test data"}


def versions() -> dict:
    import monai
    import numpy
    import torch

    from .. import __version__

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {"vectorpose": __version__, "torch": torch.__version__, "monai": monai.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}"}


def _by_seed(rows: list[dict], score: str, method: str, fraction: float) -> dict[int, float]:
    return {r["seed"]: r[score]["mean_dice"] for r in rows if r["method"] == method and r["fraction"] == fraction and r.get(score)}


def statistics(rows: list[dict], score: str) -> dict:
    """Per ``"method@fraction"``: the summary of mean Dice over seeds (``summary``), its difference to
    scratch paired over seeds (``vs_scratch``) and VectorPOSE's paired difference to every other
    pretraining method (``vectorpose_vs``, keyed ``"other@fraction"``)."""
    out: dict = {"summary": {}, "vs_scratch": {}, "vectorpose_vs": {}}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    for m in methods:
        for f in fractions:
            by_seed = _by_seed(rows, score, m, f)
            if not by_seed:
                continue
            key = f"{m}@{f:g}"
            out["summary"][key] = summarise_values(list(by_seed.values())).to_json()
            if m != BASELINE and (diff := paired_difference(by_seed, _by_seed(rows, score, BASELINE, f))) is not None:
                out["vs_scratch"][key] = diff.to_json()
            if m not in (BASELINE, MAIN_METHOD) and (diff := paired_difference(_by_seed(rows, score, MAIN_METHOD, f), by_seed)) is not None:
                out["vectorpose_vs"][key] = diff.to_json()
    return out


def _fmt(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _interval(s: dict, sign: bool = False) -> str:
    return "n/a" if s["ci_low"] is None else f"[{_fmt(s['ci_low'], sign)}, {_fmt(s['ci_high'], sign)}]"


def _labelled(rows: list[dict], fraction: float) -> int:
    return next(r["labelled"] for r in rows if r["fraction"] == fraction)


def headline_table(rows: list[dict], stats: dict) -> str:
    """Methods × fractions, each entry mean ± std of the test Dice over seeds (the README's table)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    head = "| method | " + " | ".join(f"{_labelled(rows, f)} labelled ({f:.0%})" for f in fractions) + " |"
    lines = [head, "|---" * (len(fractions) + 1) + "|"]
    for m in methods:
        cells = []
        for f in fractions:
            s = stats["summary"].get(f"{m}@{f:g}")
            cells.append("n/a" if s is None else f"{s['mean']:.3f} ± {_fmt(s['std'])}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tables(rows: list[dict], stats: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    summary = ["| method | labelled | seeds | mean Dice ± std | 95 % CI |", "|---|---|---|---|---|"]
    gain = ["| method | labelled | mean difference | 95 % CI | seeds where higher |", "|---|---|---|---|---|"]
    versus = ["| other method | labelled | vectorpose − other | 95 % CI | seeds where vectorpose is higher |", "|---|---|---|---|---|"]
    for f in fractions:
        for m in methods:
            s = stats["summary"].get(f"{m}@{f:g}")
            if s is not None:
                summary.append(f"| {m} | {_labelled(rows, f)} ({f:.0%}) | {s['n']} | {s['mean']:.3f} ± {_fmt(s['std'])} | {_interval(s)} |")
            d = stats["vs_scratch"].get(f"{m}@{f:g}")
            if d is not None:
                gain.append(f"| {m} | {_labelled(rows, f)} ({f:.0%}) | {_fmt(d['mean'], True)} | {_interval(d, True)} | {d['positive']} of {d['n']} |")
            d = stats["vectorpose_vs"].get(f"{m}@{f:g}")
            if d is not None:
                versus.append(f"| {m} | {_labelled(rows, f)} ({f:.0%}) | {_fmt(d['mean'], True)} | {_interval(d, True)} | {d['positive']} of {d['n']} |")
    text = "\n".join(summary) + "\n\nPaired difference to `scratch` (same labelled cases and seed):\n\n" + "\n".join(gain)
    if len(versus) > 2:
        text += "\n\n`vectorpose` against the other pretraining methods, paired the same way:\n\n" + "\n".join(versus)
    return text


def _cells_table(rows: list[dict], score: str) -> str:
    names = list(next(r[score] for r in rows if r.get(score))["per_class"])
    lines = ["| method | fraction | labelled | seed | mean Dice | " + " | ".join(f"{n} Dice" for n in names)
             + " | mean HD95 (mm) | val Dice | model step | converged | fine-tune time |",
             "|---" * (10 + len(names)) + "|"]
    for r in rows:
        s = r.get(score)
        if not s:
            continue
        per = " | ".join(_fmt(s["per_class"][n]["dice"]) for n in names)
        time_min = f"{r['finetune_s'] / 60:.1f} min"
        hd95 = "n/a" if s["mean_hd95"] is None else f"{s['mean_hd95']:.2f}"
        lines.append(f"| {r['method']} | {r['fraction']:.3g} | {r['labelled']} | {r['seed']} | {_fmt(s['mean_dice'])} | {per} | "
                     f"{hd95} | {_fmt(r['val_dice'])} | {r.get('model_step', r['best_step'])} | {_converged(r)} | {time_min} |")
    return "\n".join(lines)


def _converged(row: dict) -> str:
    if row.get("converged") is None:
        return "n/a"
    return "yes" if row["converged"] else f"no (+{row['late_gain']:.3f})"


def convergence_warnings(rows: list[dict]) -> list[str]:
    """One line per (method, fraction) with cells whose validation Dice still rose in the last quarter, and
    one per (method, fraction) naming the classes whose own validation Dice still rose there."""
    out = []
    for setting, cells in _settings(rows):
        unconverged = [r for r in cells if r.get("converged") is False]
        if unconverged:
            out.append(f"{setting}: {len(unconverged)} of {len(cells)} cells had not converged (validation Dice rose by more than "
                       f"{TOLERANCE} in the last quarter of fine-tuning); the comparison measures speed there, not label efficiency")
        classes = _rising_seeds(cells)
        if classes:
            listed = "; ".join(f"{name} ({_seeds(seeds)})" for name, seeds in classes.items())
            out.append(f"{setting}: validation Dice of a class still rose by more than {TOLERANCE} in the last quarter: {listed}; "
                       "more steps may still raise these classes")
    return out


def _settings(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """``[(name, cells)]`` per (method, fraction) in first-seen order, named "<method> with <n> labelled (<f>%)"."""
    out = []
    for (m, f) in dict.fromkeys((r["method"], r["fraction"]) for r in rows):
        cells = [r for r in rows if r["method"] == m and r["fraction"] == f]
        out.append((f"{m} with {cells[0]['labelled']} labelled ({f:.0%})", cells))
    return out


def _rising_seeds(cells: list[dict]) -> dict[str, list[int]]:
    """``{class: [seeds whose cell's validation Dice of it still rose in the last quarter]}``, classes in first-seen order."""
    seeds: dict[str, list[int]] = {}
    for r in cells:
        for name in r.get("rising", []):
            seeds.setdefault(name, []).append(r["seed"])
    return {name: sorted(s) for name, s in seeds.items()}


def _seeds(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def collapse_warnings(rows: list[dict], score: str = "test") -> list[str]:
    """One line per (method, fraction, class) with a cell whose ``score`` Dice of that class is below
    ``COLLAPSE_DICE`` (the class was not learned), saying where that cell's voxels of the class went
    (when its evaluation has confusion counts), which seeds of the same setting did learn it and in
    which seeds that class was still rising at the end of fine-tuning."""
    out = []
    for setting, cells in _settings(rows):
        cells = [r for r in cells if r.get(score)]
        names = list(cells[0][score]["per_class"]) if cells else []
        rising = _rising_seeds(cells)
        for name in names:
            # a class no test case scores (absent from every label map and prediction) says nothing
            dice = {r["seed"]: r[score]["per_class"][name]["dice"] for r in cells if r[score]["per_class"][name]["dice"] is not None}
            lost = sorted(s for s, d in dice.items() if d < COLLAPSE_DICE)
            if not lost:
                continue
            went = {r["seed"]: voxels_went_to(r[score].get("confusion"), name) for r in cells if r["seed"] in lost}
            where = "".join(f"; seed {s}'s {name} voxels were labelled {went[s]}" for s in lost if went[s])
            learned = ", ".join(f"{s} ({d:.2f})" for s, d in sorted(dice.items()) if d >= COLLAPSE_DICE)
            out.append(f"{setting}: {name} not learned (Dice below {COLLAPSE_DICE}) with {_seeds(lost)}{where}"
                       + (f"; learned with seed {learned}" if learned else "; no seed learned it")
                       + (f"; still rising at the end with {_seeds(rising[name])}" if name in rising else ""))
    return out


def plot(rows: list[dict], stats: dict, out: Path, score: str = "test") -> list[Path]:
    """Write ``dice_vs_labels.png`` and (when scratch is present) ``gain_over_scratch.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows})
    labelled = [_labelled(rows, f) for f in fractions]
    suffix = "" if score == "test" else f"_{score}"
    colour = {m: f"C{i}" for i, m in enumerate(methods)}  # one colour per method in both plots
    written = []

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, m in enumerate(methods):
        pts = [(n, stats["summary"][f"{m}@{f:g}"]) for n, f in zip(labelled, fractions) if f"{m}@{f:g}" in stats["summary"]]
        x = np.array([n for n, _ in pts], dtype=float) * (1 + 0.03 * (i - (len(methods) - 1) / 2))  # separate the error bars
        y = np.array([s["mean"] for _, s in pts])
        err = np.array([[s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]] if s["ci_low"] is not None else [0, 0] for _, s in pts]).T
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=m, color=colour[m])
    ax.set_xscale("log")
    ax.set_xticks(labelled, [str(n) for n in labelled])
    ax.minorticks_off()
    ax.set_xlabel("labelled training cases")
    ax.set_ylabel(f"mean Dice ({SCORES[score]})")
    ax.set_title("Label efficiency (error bars: 95 % CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, out / f"dice_vs_labels{suffix}.png"))
    plt.close(fig)

    others = [m for m in methods if m != BASELINE and any(k.startswith(f"{m}@") for k in stats["vs_scratch"])]
    if others:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        width = 0.8 / len(others)
        for i, m in enumerate(others):
            xs, ys, errs = [], [], [[], []]
            for j, f in enumerate(fractions):
                d = stats["vs_scratch"].get(f"{m}@{f:g}")
                if d is None:
                    continue
                xs.append(j + (i - (len(others) - 1) / 2) * width)
                ys.append(d["mean"])
                errs[0].append(d["mean"] - d["ci_low"] if d["ci_low"] is not None else 0)
                errs[1].append(d["ci_high"] - d["mean"] if d["ci_high"] is not None else 0)
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label=m, color=colour[m])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(fractions)), [f"{n}\n({f:.0%})" for n, f in zip(labelled, fractions)])
        ax.set_xlabel("labelled training cases")
        ax.set_ylabel("Dice gain over scratch (paired)")
        ax.set_title("Gain over scratch (error bars: 95 % CI)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / f"gain_over_scratch{suffix}.png"))
        plt.close(fig)
    else:
        (out / f"gain_over_scratch{suffix}.png").unlink(missing_ok=True)  # stale from an earlier run
    return written


def _save(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def _warning_block(rows: list[dict]) -> str:
    text = ""
    for title, warnings in (("Convergence", convergence_warnings(rows)), ("Collapse", collapse_warnings(rows))):
        if warnings:
            text += f"\n## {title}\n\n" + "\n".join(f"- **Warning:** {w}" for w in warnings) + "\n"
    return text


def write_outputs(out: Path, config, rows: list[dict], pretraining: dict, data: Path, test_data: Path | None,
                  command: str | None, notes: str | None) -> dict:
    scores = ["test"] + (["external"] if test_data is not None else [])
    stats = {s: statistics(rows, s) for s in scores}
    info = versions()
    results = {
        "command": command, "data": str(data.resolve()), "test_data": str(test_data.resolve()) if test_data else None,
        "settings": {**config.recipe(), "methods": list(config.methods), "fractions": config.fractions and list(config.fractions),
                     "labelled": config.labelled and list(config.labelled), "seeds": config.seeds,
                     "device": config.device},
        "versions": info, "pretraining": pretraining, "cells": rows, "statistics": stats,
    }
    write_json(out / "results.json", results)
    for s in scores:
        plot(rows, stats[s], out, s)
    if test_data is None:  # an earlier run's plots of another external set would be stale
        for name in ("dice_vs_labels_external.png", "gain_over_scratch_external.png"):
            (out / name).unlink(missing_ok=True)

    recipe = rows[0]["finetune"]
    plan = rows[0].get("plan") or {}
    patch = "×".join(str(v) for v in plan.get("patch_size") or recipe["patch_size"] or ["(automatic)"])
    batch = plan.get("batch_size") or recipe["batch_size"]
    spacing = "each scan's own grid" if not plan.get("spacing") else "×".join(f"{v:.3g}" for v in plan["spacing"]) + " mm voxels"
    kept = "the best validation" if recipe.get("keep", "best") == "best" else "the final"
    optimiser = "SGD (Nesterov momentum 0.99)" if recipe.get("optimizer", "adamw") == "sgd" else "AdamW"
    precision = " (forward pass under bfloat16 autocast)" if recipe.get("precision", "fp32") == "bf16" else ""
    split = (f"the fixed test split `{config.split}` and a validation split drawn by" if config.split else "a fixed test and validation split of")
    pre_rows = []
    for m, p in pretraining.items():
        run = f"supplied: `{p['run']}`" if p["supplied"] else "trained here"
        wall = "n/a" if p["wall_s"] is None else f"{p['wall_s'] / 60:.1f} min"
        losses = ", ".join(f"{k} {v:.4f}" for k, v in p["final_losses"].items()) or "n/a"
        pre_rows.append(f"| {m} | {p['steps']} | {run} | {wall} | {losses} |")
    pre_lines = "\n".join(pre_rows)
    steps_seen = {p["steps"] for p in pretraining.values()}
    unequal = "\n\n**Warning:** the pretraining runs differ in length; the comparison is not budget-matched." if len(steps_seen) > 1 else ""
    sections = []
    for s in scores:
        n_cases = next(r[s]["num_cases"] for r in rows if r.get(s))
        title = "Test split" if s == "test" else f"External test data (`{test_data}`)"
        sections.append(f"## {title}: {n_cases} cases\n\n{headline_table(rows, stats[s])}\n\n{_tables(rows, stats[s])}\n\n"
                        f"![Dice against labelled cases](dice_vs_labels{'' if s == 'test' else '_' + s}.png)"
                        + (f" ![Gain over scratch](gain_over_scratch{'' if s == 'test' else '_' + s}.png)" if stats[s]["vs_scratch"] else ""))
    text = f"""# Label-efficiency benchmark

```
{command or '(run from the Python API)'}
```

Data: `{data}`{f"; external test data: `{test_data}`" if test_data else ""}.
Machine and versions: {info['machine']}; vectorpose {info['vectorpose']}, torch {info['torch']}, MONAI {info['monai']},
NumPy {info['numpy']}, Python {info['python']}.

Each (method, amount of labels, seed) cell fine-tunes with the same recipe: {recipe['steps']} steps, batch {batch} of {patch} patches at {spacing},
{optimiser} lr {recipe['lr']} ({recipe.get('schedule', 'cosine')}), Dice + cross-entropy{precision}, `{recipe['transfer']}` transfer of pretrained weights, validation every
{recipe['val_every']} steps, {kept} model tested; {split} split seed {recipe['split_seed']}; seed `s` draws the
labelled cases, nested across amounts, and seeds the new weights and the patch stream, the same for
every method). Dice is the mean over foreground classes of each class's mean over the test cases that
have it in the label map or the prediction (nnU-Net's convention); tables give mean ± sample standard
deviation over seeds, and intervals are Student-t 95 % intervals of the mean over seeds.

| pretraining | steps | run | wall time | final losses |
|---|---|---|---|---|
{pre_lines or '| (none) | | | | |'}{unequal}

{chr(10).join(sections)}
{_warning_block(rows)}
## Every cell ({SCORES['test']})

{_cells_table(rows, 'test')}
"""
    if notes:
        text += f"\n## Notes\n\n{notes.strip()}\n"
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return results
