"""Finished cells' summaries from a benchmark's ``results.json``, in the layout that the study scripts
keep (``<method>/cells/<method>/<cell>/cell.json``, see ``keep_cells`` in ``lanes.sh``): for a study
that finished before the scripts kept its cells, so that a fresh machine can join its cells into a
report beside new ones instead of training them again. ``results.json`` holds each cell's summary
exactly as its ``cell.json`` was written; curves and per-case scores are not in it, so only
``cell.json`` is written. A cell already present is left as it is.

    python benchmarks/cells_from_results.py docs/results/btcv/steps-2000/results.json docs/results/btcv/steps-2000/cells
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vectorpose.benchmark.runner import CELL_FILE, cell_dir
from vectorpose.utils.files import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("keep", type=Path)
    args = parser.parse_args()
    for cell in json.loads(args.results.read_text(encoding="utf-8"))["cells"]:
        method = cell["method"]
        amount = cell["finetune"]["labelled"] or cell["finetune"]["label_fraction"]
        path = cell_dir(args.keep / method, method, amount, cell["seed"])
        if (path / CELL_FILE).exists():
            continue
        path.mkdir(parents=True)
        write_json(path / CELL_FILE, cell)
        print(path)


if __name__ == "__main__":
    main()
