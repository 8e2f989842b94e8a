"""One sitting of issue #34: ``vcorner batch`` images/s and Table 1 for ONNX Runtime FP32/INT8 and OpenVINO
FP32/BF16/INT8 on the same phantoms, each variant run in every round, the order reversed every other round
(so that the load of a shared machine falls on all alike), and what ``--backend auto`` picks.

    vcorner synth /tmp/e2test --images 100 --seed 99
    python benchmarks/openvino_sitting.py /tmp/e2test --out /tmp/e2sitting [--rounds 2]

Each run is the CLI itself (``python -m vcorner batch DATA --centers DATA/centers.csv --backend B --precision P``,
``OMP_NUM_THREADS=1``); images/s is ``last_run.done / last_run.seconds`` of its ``run.json`` (set-up not
counted), and its ratio to ONNX Runtime INT8's run of the same round; Table 1 comes from ``vcorner evaluate``
of the first round's ``corners.csv`` (``metrics.json``).
Prints one JSON line per variant and a Markdown table; the 1-minute load average is taken before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = (("ort", "fp32"), ("ort", "int8"), ("ov", "fp32"), ("ov", "bf16"), ("ov", "int8"), ("auto", "auto"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def vcorner(*args: str) -> None:
    """Run ``python -m vcorner ARGS`` (its output kept quiet unless it fails)."""
    done = subprocess.run([sys.executable, "-m", "vcorner", *args], env=ENV, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some vertebrae flagged or failed, still a run
        raise SystemExit(f"vcorner {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")


def batch(data: Path, out: Path, backend: str, precision: str) -> dict:
    """One ``vcorner batch`` run: its rate, set-up, the load before it and how it was resolved."""
    load = os.getloadavg()[0]
    vcorner("batch", str(data), "--centers", str(data / "centers.csv"), "--out", str(out), "--backend", backend,
            "--precision", precision, "--force")
    run = json.loads((out / "run.json").read_text())
    last = run["last_run"]
    return {"images_per_s": last["done"] / last["seconds"], "seconds": last["seconds"],
            "setup_seconds": last["setup_seconds"], "load_1m": load, "resolved": run["resolved"]}


def table1(data: Path, run: Path) -> dict:
    """P2P median/mean and fit failure of ``run``'s corners (``vcorner evaluate``)."""
    vcorner("evaluate", str(run / "corners.csv"), str(data / "annotations.json"), "--out", str(run / "eval"),
            "--force")
    overall = json.loads((run / "eval" / "metrics.json").read_text())["overall"]
    return {k: overall[k] for k in ("p2p_median", "p2p_mean", "fit_failure_pct", "unit")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[tuple[str, str], list[dict]] = {v: [] for v in VARIANTS}
    for number in range(args.rounds):
        for backend, precision in VARIANTS if number % 2 == 0 else VARIANTS[::-1]:
            out = args.out / f"{backend}-{precision}-r{number}"
            runs[(backend, precision)].append(batch(args.data, out, backend, precision))
    base_runs = runs[("ort", "int8")]
    rows = []
    for (backend, precision), found in runs.items():
        rate = statistics.median(r["images_per_s"] for r in found)
        row = {"backend": backend, "precision": precision, "images_per_s": round(rate, 2),
               "images_per_s_rounds": [round(r["images_per_s"], 2) for r in found],
               "vs_ort_int8_rounds": [round(r["images_per_s"] / b["images_per_s"], 2)
                                      for r, b in zip(found, base_runs, strict=True)],
               "load_1m": [round(r["load_1m"], 2) for r in found], "resolved": found[0]["resolved"],
               **table1(args.data, args.out / f"{backend}-{precision}-r0")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| variant | images/s, median (rounds) | vs ORT INT8 in each round | P2P median | P2P mean | fit failure "
          "| load 1m |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rounds = ", ".join(map(str, r["images_per_s_rounds"]))
        ratios = ", ".join(f"{x:.2f}" for x in r["vs_ort_int8_rounds"])
        print(f"| {r['backend']} {r['precision']} | {r['images_per_s']:.1f} ({rounds}) | {ratios} "
              f"| {r['p2p_median']:.4f} | {r['p2p_mean']:.4f} | {r['fit_failure_pct']:.2f}% "
              f"| {', '.join(map(str, r['load_1m']))} |")


if __name__ == "__main__":
    main()
