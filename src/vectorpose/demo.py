"""The main job end to end on the built-in synthetic data, small enough for a CPU in a few minutes.

Writes the synthetic dataset, pretrains with VectorPOSE, fine-tunes on a few labelled cases from
scratch and from the pretrained model (same split, seed and recipe), evaluates both on the
recorded test split, and prints both Dice scores side by side with where everything was written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .data.synthetic import make_synthetic_dataset
from .errors import VectorPoseError
from .inference.evaluate import evaluate
from .training.finetune import FinetuneConfig, finetune
from .training.pretrain import PretrainConfig, pretrain


def run_demo(out: str | Path, pretrain_steps: int = 200, finetune_steps: int = 150, labelled: int = 3, overwrite: bool = False,
             progress: bool = True) -> dict[str, dict]:
    """Run the demo into ``out``; returns the evaluation results keyed by initialisation."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise VectorPoseError(f"{out}: already holds results; pass --overwrite to replace them")
        shutil.rmtree(out)
    data = make_synthetic_dataset(out / "data", num_cases=20, seed=0)
    cache = out / "cache"
    pre = pretrain(data, out / "pretrain", PretrainConfig(steps=pretrain_steps), cache_dir=cache, progress=progress)
    results = {}
    for name, init in (("scratch", None), ("vectorpose", pre.run_dir)):
        config = FinetuneConfig(steps=finetune_steps, labelled=labelled, val_every=50)
        run = finetune(data, out / f"finetune-{name}", config, init=init, cache_dir=cache, progress=progress)
        results[name] = evaluate(run.run_dir, data, run.run_dir / "metrics.json", cache_dir=cache)
    width = max(len(n) for n in results)
    print(f"\nfew-label fine-tuning on synthetic data ({labelled} labelled cases, {finetune_steps} steps, "
          f"{results['scratch']['num_cases']} test cases):")
    print(f"  {'initialisation':<{max(width, 14)}}  mean Dice  mean HD95 (mm)")
    for name, r in results.items():
        hd = "n/a" if r["mean_hd95"] is None else f"{r['mean_hd95']:.2f}"
        print(f"  {name:<{max(width, 14)}}  {r['mean_dice']:9.3f}  {hd:>14}")
    print(f"pretrained model: {pre.model_path}")
    for name in results:
        print(f"{name} model: {out / f'finetune-{name}' / 'model.safetensors'}; report: {out / f'finetune-{name}' / 'metrics.json'}")
    return results
