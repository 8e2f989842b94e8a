"""Copy the benchmark rows that decide INT8 for the shipped model into the package, beside the model.

    python benchmarks/ship_int8_evidence.py [--results benchmarks/results/benchmark.jsonl]

``--backend auto`` runs ``default.int8.onnx`` only on evidence recorded on a machine like the one it runs on
(same CPU model and core count; :mod:`vcorner.models.evidence`). Shipping the rows that timed
exactly the shipped FP32 and INT8 files (``vcorner/models/default.benchmark.jsonl``) makes that decision the
same wherever vcorner is run from, on the machines where the project measured it; elsewhere the rows do not
apply and FP32 runs until ``vcorner benchmark`` measures that machine. OpenVINO's rows (``--backend ort,ov``)
ship only when asked (``--backends ort,ov``): they decide OpenVINO wherever they apply, and record its accuracy so
that the self-check times it elsewhere (:mod:`vcorner.models.ov_evidence`). The rule reads the network's
patches/s only, so ship them where the batch gains end to end too (``benchmarks/openvino_sitting.py``): on the
project's CPU (2-core AMD EPYC, AVX-512 BF16, no AMX) the shipped model's OpenVINO INT8 ran 1.54x ONNX Runtime's
INT8 network, but ``vcorner batch`` 0.95-0.99x, so they are not shipped (README.md, "OpenVINO (CPU)").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vcorner.models.card import sha256_file
from vcorner.models.evidence import read_rows, shipped_evidence_path
from vcorner.models.modelfile import default_model_path
from vcorner.models.variants import int8_path

RESULTS = Path(__file__).parent / "results" / "benchmark.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--backends", default="ort", help="comma-separated backends whose rows ship (ort, ov)")
    args = parser.parse_args()
    backends = tuple(args.backends.split(","))
    model = default_model_path()
    fp32, int8 = sha256_file(model), sha256_file(int8_path(model))
    rows = [r for r in read_rows(args.results)
            if r.get("model_sha256") == fp32 and r.get("backend") in backends and r.get("status") == "ok"
            and (r.get("precision"), r.get("variant_sha256")) in {("fp32", fp32), ("int8", int8), ("bf16", fp32)}]
    out = shipped_evidence_path(model)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows ({sorted({r['date'] for r in rows})}) to {out}")


if __name__ == "__main__":
    main()
