"""OpenVINO against ONNX Runtime on this CPU (issue #34): network throughput and what each precision does to the
corners, in one process.

Rows: ORT FP32, ORT INT8 (``default.int8.onnx``), OV FP32, OV BF16, OV INT8 (the same QDQ graph), each OV row with
PERFORMANCE_HINT LATENCY and THROUGHPUT. Throughput: patches/s of the network alone on batches of 64 real
64 x 64 patches (cut from the validation phantoms), 1 and 2 inference threads; the rows are timed in turns,
``--rounds`` times in a rotated order, so that the shared machine's load falls on all of them; each cell gives
the range over rounds and the load average seen. Accuracy (2 threads, LATENCY): every phantom's maps, their
largest difference from ORT FP32 (relative to that patch's ORT FP32 peak), and Table 1 (P2P mean/median, fit
failure) of the decoded corners with the shipped decoding, plus the mean corner shift from ORT FP32's corners.
Writes ``benchmarks/results/openvino_check.md`` and appends to ``openvino_check.jsonl``.

    python benchmarks/openvino_check.py [--data DIR | --images 40 --seed 2031] [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vcorner.backends.openvino.runner import OpenVinoRunner
from vcorner.backends.ort.runner import OnnxRuntimeRunner
from vcorner.evaluation.metrics import match, table1_row
from vcorner.evaluation.tune import as_predictions, decode_jobs, infer_records
from vcorner.io.annotations import read_annotations
from vcorner.models.modelfile import default_model_path, read_model_card
from vcorner.models.variants import int8_path
from vcorner.phantoms.dataset import synthesize_dataset

RESULTS = Path(__file__).parent / "results"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
BATCH = 64


def cpu_stamp() -> dict:
    """CPU model name, the instruction-set flags that matter here, cores, OpenVINO's CPU capabilities."""
    import onnxruntime
    import openvino

    lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in reversed(lines) if ":" in line)}
    flags = set(fields.get("flags", "").split())
    core = openvino.Core()
    return {"cpu": fields.get("model name", platform.processor()), "flags": [f for f in FLAGS if f in flags],
            "cores": len(os.sched_getaffinity(0)), "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
            "ov_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}


def rows() -> list[tuple[str, str, str, str | None]]:
    """(label, runtime, precision, OpenVINO hint) of every row."""
    out = [("ORT FP32", "ort", "fp32", None), ("ORT INT8", "ort", "int8", None)]
    for precision in ("fp32", "bf16", "int8"):
        out += [(f"OV {precision.upper()} {hint.lower()}", "ov", precision, hint) for hint in ("LATENCY", "THROUGHPUT")]
    return out


def open_runner(runtime: str, precision: str, hint: str | None, threads: int):
    """An entered runner of the shipped model (FP32 graph, or its INT8 graph for int8)."""
    model = default_model_path()
    graph = int8_path(model) if precision == "int8" else model
    if runtime == "ort":
        return OnnxRuntimeRunner(graph, threads=threads).__enter__()
    return OpenVinoRunner(graph, precision, threads=threads, hint=hint).__enter__()


def rate(runner, batch: np.ndarray, seconds: float) -> float:
    """Patches/s of ``runner.infer`` on ``batch`` over about ``seconds`` (after 3 warm-up batches)."""
    for _ in range(3):
        runner.infer(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.infer(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def accuracy(jobs, reference, records, card, runner) -> dict:
    """Maps of every job under ``runner``; their largest difference from ``reference`` maps relative to each
    patch's reference peak; Table 1 of the decoded corners; mean corner shift from the reference corners (mm)."""
    mine, worst = [], 0.0
    for (job, record), ref in zip(jobs, reference, strict=True):
        job = copy.copy(job)
        job.maps = runner.infer_all(job.patches, BATCH)
        peak = ref.reshape(len(ref), -1).max(axis=1)
        worst = max(worst, float((np.abs(job.maps - ref).reshape(len(ref), -1).max(axis=1) / peak).max()))
        mine.append((job, record))
    corners = decode_jobs(mine, card, card.decode)
    row = table1_row(match(as_predictions(corners), records))
    spacing = {r.file: r.pixel_spacing_mm for r in records}
    return {"max_map_diff_rel": worst, "p2p_mean": row["p2p_mean"], "p2p_median": row["p2p_median"],
            "fit_failure_pct": row["fit_failure_pct"], "corners": corners, "spacing": spacing}


def shift_mm(corners: dict, reference: dict, spacing: dict) -> float:
    """Mean distance (mm) between the same corners of two decodings."""
    shifts = [np.hypot(*(a.xy - b.xy).T) * spacing[image]
              for image in reference for a, b in zip(corners[image], reference[image], strict=True)]
    return float(np.mean(np.concatenate(shifts)))


def paired(rates: dict, label: str, other: str, threads: list[int]) -> dict[str, list[float]]:
    """Per thread count, the rate of ``label`` over that of ``other`` in each round (the same minute's load)."""
    return {str(t): [round(a / b, 2) for a, b in zip(rates[(label, t)], rates[(other, t)], strict=True)]
            for t in threads}


def span(values: list[float], digits: int = 0) -> str:
    """``min-max`` of ``values``."""
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="A phantom set (default: fresh phantoms).")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2031)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="vcorner-ov-"))
    if args.data is None:
        synthesize_dataset(data, args.images, seed=args.seed, workers=2)
    records = read_annotations(data / "annotations.json")
    card = read_model_card(default_model_path())
    stamp = cpu_stamp()

    reference_runner = open_runner("ort", "fp32", None, 2)
    jobs = infer_records(data, records, reference_runner, card, batch_size=BATCH)
    reference = [job.maps for job, _ in jobs]
    patches = np.concatenate([job.patches for job, _ in jobs])
    batch = patches[:BATCH] if len(patches) >= BATCH else np.resize(patches, (BATCH, *patches.shape[1:]))

    table = rows()
    runners = {(label, threads): open_runner(runtime, precision, hint, threads)
               for label, runtime, precision, hint in table for threads in args.threads}
    rates = {key: [] for key in runners}
    loads = []
    for round_index in range(args.rounds):
        order = table[round_index % len(table):] + table[:round_index % len(table)]
        for threads in args.threads:
            for label, *_ in order:
                rates[(label, threads)].append(rate(runners[(label, threads)], batch, args.seconds))
                loads.append(os.getloadavg()[0])

    two = max(args.threads)
    checked = {label: accuracy(jobs, reference, records, card, runners[(label, two)])
               for label, _, _, hint in table if hint != "THROUGHPUT"}
    base = checked["ORT FP32"]
    results = []
    for label, runtime, precision, hint in table:
        row = {"label": label, "runtime": runtime, "precision": precision, "hint": hint, "batch": BATCH,
               "patches_per_s": {str(t): [round(r, 1) for r in rates[(label, t)]] for t in args.threads},
               "vs_ort_int8": paired(rates, label, "ORT INT8", args.threads)}
        if hint == "THROUGHPUT":
            row["vs_latency"] = paired(rates, label, label.replace("throughput", "latency"), args.threads)
        if label in checked:
            c = checked[label]
            row |= {k: c[k] for k in ("max_map_diff_rel", "p2p_mean", "p2p_median", "fit_failure_pct")}
            row["p2p_mean_change_mm"] = c["p2p_mean"] - base["p2p_mean"]
            row["corner_shift_mm"] = shift_mm(c["corners"], base["corners"], base["spacing"])
        results.append(row)
    write(results, stamp, args, data, len(jobs), len(patches), loads)


def write(results: list[dict], stamp: dict, args, data: Path, images: int, patches: int, loads: list[float]) -> None:
    """The markdown table and one JSON line per row."""
    threads = [str(t) for t in args.threads]
    head = ("| row | " + " | ".join(f"patches/s, {t} thread{'s' if t != '1' else ''}" for t in threads)
            + " | " + " | ".join(f"vs ORT INT8, {t}" for t in threads)
            + " | max map diff / peak | P2P mean / median (mm) | fit failure | mean P2P change | mean corner shift |")
    lines = [head, "|" + "---|" * (2 * len(threads) + 6)]
    for r in results:
        speed = " | ".join([span(r["patches_per_s"][t]) for t in threads]
                           + [f"{span(r['vs_ort_int8'][t], 2)}x" for t in threads])
        if "p2p_mean" in r:
            acc = (f"{r['max_map_diff_rel']:.2%} | {r['p2p_mean']:.3f} / {r['p2p_median']:.3f} | "
                   f"{r['fit_failure_pct']:.2f}% | {r['p2p_mean_change_mm']:+.4f} mm | {r['corner_shift_mm']:.4f} mm")
        else:
            acc = ("vs the latency row, per round: " + ", ".join(
                f"{span(r['vs_latency'][t], 2)}x ({t} thr.)" for t in threads) + "; accuracy as above | | | |")
        lines.append(f"| {r['label']} | {speed} | {acc} |")
    no_amx = "" if any("amx" in f for f in stamp["flags"]) else " (no AMX)"
    note = (f"`python benchmarks/openvino_check.py --rounds {args.rounds} --seconds {args.seconds:g}"
            f" --threads {' '.join(threads)}{' --data ' + str(data) if args.data else ''}`: {images} phantoms "
            f"(`vcorner synth` training renderer, seed {args.seed}), {patches} patches; throughput on the first "
            f"{BATCH} of them as one batch. CPU: {stamp['cpu']}, {stamp['cores']} cores, flags "
            f"{', '.join(stamp['flags'])}{no_amx}; OpenVINO {stamp['openvino']} (CPU capabilities "
            f"{', '.join(stamp['ov_capabilities'])}), ONNX Runtime {stamp['onnxruntime']} (threads sleep between "
            f"operators, as in `vcorner batch`). Each speed cell is the range over {args.rounds} rounds, rows timed "
            f"in turns; a ratio is taken within each round (the same minutes' load), its range over rounds; the "
            f"machine is shared with other work (1-minute load average during the timing, this run included: "
            f"{min(loads):.1f}-{max(loads):.1f} on {stamp['cores']} cores), so the ranges are wide and only large "
            "ratios mean something. Accuracy columns: 2 threads; the map difference is the largest over all "
            "patches of max|map - ORT FP32 map| / that patch's ORT FP32 peak; P2P change and corner shift are "
            "against ORT FP32's corners on the same patches.\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openvino_check.md").write_text(note + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    with open(RESULTS / "openvino_check.jsonl", "a", encoding="utf-8") as out:
        for r in results:
            out.write(json.dumps(r | {"machine": stamp, "images": images, "seed": args.seed,
                                      "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
