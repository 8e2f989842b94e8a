"""Chooses the model card's ``trust`` constants (README.md, "Flags"; issue #27) on IN-STYLE validation phantoms.

    python benchmarks/trust_calibration.py VAL [VAL ...] [--percentile 99.8] [--write]

The fitting is the library's (:mod:`vcorner.evaluation.trust`, which ``vcorner tune`` also runs on a user's own model).
VAL is an annotated training-style folder (``vcorner synth VAL --images 100 --seed 5151``); the validation-only
holdout style must never be given here. For every network corner of VAL (clicked centres as annotated, the shipped
model in FP32) it measures the evidence of :mod:`vcorner.postprocess.plausibility` and:

1. fits the ellipse constants (``size_sd``, ``flat_sd``, ``scatter_scale``) by the largest Gaussian likelihood of
   the true corners on a grid, then scales all three by one factor so that the 95% ellipses hold 95% of them;
2. sets each flag limit at the ``--percentile`` of its measure over VAL's vertebrae (``height_limit``: the height
   deviation of :func:`~vcorner.postprocess.plausibility.height_deviation`; ``spread_limit``: the farthest
   single-patch network corner, in vertebra sizes);
3. where every VAL has its ``truth.json``, measures the annotator's click spread about the true corners
   (``reader_sd_mm``: the measurements' anatomy intervals).

Prints the constants as JSON; ``--write`` puts them into the shipped model's card and its INT8 variant's (their
``card_sha256`` rewritten).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from vcorner.backends import ModelRequest
from vcorner.cli.common import open_model
from vcorner.evaluation.trust import corner_evidence, fit_trust, reader_spread
from vcorner.evaluation.tune import infer_records
from vcorner.io.annotations import read_annotations
from vcorner.models.modelfile import default_model_path, read_model_card, write_sidecar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("val", type=Path, nargs="+",
                        help="annotated IN-STYLE validation phantoms (never the holdout style); several folders pool")
    parser.add_argument("--percentile", type=float, default=99.8, help="flag limits at this percentile of VAL")
    parser.add_argument("--write", action="store_true", help="write the constants into the shipped cards")
    args = parser.parse_args()
    runner, resolved = open_model(ModelRequest(precision="fp32"))
    with runner:
        per_folder = [(val, infer_records(val, read_annotations(val / "annotations.json"), runner, resolved.card))
                      for val in args.val]
    jobs = [job for _, found in per_folder for job in found]
    trust, reached = fit_trust(corner_evidence(jobs, resolved.card), args.percentile)
    trust = replace(trust, reader_sd_mm=reader_spread([(val, [r for _, r in found]) for val, found in per_folder]))
    report = {"trust": trust.__dict__, "validation": [str(v) for v in args.val], **reached}
    print(json.dumps(report, indent=1))
    if args.write:
        model = default_model_path()
        seed = ", ".join(str(json.loads((v / "phantoms.json").read_text()).get("seed", "?")) for v in args.val)
        chosen = (f"{report['corners']} network corners of {report['vertebrae']} vertebrae of training-style phantoms "
                  f"(seeds {seed}), flag limits at the {args.percentile:g}th percentile: "
                  "python benchmarks/trust_calibration.py VAL --write")
        for path in (model, model.with_name(model.stem + ".int8.onnx")):
            card = read_model_card(path)
            write_sidecar(path, replace(card, trust=trust, training={**card.training, "trust_chosen_on": chosen}))
            print(f"wrote {path}.json")


if __name__ == "__main__":
    main()
