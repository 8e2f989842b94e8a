"""Corners and flags on deformed vertebrae (issue #29): decoding variants of one model on one annotated set.

The network runs once; every decoding variant then goes through the batch's own last stage
(:func:`vcorner.stages.finish.finish`: prior-weighted quadrant search, the trust's ellipses) and the measurements
(:func:`vcorner.measure.intervals.measure_image`, with the flags). Per variant: mean P2P (mm) of normal and of deformed
vertebrae (Genant grade >= 1 or beside a slip >= 3 mm, by the annotated corners), sensitivity / specificity of each
flag operating point (:data:`vcorner.measure.compare.FLAG_TESTS`) and of the found value, MAE and 95%-interval
coverage of heights, listhesis and angles. Appends a markdown table to ``--out``.

    python benchmarks/pathology_flags.py DATA [--model M] [--variant NAME:key=value,...] [--truth] [--out FILE]

``DATA`` holds annotations.json and its images (``vcorner synth DATA --pathology clinical ...``); a variant
replaces fields of the model card's ``decode`` (e.g. ``sharp64:prior_sharp_inflation=64``; ``corner_offset=0``
decodes without the fitted offset); ``shipped`` is the card's own. ``--truth`` scores against ``DATA/truth.json``
(the anatomy, without the annotator's click spread) and prints what the clicks themselves score there. Where the
card knows its reader's spread (``trust.reader_sd_mm``), the last column gives the coverage of the anatomy intervals
(``anatomy_ci95_low/high`` of measurements.csv): against ``truth.json`` they should hold about 95%.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vcorner.backends import ModelRequest
from vcorner.cli.common import open_model
from vcorner.evaluation.tune import infer_records
from vcorner.io.annotations import read_annotations
from vcorner.io.spacing import common_unit, spacing_in
from vcorner.measure.compare import (
    compare_measurements,
    deformed_vertebrae,
    detection,
    flag_detection,
    truth_measurements,
)
from vcorner.measure.intervals import GENANT_POSSIBLE_PERCENTILE, SLIP_POSSIBLE_PERCENTILE, ImageCorners, measure_image
from vcorner.models.modelfile import default_model_path
from vcorner.stages.finish import finish

MEASURES = {"heights": ("anterior_height", "middle_height", "posterior_height"), "listhesis": ("listhesis",),
            "angles": ("segmental_angle", "global_angle")}


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value,...`` -> (name, {key: float value})."""
    name, _, fields = text.partition(":")
    values = {k: float(v) for k, v in (f.split("=") for f in fields.split(",") if f)}
    if values.get("corner_offset") == 0:  # corner_offset=0: decode without the card's fitted offset
        values["corner_offset"] = ()
    return name, values


def grouped(per: dict, group: str, key: str) -> float:
    """``key`` (``mae``, ``coverage_95``) of :func:`vcorner.measure.compare.compare_measurements`'s rows of the
    measures of ``group`` (:data:`MEASURES`), weighted by their counts."""
    rows = [per[n] for n in MEASURES[group] if n in per]
    return sum(r[key] * r["n"] for r in rows) / sum(r["n"] for r in rows)


def decode_all(jobs, card, decode, reference: dict | None = None) -> tuple[list[ImageCorners], dict]:
    """The batch's corners of every job under ``decode`` (as measure reads them) and each vertebra's P2P, mm, against
    its annotated corners, or against ``reference`` ({file: record}, e.g. ``truth.json``'s) when given."""
    variant = replace(card, decode=decode)
    images, p2p = [], {}
    for job, record in jobs:
        corners, _ = finish(job, variant)
        known = {v.name: v for v in (reference[record.file] if reference else record).vertebrae}
        for v in corners:
            p2p[(record.file, v.name)] = float(np.hypot(*(v.xy - known[v.name].corners).T).mean()
                                               * record.pixel_spacing_mm)
        images.append(ImageCorners(record.file, tuple(v.name for v in corners), np.stack([v.xy for v in corners]),
                                   np.stack([v.cov for v in corners]),
                                   np.array([[s == "network" for s in v.source] for v in corners]),
                                   tuple(v.flags for v in corners)))
    return images, p2p


def score(images: list[ImageCorners], p2p: dict, records, possible: tuple[float, float],
          reader_sd_mm: float = 0.0) -> dict:
    """P2P by vertebra kind, flags (``possible``: the percentiles of the ``possible_`` flags of Genant grades and
    slips, as :data:`vcorner.measure.intervals.GENANT_POSSIBLE_PERCENTILE`) and measures of one decoding
    (``reader_sd_mm``: the card's reader spread, for the anatomy intervals' coverage)."""
    unit = common_unit(records)[0]
    by_file = {r.file: r for r in records}
    predicted = [row for image in images for row in measure_image(image, spacing_in(unit, by_file[image.image]),
                                                                  possible=possible, reader_sd_mm=reader_sd_mm)]
    truth = truth_measurements(records, unit=unit)
    deformed = deformed_vertebrae(truth)
    per = compare_measurements(predicted, truth)
    out = {"p2p_all": np.mean(list(p2p.values())),
           "p2p_normal": np.mean([e for k, e in p2p.items() if k not in deformed]),
           "p2p_deformed": np.mean([e for k, e in p2p.items() if k in deformed]),
           "n_normal": sum(k not in deformed for k in p2p), "n_deformed": sum(k in deformed for k in p2p),
           "flags": flag_detection(predicted, truth), "value": detection(predicted, truth)}
    for group in MEASURES:
        out[f"{group}_mae"] = grouped(per, group, "mae")
        out[f"{group}_coverage"] = grouped(per, group, "coverage_95")
        anatomy = {m: r for m, r in per.items() if r["coverage_anatomy"] is not None}
        known = [n for n in MEASURES[group] if n in anatomy]
        out[f"{group}_anatomy"] = grouped(anatomy, group, "coverage_anatomy") if known else float("nan")
    out["coverage_min"] = min(r["coverage_95"] for r in per.values() if r["unit"] != "grade")
    out["anatomy_min"] = min((r["coverage_anatomy"] for r in per.values()
                              if r["unit"] != "grade" and r["coverage_anatomy"] is not None), default=float("nan"))
    return out


def annotator_floor(records, reference: dict) -> dict:
    """MAE of each measure group of the annotated (clicked) corners against ``reference`` ({file: record}): the error
    a perfect corner finder would show when it is scored against the clicks instead of the anatomy."""
    unit = common_unit(records)[0]
    per = compare_measurements(truth_measurements(records, unit=unit),
                               truth_measurements([reference[r.file] for r in records], unit=unit))
    return {group: grouped(per, group, "mae") for group in MEASURES}


def _pct(row: dict) -> str:
    s, p = row["sensitivity"], row["specificity"]
    sens = f"{s:.0%}" if s is not None else "n/a"
    spec = f"{p:.1%}" if p is not None else "n/a"
    return f"{sens} / {spec} ({row['positives']})"


def _num(value: float, form: str) -> str:
    """``value`` in ``form``, or ``n/a`` when it is not finite (no vertebra of that kind: a mean over none)."""
    return format(value, form) if value is not None and np.isfinite(value) else "n/a"


def _line(label: str, s: dict) -> str:
    """One markdown row of :func:`score`'s figures."""
    f, v = s["flags"], s["value"]
    rates = (f["genant_N (Genant grade >= 1)"], f["genant_N or possible_genant_N"], v["genant_grade>=1"],
             f["slip (>= 3 mm)"], f["slip or possible_slip"], v["slip>=3mm"])
    return (f"| {label} | {_num(s['p2p_all'], '.3f')} | {_num(s['p2p_normal'], '.3f')} ({s['n_normal']}) | "
            f"{_num(s['p2p_deformed'], '.3f')} ({s['n_deformed']}) | "
            + " | ".join(_pct(r) for r in rates)
            + f" | {_num(s['heights_mae'], '.3f')} / {_num(s['heights_coverage'], '.1%')} | "
              f"{_num(s['listhesis_mae'], '.3f')} / {_num(s['listhesis_coverage'], '.1%')} | "
              f"{_num(s['angles_mae'], '.2f')} / {_num(s['angles_coverage'], '.1%')} | "
              f"{_num(s['coverage_min'], '.1%')} | {_num(s['heights_anatomy'], '.1%')} / "
              f"{_num(s['listhesis_anatomy'], '.1%')} / {_num(s['angles_anatomy'], '.1%')} "
              f"({_num(s['anatomy_min'], '.1%')}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--variant", nargs="*", default=["shipped:"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pathology_flags.md")
    parser.add_argument("--label", default="")
    parser.add_argument("--possible", type=float, nargs="*", default=None,
                        help="percentiles of the draws that raise a possible_ flag, for both flags (one row each; "
                             "default: the shipped GENANT_ and SLIP_POSSIBLE_PERCENTILE)")
    parser.add_argument("--pair", type=float, nargs=2, default=(GENANT_POSSIBLE_PERCENTILE, SLIP_POSSIBLE_PERCENTILE),
                        metavar=("GENANT", "SLIP"), help="the two percentiles of one row when --possible is not given "
                                                        "(default: the shipped ones)")
    parser.add_argument("--truth", action="store_true",
                        help="score against DATA/truth.json (the noise-free corners `vcorner synth` writes) instead of "
                             "the clicked annotations; the centres given to the model stay the clicked ones")
    args = parser.parse_args()
    model = args.model or default_model_path()
    records = read_annotations(args.data / "annotations.json")
    runner, resolved = open_model(ModelRequest(model, precision="fp32"))
    card = resolved.card
    began = time.perf_counter()
    with runner:
        jobs = infer_records(args.data, records, runner, card)
    lines = [f"\n{args.label} {len(jobs)} images of {args.data} ({args.data.name}); model {model.name}; "
             f"FP32, {resolved.describe()}; inference {time.perf_counter() - began:.0f} s; "
             "sens / spec (true positives); P2P in mm (vertebrae); MAE in mm and degrees\n",
             "| variant | P2P all | P2P normal | P2P deformed | genant_N | genant_N or possible | found grade >= 1 | "
             "slip | slip or possible | found slip >= 3 mm | heights MAE / cov | listhesis MAE / cov | "
             "angles MAE / cov | lowest coverage | anatomy intervals: heights / listhesis / angles (lowest) |",
             "|" + "---|" * 15]
    records = [r for _, r in jobs]
    reference = None
    if args.truth:
        reference = {r.file: r for r in read_annotations(args.data / "truth.json")}
        floor = annotator_floor(records, reference)
        lines[0] = lines[0].replace("; sens", "; scored against truth.json (noise-free corners); sens")
        lines.insert(1, "the clicked annotations themselves against truth.json (the annotator's floor), MAE: "
                        + ", ".join(f"{g} {v:.3f}" for g, v in floor.items()) + "\n")
        print(lines[1], flush=True)
        records = [reference[r.file] for r in records]
    for text in args.variant:
        name, fields = parse_variant(text)
        images, p2p = decode_all(jobs, card, replace(card.decode, **fields), reference)
        pairs = [(q, q) for q in args.possible] if args.possible else [tuple(args.pair)]
        for possible in pairs:
            label = f"{name} {fields or ''} possible at p{possible[0]:g} / p{possible[1]:g}"
            lines.append(_line(label, score(images, p2p, records, possible, card.trust.reader_sd_mm)))
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
