"""CPU milliseconds per image of the two CPU stages, ``prepare`` (decode + cut patches) and ``finish``
(back-project, search quadrants, with the batch finishers' single-threaded kernels), with random maps in place of
the network's (issue 12: the cost of the new checks, compared between checkouts).

    python benchmarks/stage_times.py [--images 12] [--repeats 2]
    PYTHONPATH=/path/to/old/checkout python benchmarks/stage_times.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from vcorner import benchmark as lib
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.stages.plan import make_plan

SEED = 20250502


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vcorner-stages-"))
    synthesize_dataset(folder, args.images, seed=SEED, workers=1)
    card = read_model_card(default_model_path())
    plan = make_plan(folder, folder / "centers.csv")
    for repeat in range(args.repeats):
        prepared, finished = lib.stage_seconds(plan.images, card)
        print(f"repeat {repeat + 1}: prepare {1000 * prepared:.1f} ms/image, finish {1000 * finished:.1f} "
              f"ms/image over {len(plan.images)} phantoms", flush=True)


if __name__ == "__main__":
    main()
