"""How many inference threads a CPU batch should have: end-to-end images/s of several thread settings, timed in
turns on the same phantoms so that the machine's drift falls on all of them alike.

    python benchmarks/thread_split.py [--precision int8] [--configs 1 2 2s] [--rounds 5] [--images 100]

A config is the ONNX Runtime thread count, with ``s`` when its threads spin between operators (ONNX Runtime's
default; vcorner's sessions sleep, ``vcorner/backends/ort/runner.py``). Each round runs the library batch
(``run_batch``, default loader and finisher threads for that runner) twice over the phantoms per config.
Appends one JSON line per config to benchmarks/results/thread_split.jsonl (rates of every round, their mean).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from vcorner import benchmark as lib
from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.hardware.cpu import inference_threads
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.models.variants import int8_path
from vcorner.phantoms.dataset import synthesize_dataset
from vcorner.pipeline.local import run_threads
from vcorner.pipeline.run import BatchSettings
from vcorner.stages.plan import Plan, make_plan

RESULTS = Path(__file__).parent / "results" / "thread_split.jsonl"


def parse_config(text: str) -> tuple[int, bool]:
    """``"2s"`` -> (2 threads, spinning); ``"1"`` -> (1, sleeping)."""
    spin = text.endswith("s")
    return int(text.rstrip("s")), spin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="int8")
    parser.add_argument("--configs", nargs="+", default=["1", "2", "2s"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # --no-resume notes of the repeated runs
    model = default_model_path()
    graph = int8_path(model) if args.precision == "int8" else model
    card = read_model_card(model)
    options = BatchSettings(batch_size=args.batch, resume=False)
    rates: dict[str, list[float]] = {c: [] for c in args.configs}
    with tempfile.TemporaryDirectory(prefix="vcorner-threads-") as tmp, ExitStack() as stack:
        scratch = Path(tmp)
        synthesize_dataset(scratch / "data", args.images, args.seed)
        plan = make_plan(scratch / "data", scratch / "data" / "centers.csv")
        runners = {}
        for config in args.configs:
            threads, spin = parse_config(config)
            runners[config] = stack.enter_context(OnnxRuntimeRunner(graph, "cpu", threads, spin=spin))
            run_threads(Plan(plan.images[:2], {}, []), scratch / f"warm-{config}", runners[config], card, options)
        for turn in range(args.rounds):
            for config, runner in runners.items():
                began, done = time.perf_counter(), 0
                for repeat in range(2):
                    done += run_threads(plan, scratch / f"{config}-{turn}-{repeat}", runner, card, options).done
                rates[config].append(round(done / (time.perf_counter() - began), 2))
                print(f"round {turn + 1} {args.precision} threads {config}: {rates[config][-1]} images/s", flush=True)
    default = inference_threads(args.precision, card.sampling.patches_per_vertebra)
    rows = [{"benchmark": "thread_split", "precision": args.precision, "config": config,
             "threads": parse_config(config)[0], "spin": parse_config(config)[1], "images": args.images,
             "seed": args.seed, "batch": args.batch, "images_per_s": values,
             "mean_images_per_s": round(sum(values) / len(values), 2), "vcorner_default_threads": default,
             **lib.stamp()} for config, values in rates.items()]
    for row in rows:
        print(json.dumps({k: row[k] for k in ("precision", "config", "mean_images_per_s", "images_per_s")}))
    lib.append_jsonl(RESULTS, rows)


if __name__ == "__main__":
    main()
