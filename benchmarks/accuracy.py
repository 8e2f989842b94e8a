"""Accuracy benchmark: the paper's Table 1 on a fixed phantom test set, vcorner against both baselines.

    python benchmarks/accuracy.py [--model vcorner/models/default.onnx] [--images 100] [--seed 99]

Generates the test set (seed 99 is never used for training or tuning: the shipped model trains on seed 11
and tunes on seed 12), runs `vcorner batch`, `vcorner baseline --method prior|harris` and
`vcorner evaluate`, and writes benchmarks/results/accuracy.json and accuracy.md (machine, date, command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def vcorner(*args: str) -> float:
    """Run a vcorner command (exit codes 0 and 1 are fine); return its wall time in seconds."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vcorner", *args], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"vcorner {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - began


def markdown(report: dict) -> str:
    """Table 1 of the report as Markdown."""
    lines = ["| method | P2P median | mean | std | fit failure % | P2C median | mean | std | corners |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        lines.append(f"| {name} | {r['p2p_median']:.2f} | {r['p2p_mean']:.2f} | {r['p2p_std']:.2f} | "
                     f"{r['fit_failure_pct']:.2f} | {r['p2c_median']:.2f} | {r['p2c_mean']:.2f} | "
                     f"{r['p2c_std']:.2f} | {r['corners']} |")
    calib = report["calibration"]
    lines.append("")
    lines.append(f"Calibration: {calib['inside_50']:.1%} of true corners inside the 50% ellipses, "
                 f"{calib['inside_95']:.1%} inside the 95% ellipses.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vcorner/models/default.onnx")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--work", type=Path, default=Path("out/accuracy"))
    args = parser.parse_args()
    data, work = args.work / f"phantoms-seed{args.seed}", args.work
    if not (data / "annotations.json").is_file():
        vcorner("synth", str(data), "--images", str(args.images), "--seed", str(args.seed))
    centers = str(data / "centers.csv")
    seconds = vcorner("batch", str(data), "--centers", centers, "--model", args.model, "--out", str(work / "vcorner"),
                      "--no-resume")
    for method in ("prior", "harris"):
        vcorner("baseline", str(data), "--centers", centers, "--method", method, "--model", args.model,
                "--out", str(work / method))
    vcorner("evaluate", str(work / "vcorner" / "corners.csv"), str(data / "annotations.json"), "--out",
            str(work / "eval"), "--compare", f"prior={work / 'prior' / 'corners.csv'}",
            "--compare", f"harris={work / 'harris' / 'corners.csv'}")
    report = json.loads((work / "eval" / "metrics.json").read_text())
    best_baseline = min(("prior", "harris"), key=lambda m: report["methods"][m]["p2p_mean"])
    ours = report["methods"]["vcorner"]["p2p_mean"]
    theirs = report["methods"][best_baseline]["p2p_mean"]
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "model": args.model,
        "test_set": {"images": args.images, "seed": args.seed}, "batch_seconds": round(seconds, 1),
        "methods": report["methods"], "calibration": report["calibration"],
        "per_corner": report["per_corner"], "per_vertebra": report["per_vertebra"],
        "relative_improvement_over_best_baseline_pct": round(100 * (theirs - ours) / theirs, 1),
        "best_baseline": best_baseline,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "accuracy.md").write_text(
        f"Fixed phantom test set: {args.images} images, seed {args.seed}; model {args.model}; "
        f"{result['date']} on {result['machine']['cores']} cores ({result['machine']['cpu']}).\n"
        f"Command: `python {result['command']}`\n\n" + markdown(report)
        + f"\nRelative improvement in mean P2P over the best baseline ({best_baseline}): "
        f"{result['relative_improvement_over_best_baseline_pct']}%.\n")
    print((RESULTS / "accuracy.md").read_text())


if __name__ == "__main__":
    main()
