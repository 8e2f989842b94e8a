"""Inference-side ablations of the shipped model: patches per vertebra, sub-pixel refinement.

    python benchmarks/ablations.py [--model vcorner/models/default.onnx] [--data out/accuracy/phantoms-seed99]

Each variant changes only the model card used at inference (the network is the same): fewer grid points,
scales or rotations per vertebra, and the sub-pixel refinement on or off. Writes
benchmarks/results/ablations.json and ablations.md with the mean/median P2P (mm), fit failure and the
number of patches per vertebra (which sets the inference cost).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from vcorner.cli.common import open_model
from vcorner.evaluation.metrics import table1_row
from vcorner.evaluation.tune import evaluate_decode, infer_records, sampling_variants
from vcorner.io.annotations import read_annotations

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("vcorner/models/default.onnx"))
    parser.add_argument("--data", type=Path, default=Path("out/accuracy/phantoms-seed99"))
    args = parser.parse_args()
    records = read_annotations(args.data / "annotations.json")
    runner, resolved = open_model(args.model)
    card = resolved.card
    rows = []
    with runner:
        for name, sampling in sampling_variants(card.sampling).items():
            variant = replace(card, sampling=sampling)
            jobs = infer_records(args.data, records, runner, variant)
            for subpixel in (True, False):
                decode = replace(card.decode, subpixel=subpixel)
                row = table1_row(evaluate_decode(jobs, variant, decode)[0])
                rows.append({"variant": name, "patches_per_vertebra": sampling.patches_per_vertebra,
                             "subpixel": subpixel, **{k: row[k] for k in ("p2p_median", "p2p_mean", "p2p_std",
                                                                          "fit_failure_pct", "corners")}})
                print(json.dumps(rows[-1]))
    RESULTS.mkdir(exist_ok=True)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (RESULTS / "ablations.json").write_text(json.dumps({"model": str(args.model), "data": str(args.data),
                                                        "date": date, "rows": rows}, indent=1) + "\n")
    lines = [f"Model {args.model}, data {args.data}, {date}.", "",
             "| variant | patches/vertebra | sub-pixel | P2P median (mm) | mean | std | fit failure % |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['patches_per_vertebra']} | {'on' if r['subpixel'] else 'off'} | "
              f"{r['p2p_median']:.3f} | {r['p2p_mean']:.3f} | {r['p2p_std']:.3f} | {r['fit_failure_pct']:.2f} |"
              for r in rows]
    (RESULTS / "ablations.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
