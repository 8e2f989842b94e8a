"""Training-side ablations the paper's conclusion asks for: reflect padding (border effect) and a loss that
also penalizes residual background, against the lite recipe, all with the same short budget; and the
paper's ground truth (every corner in a patch's map) against vcorner's (only the corners of the vertebra the
patch was cut for, against neighbour confusion: docs/design.md section 5).

    python benchmarks/ablations_training.py [--epochs 2] [--patches-per-vertebra 8]
    python benchmarks/ablations_training.py --epochs 1 --only lite paper --name recipes_accuracy
    python benchmarks/ablations_training.py --only lite all --seeds 0 1 2 --name ablations_ground_truth

Trains each variant on data/phantoms-train (seed 11), evaluates on data/phantoms-val (seed 12) with the
shipped model's patch sampling and decoding settings (so only the network differs), and writes
benchmarks/results/ablations_training.{json,md}. A short budget (minutes on 2 CPU cores) ranks the ideas; it
does not reach the shipped model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.evaluation.metrics import table1_row
from vcorner.evaluation.patch_bc import dataset_patch_bc, summarize_bc
from vcorner.evaluation.tune import evaluate_decode, infer_records
from vcorner.export.onnx_export import export_checkpoint
from vcorner.io.annotations import read_annotations
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.training.recipe import load_recipe
from vcorner.training.trainer import train

RESULTS = Path(__file__).parent / "results"


def variants(base, paper):
    """The recipe variants compared (``paper``: the paper's recipe under the same budget)."""
    return {
        "lite (zero padding, BC loss)": base,
        "reflect padding": replace(base, model=replace(base.model, padding_mode="reflect")),
        "BC loss + 1.0 x background mass": replace(base, train=replace(base.train, background_weight=1.0)),
        "all corners in every patch (the paper's ground truth)": replace(
            base, ground_truth=replace(base.ground_truth, corners="all")),
        "paper recipe (23.8M parameters)": replace(paper, train=replace(paper.train, epochs=base.train.epochs,
                                                                        patches_per_vertebra=base.train.patches_per_vertebra)),
    }


def row_label(row: dict, several_seeds: bool) -> str:
    """The variant's name, with its seed when several were run."""
    return f"{row['variant']} (seed {row['seed']})" if several_seeds else row["variant"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patches-per-vertebra", type=int, default=8)
    parser.add_argument("--train", type=Path, default=Path("data/phantoms-train"))
    parser.add_argument("--val", type=Path, default=Path("data/phantoms-val"))
    parser.add_argument("--runs", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--only", nargs="+", help="variant name prefixes to run (default: the three lite variants)")
    parser.add_argument("--name", default="ablations_training", help="results file stem in benchmarks/results")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (each variant, each seed)")
    args = parser.parse_args()
    base = load_recipe(Path("train/lite.toml"))
    base = replace(base, train=replace(base.train, epochs=args.epochs, patches_per_vertebra=args.patches_per_vertebra))
    shipped = read_model_card(default_model_path())
    records = read_annotations(args.val / "annotations.json")
    rows = []
    chosen = {k: v for k, v in variants(base, load_recipe(Path("train/paper.toml"))).items()
              if (args.only and any(k.startswith(p) for p in args.only))
              or (not args.only and "paper" not in k and not k.startswith("all"))}
    for (name, recipe), seed in ((item, seed) for item in chosen.items() for seed in args.seeds):
        run = args.runs / name.split(" (")[0].replace(" ", "-").replace(".", "")
        run = run.with_name(f"{run.name}-seed{seed}") if args.seeds != [0] else run
        result = train(args.train, replace(recipe, train=replace(recipe.train, seed=seed)), run, force=True)
        onnx = export_checkpoint(run, run / "model.onnx")
        card = replace(read_model_card(onnx), sampling=shipped.sampling, decode=shipped.decode)
        with OnnxRuntimeRunner(onnx) as runner:
            errors = evaluate_decode(infer_records(args.val, records, runner, card), card, card.decode)[0]
            bc = summarize_bc(dataset_patch_bc(args.val, records, runner, card))
        row = table1_row(errors)
        rows.append({"variant": name, "seed": seed, "best_val_bc": max(h["val_bc"] for h in result.history),
                     "patch_bc_mean": bc["mean"], **{k: row[k] for k in ("p2p_median", "p2p_mean", "p2p_std",
                                                                         "fit_failure_pct")}})
        print(json.dumps(rows[-1]), flush=True)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"date": date, "epochs": args.epochs,
                                                                 "patches_per_vertebra": args.patches_per_vertebra,
                                                                 "seeds": args.seeds, "rows": rows}, indent=1) + "\n")
    lines = [f"{args.epochs} epochs x {args.patches_per_vertebra} patches per vertebra on {args.train}, "
             f"evaluated on {args.val}; {date}.", "",
             "| variant | best val BC | patch BC (val) | P2P median (mm) | mean | std | fit failure % |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {row_label(r, len(args.seeds) > 1)} | {r['best_val_bc']:.4f} | {r['patch_bc_mean']:.4f} | "
              f"{r['p2p_median']:.3f} | {r['p2p_mean']:.3f} | {r['p2p_std']:.3f} | {r['fit_failure_pct']:.2f} |"
              for r in rows]
    if len(args.seeds) > 1:
        lines += ["", f"Over seeds {args.seeds}: mean P2P (mm), mean +- sd across seeds.", "",
                  "| variant | mean P2P | per seed |", "|---|---|---|"]
        for name in chosen:
            values = [r["p2p_mean"] for r in rows if r["variant"] == name]
            lines.append(f"| {name} | {statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} | "
                         + ", ".join(f"{v:.3f}" for v in values) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
