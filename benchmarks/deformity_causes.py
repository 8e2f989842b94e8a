"""Where the error on deformed vertebrae comes from (issue #29): the same network maps decoded with the prior's
weight as shipped, lowered, and switched off, on phantoms with fractures and slips.

For each variant: mean P2P (mm) of normal vertebrae, of wedge-fractured ones and of the two vertebrae of a slip;
and the flags' sensitivity and specificity (Genant grade >= 1 and slip >= 3 mm, from vcorner's measurements of
the found corners, against the same measures of the annotated corners). The prior's weight is set through
``DecodeConfig.prior_inflation`` (a multiplier on the prior's covariance: 4 shipped, 1e6 is no prior). Writes
``benchmarks/results/deformity_causes.md``.

    python benchmarks/deformity_causes.py [--images 300 --seed 290029] [--inflation 4 16 64 1e6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner import CORNER_NAMES
from vcorner.backends import ModelRequest
from vcorner.cli.common import open_model
from vcorner.evaluation.tune import decode_jobs, infer_records
from vcorner.io.annotations import read_annotations
from vcorner.measure import definitions as d
from vcorner.measure.intervals import SLIP_MM, ImageCorners, measure_image
from vcorner.models.modelfile import default_model_path
from vcorner.phantoms.dataset import synthesize_dataset

RESULTS = Path(__file__).parent / "results"


def truth_flags(corners: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """(V,) Genant grade >= 1 and (V - 1,) |slip| >= 3 mm of annotated corners (V, 4, 2)."""
    grade = d.genant_grade(d.height_loss(d.heights(corners[None])))[0]
    slip = d.listhesis(corners[None])[0][0] * spacing
    return grade >= 1, np.abs(slip) >= SLIP_MM


def found_flags(rows) -> tuple[dict[str, bool], dict[str, bool]]:
    """Per vertebra ``genant_N`` raised, per pair ``slip`` raised, from :func:`measure_image` rows (the sure flags;
    ``possible_`` ones not counted: ``benchmarks/pathology_flags.py`` scores every operating point)."""
    genant = {r.level: any(f.startswith("genant_") for f in r.flags.split(";")) for r in rows
              if r.measure == "genant_grade"}
    slip = {r.level: "slip" in r.flags.split(";") for r in rows if r.measure == "listhesis"}
    return genant, slip


def score_variant(jobs, card, inflation: float, truth: dict, phantoms: dict) -> dict:
    """P2P by vertebra kind and flag sensitivity/specificity for one prior weight."""
    decoded = decode_jobs(jobs, card, replace(card.decode, prior_inflation=inflation))
    errors = {"normal": [], "fractured": [], "slipped": []}
    flags = {"genant": [], "slip": []}  # (true, found) pairs
    for image, vertebrae in decoded.items():
        record, meta = truth[image], phantoms[image]
        names = [v.name for v in vertebrae]
        known = {v.name: v for v in record.vertebrae}
        slip_pair = set()
        if meta.get("listhesis"):
            level = meta["listhesis"][0]
            if level in names and names.index(level) + 1 < len(names):
                slip_pair = {level, names[names.index(level) + 1]}
        for v in vertebrae:
            p2p = np.hypot(*(v.xy - known[v.name].corners).T).mean() * record.pixel_spacing_mm
            kind = "fractured" if v.name == meta.get("fracture") else "slipped" if v.name in slip_pair else "normal"
            errors[kind].append(p2p)
        xy = np.stack([v.xy for v in vertebrae])
        cov = np.stack([v.cov for v in vertebrae])
        rows = measure_image(ImageCorners(image, tuple(names), xy, cov, np.ones(xy.shape[:2], bool)),
                             record.pixel_spacing_mm)
        genant, slip = found_flags(rows)
        true_genant, true_slip = truth_flags(np.stack([known[n].corners for n in names]), record.pixel_spacing_mm)
        flags["genant"] += [(bool(t), genant[n]) for n, t in zip(names, true_genant, strict=True)]
        flags["slip"] += [(bool(t), slip[f"{a}-{b}"]) for a, b, t in zip(names[:-1], names[1:], true_slip, strict=True)
                          if f"{a}-{b}" in slip]
    out = {f"p2p_{kind}": float(np.mean(e)) if e else float("nan") for kind, e in errors.items()}
    out.update(operating_points(decoded, truth))
    out.update({f"n_{kind}": len(e) for kind, e in errors.items()})
    for name, pairs in flags.items():
        pairs = np.array(pairs, dtype=bool).reshape(-1, 2)
        positive, negative = pairs[pairs[:, 0]], pairs[~pairs[:, 0]]
        out[f"{name}_positives"] = len(positive)
        out[f"{name}_sensitivity"] = float(positive[:, 1].mean()) if len(positive) else float("nan")
        out[f"{name}_specificity"] = float(1 - negative[:, 1].mean()) if len(negative) else float("nan")
    return out


def operating_points(decoded: dict, truth: dict) -> dict:
    """How far the found corners shrink a deformity, and the sensitivity / specificity a plain threshold on the
    found height loss (or slip) would give: the ceiling of any flag rule on these corners."""
    found_loss, true_loss, found_slip, true_slip = [], [], [], []
    for image, vertebrae in decoded.items():
        record = truth[image]
        known = {v.name: v for v in record.vertebrae}
        xy = np.stack([v.xy for v in vertebrae])[None]
        annotated = np.stack([known[v.name].corners for v in vertebrae])[None]
        found_loss += list(d.height_loss(d.heights(xy))[0])
        true_loss += list(d.height_loss(d.heights(annotated))[0])
        found_slip += list(np.abs(d.listhesis(xy)[0][0]) * record.pixel_spacing_mm)
        true_slip += list(np.abs(d.listhesis(annotated)[0][0]) * record.pixel_spacing_mm)
    found_loss, true_loss, found_slip, true_slip = map(np.array, (found_loss, true_loss, found_slip, true_slip))
    deformed, slipped = true_loss >= 0.2, true_slip >= SLIP_MM
    out = {"loss_of_deformed_found_median": float(np.median(found_loss[deformed])) if deformed.any() else 0.0,
           "loss_of_deformed_true_median": float(np.median(true_loss[deformed])) if deformed.any() else 0.0}
    for threshold in (0.20, 0.15, 0.12):
        out[f"loss>={threshold:g}"] = (float(np.mean(found_loss[deformed] >= threshold)),
                                       float(np.mean(found_loss[~deformed] < threshold)))
    for threshold in (3.0, 2.0, 1.5):
        out[f"slip>={threshold:g}"] = (float(np.mean(found_slip[slipped] >= threshold)),
                                       float(np.mean(found_slip[~slipped] < threshold)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="A phantom set (default: fresh phantoms).")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=290029)
    parser.add_argument("--inflation", type=float, nargs="+", default=[4.0, 16.0, 64.0, 1e6])
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="vcorner-deformity-"))
    if args.data is None:
        synthesize_dataset(data, args.images, seed=args.seed, workers=2)
    records = read_annotations(data / "annotations.json")
    phantoms = {m["file"]: m for m in json.loads((data / "phantoms.json").read_text())["images"]}
    runner, resolved = open_model(ModelRequest(default_model_path(), precision="fp32"))
    with runner:
        jobs = infer_records(data, records, runner, resolved.card)
    truth = {r.file: r for r in records}
    lines = ["| prior inflation | P2P normal | P2P fractured | P2P slipped | Genant >= 1 sens / spec | "
             "slip >= 3 mm sens / spec |", "|---|---|---|---|---|---|"]
    points = ["| prior inflation | found height loss of deformed vertebrae (median) | sens / spec at found loss "
              ">= 20% | >= 15% | >= 12% | found slip >= 3 mm | >= 2 mm | >= 1.5 mm |",
              "|---|---|---|---|---|---|---|---|"]
    for inflation in args.inflation:
        s = score_variant(jobs, resolved.card, inflation, truth, phantoms)
        lines.append(f"| {inflation:g}{' (shipped)' if inflation == resolved.card.decode.prior_inflation else ''} | "
                     f"{s['p2p_normal']:.3f} mm ({s['n_normal']}) | {s['p2p_fractured']:.3f} mm ({s['n_fractured']}) | "
                     f"{s['p2p_slipped']:.3f} mm ({s['n_slipped']}) | {s['genant_sensitivity']:.0%} / "
                     f"{s['genant_specificity']:.1%} ({s['genant_positives']}) | {s['slip_sensitivity']:.0%} / "
                     f"{s['slip_specificity']:.1%} ({s['slip_positives']}) |")
        points.append(f"| {inflation:g} | {s['loss_of_deformed_found_median']:.1%} (true "
                      f"{s['loss_of_deformed_true_median']:.1%}) | "
                      + " | ".join(f"{s[k][0]:.0%} / {s[k][1]:.1%}" for k in ("loss>=0.2", "loss>=0.15", "loss>=0.12",
                                                                           "slip>=3", "slip>=2", "slip>=1.5")) + " |")
    table = "\n".join(lines) + "\n\n" + "\n".join(points) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deformity_causes.md").write_text(
        f"{len(jobs)} phantoms of seed {args.seed} ({data}); model {default_model_path().name} (FP32); corners "
        f"{', '.join(CORNER_NAMES)}; (n) = vertebrae, or true positives for the flags\n\n{table}", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
