"""Chooses the model card's ``trust`` constants (README.md, "Flags"; issue #27) on IN-STYLE validation phantoms.

    python benchmarks/trust_calibration.py VAL [--percentile 99.8] [--write]

VAL is an annotated training-style folder (``vcorner synth VAL --images 100 --seed 5151``); the validation-only
holdout style must never be given here. For every network corner of VAL (clicked centres as annotated, the shipped
model in FP32) it measures the evidence of :mod:`vcorner.postprocess.plausibility` and:

1. fits the ellipse constants (``size_sd``, ``flat_sd``, ``scatter_scale``) by the largest Gaussian likelihood of
   the true corners on a grid, then scales all three by one factor so that the 95% ellipses hold 95% of them;
2. sets each flag limit at the ``--percentile`` of its measure over VAL's vertebrae (``height_limit``: the height
   deviation of :func:`~vcorner.postprocess.plausibility.height_deviation`; ``spread_limit``: the farthest
   single-patch network corner, in vertebra sizes).

Prints the constants as JSON; ``--write`` puts them into the shipped model's card and its INT8 variant's (their
``card_sha256`` rewritten).
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner.backends import ModelRequest
from vcorner.cli.common import open_model
from vcorner.config import TrustConfig
from vcorner.evaluation.tune import infer_records
from vcorner.io.annotations import read_annotations
from vcorner.models.modelfile import default_model_path, read_model_card, write_sidecar
from vcorner.postprocess.decode import COV_FLOOR_PX2, accumulate_image, decode_accumulated
from vcorner.postprocess.plausibility import height_deviation, patch_scatter, prior_heights, single_patch_corners

CHI2_95 = 5.991
"""The 95% quantile of the chi-square distribution with 2 degrees of freedom."""


def evidence(root: Path) -> dict[str, np.ndarray]:
    """Per network corner of the annotated folder ``root``: offset to the truth (N, 2) px, vertebra size (N,) px,
    confidence (N,), single-patch scatter (N, 2, 2) px^2; per vertebra: height deviation (V,) and farthest
    single-patch network corner in sizes (V,)."""
    records = read_annotations(root / "annotations.json")
    runner, resolved = open_model(ModelRequest(precision="fp32"))
    card = resolved.card
    with runner:
        jobs = infer_records(root, records, runner, card)
    out: dict[str, list] = {k: [] for k in ("offset", "size", "confidence", "scatter", "deviation", "spread")}
    for job, record in jobs:
        truth = {v.name: v.corners for v in record.vertebrae}
        accumulated = accumulate_image(job.maps[:, 0], job.affines, job.owner, job.frames, job.shape, card.decode)
        corners = decode_accumulated(accumulated, job.frames, job.names, card.prior, card.decode)
        single = single_patch_corners(job.maps[:, 0], job.affines, job.owner, accumulated, job.frames, job.names,
                                      card.prior, card.decode)
        expected = prior_heights(card.prior, job.names)
        out["deviation"] += height_deviation(np.stack([v.xy for v in corners]), expected).tolist()
        for i, v in enumerate(corners):
            scatter, farthest = patch_scatter(single[i], v.xy)
            network = np.array([s == "network" for s in v.source])
            size = float(job.frames.sizes[i])
            out["spread"].append(float(np.where(network, farthest, 0.0).max()) / size)
            for k in np.flatnonzero(network):
                if truth.get(v.name) is None:
                    continue
                out["offset"].append(truth[v.name][k] - v.xy[k])
                out["size"].append(size)
                out["confidence"].append(float(v.confidence[k]))
                out["scatter"].append(scatter[k])
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def covariances(data: dict[str, np.ndarray], size_sd: float, flat_sd: float, scatter_scale: float) -> np.ndarray:
    """(N, 2, 2) covariances of :func:`vcorner.postprocess.plausibility.evidence_covariance` for every corner."""
    flat = 1.0 - np.clip(data["confidence"], 0.0, 1.0)
    variance = (size_sd ** 2 + (flat_sd * flat) ** 2) * data["size"] ** 2 + COV_FLOOR_PX2
    return variance[:, None, None] * np.eye(2) + scatter_scale ** 2 * data["scatter"]


def d2(data: dict[str, np.ndarray], cov: np.ndarray) -> np.ndarray:
    """(N,) squared Mahalanobis distances of the true corners."""
    return np.einsum("ni,nij,nj->n", data["offset"], np.linalg.inv(cov), data["offset"])


def fit_ellipses(data: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """``(size_sd, flat_sd, scatter_scale)``: the grid point of the largest Gaussian likelihood, then scaled by one
    factor so that 95% of the true corners lie inside the 95% ellipses."""
    best, best_nll = (0.02, 0.0, 0.0), np.inf
    for values in itertools.product(np.linspace(0.01, 0.04, 31), np.linspace(0.0, 0.4, 21), np.linspace(0, 2, 21)):
        cov = covariances(data, *values)
        nll = 0.5 * float(np.mean(d2(data, cov) + np.log(np.linalg.det(cov))))
        if nll < best_nll:
            best, best_nll = values, nll
    factors = np.linspace(0.7, 1.5, 161)
    inside = [float(np.mean(d2(data, covariances(data, *(f * np.asarray(best)))) <= CHI2_95)) for f in factors]
    factor = float(factors[int(np.argmin(np.abs(np.asarray(inside) - 0.95)))])
    return tuple(round(float(f * factor), 4) for f in best)  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("val", type=Path, help="annotated IN-STYLE validation phantoms (never the holdout style)")
    parser.add_argument("--percentile", type=float, default=99.8, help="flag limits at this percentile of VAL")
    parser.add_argument("--write", action="store_true", help="write the constants into the shipped cards")
    args = parser.parse_args()
    data = evidence(args.val)
    size_sd, flat_sd, scatter_scale = fit_ellipses(data)
    trust = TrustConfig(size_sd=size_sd, flat_sd=flat_sd, scatter_scale=scatter_scale,
                        height_limit=round(float(np.percentile(data["deviation"], args.percentile)), 4),
                        spread_limit=round(float(np.percentile(data["spread"], args.percentile)), 4))
    cov = covariances(data, size_sd, flat_sd, scatter_scale)
    report = {"trust": trust.__dict__, "validation": str(args.val), "percentile": args.percentile,
              "corners": len(data["offset"]), "vertebrae": len(data["deviation"]),
              "inside_95": float(np.mean(d2(data, cov) <= CHI2_95)),
              "inside_50": float(np.mean(d2(data, cov) <= 1.386))}
    print(json.dumps(report, indent=1))
    if args.write:
        model = default_model_path()
        seed = json.loads((args.val / "phantoms.json").read_text()).get("seed", "?")
        chosen = (f"{report['corners']} network corners of {report['vertebrae']} vertebrae of training-style phantoms "
                  f"(seed {seed}), flag limits at the {args.percentile:g}th percentile: "
                  "python benchmarks/trust_calibration.py VAL --write")
        for path in (model, model.with_name(model.stem + ".int8.onnx")):
            card = read_model_card(path)
            write_sidecar(path, replace(card, trust=trust, training={**card.training, "trust_chosen_on": chosen}))
            print(f"wrote {path}.json")


if __name__ == "__main__":
    main()
