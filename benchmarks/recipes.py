"""The ``paper`` and ``lite`` recipes side by side: ONNX Runtime FP32 patches/s on this CPU.

    python benchmarks/recipes.py [--recipes paper lite] [--batch 64] [--seconds 3] [--rounds 2]

Random weights (speed does not depend on them), exported to ONNX as ``vcorner export`` does. The recipes are
timed in turns, ``--rounds`` times, and averaged, so that other load on the machine falls on both alike.
Accuracy is not compared here: the paper recipe would need training (see the training recipes under train/).
Appends one JSON line per recipe to benchmarks/results/recipes.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from vcorner import benchmark as lib
from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.network.unet import RECIPES, count_parameters, create_model

RESULTS = Path(__file__).parent / "results" / "recipes.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["paper", "lite"], choices=sorted(RECIPES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="per recipe and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    patches = np.random.default_rng(0).standard_normal((args.batch, 1, 64, 64)).astype(np.float32)
    rates: dict[str, list[float]] = {r: [] for r in args.recipes}
    with tempfile.TemporaryDirectory(prefix="vcorner-recipes-") as tmp, ExitStack() as stack:
        runners = {r: stack.enter_context(OnnxRuntimeRunner(lib.random_model(r, Path(tmp) / f"{r}.onnx")))
                   for r in args.recipes}
        for _ in range(args.rounds):
            for recipe, runner in runners.items():
                rates[recipe].append(lib.speed(runner, patches, args.batch, args.seconds)["patches_per_s"])
    base = max(float(np.mean(rates[r])) for r in args.recipes)
    stamp = lib.stamp()
    rows = [{"benchmark": "recipes", "recipe": r, "widths": RECIPES[r]["widths"],
             "parameters": count_parameters(create_model(r)), "batch": args.batch,
             "ort_fp32_patches_per_s": round(float(np.mean(rates[r])), 1), "rounds": rates[r],
             "relative_to_fastest": round(float(np.mean(rates[r])) / base, 3),
             "accuracy": "not measured: random weights (the paper recipe needs training)", **stamp}
            for r in args.recipes]
    for row in rows:
        print(json.dumps(row))
    lib.append_jsonl(RESULTS, rows)


if __name__ == "__main__":
    main()
