"""Signed corner errors of a model on an annotated set: are its corners inside or outside the true ones?

    python benchmarks/corner_bias.py DATA [--model M] [--variant NAME:key=value ...]

For every network corner (clicked centres as annotated, FP32): its error along the line from the vertebra's true
centre to the true corner (mm, + outward), the error of the four sides' lengths (mm, + longer), and the mean error
per corner in the vertebra's frame (sizes: x across, y along the spine; what ``DecodeConfig.corner_offset``
corrects), for normal and deformed vertebrae (Genant grade >= 1 or beside a slip >= 3 mm). A variant replaces fields
of the card's ``decode`` as in ``benchmarks/pathology_flags.py`` (``corner_offset=0``: without the fitted offset).
README.md, "The corner offset", quotes the shipped model's figures before the offset on seed 2929.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from pathology_flags import parse_variant

from vcorner.backends import ModelRequest
from vcorner.cli.common import open_model
from vcorner.evaluation.tune import infer_records
from vcorner.io.annotations import read_annotations
from vcorner.io.spacing import common_unit
from vcorner.measure.compare import deformed_vertebrae, truth_measurements
from vcorner.models.modelfile import default_model_path
from vcorner.stages.finish import finish


def side_lengths(corners: np.ndarray) -> np.ndarray:
    """(4,) lengths of the quadrilateral's sides, corners in ``CORNER_NAMES`` order (superior-left, superior-right,
    inferior-left, inferior-right): superior endplate, right wall, inferior endplate, left wall."""
    ring = corners[[0, 1, 3, 2]]
    return np.linalg.norm(ring - np.roll(ring, -1, axis=0), axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--variant", nargs="*", default=["shipped:"])
    args = parser.parse_args()
    records = read_annotations(args.data / "annotations.json")
    runner, resolved = open_model(ModelRequest(args.model or default_model_path(), precision="fp32"))
    with runner:
        jobs = infer_records(args.data, records, runner, resolved.card)
    deformed = deformed_vertebrae(truth_measurements(records, unit=common_unit(records)[0]))
    for text in args.variant:
        name, fields = parse_variant(text)
        card = replace(resolved.card, decode=replace(resolved.card.decode, **fields))
        rows: dict[bool, dict[str, list]] = {k: {"out": [], "side": [], "frame": []} for k in (False, True)}
        for job, record in jobs:
            corners, _ = finish(job, card)
            truth = {v.name: v.corners for v in record.vertebrae}
            mm = record.pixel_spacing_mm or 1.0
            for i, v in enumerate(corners):
                t, network = truth[v.name], np.array([s == "network" for s in v.source])
                if not network.all():
                    continue
                outward = (t - t.mean(axis=0)) / np.linalg.norm(t - t.mean(axis=0), axis=1, keepdims=True)
                kind = rows[(record.file, v.name) in deformed]
                kind["out"] += list(((v.xy - t) * outward).sum(axis=1) * mm)
                kind["side"] += list((side_lengths(v.xy) - side_lengths(t)) * mm)
                kind["frame"].append(job.frames.to_frame(i, v.xy) - job.frames.to_frame(i, t))
        print(f"{name} {fields or ''} on {args.data.name}:")
        for is_deformed, r in rows.items():
            if not r["out"]:
                continue
            frame = np.round(np.mean(r["frame"], axis=0), 4).tolist()
            print(f"  {'deformed' if is_deformed else 'normal'} ({len(r['frame'])} vertebrae): outward error mean "
                  f"{np.mean(r['out']):+.3f} mm (sd {np.std(r['out']):.3f}); side lengths {np.mean(r['side']):+.3f} mm "
                  f"(MAE {np.mean(np.abs(r['side'])):.3f}); mean error per corner in the frame, sizes: {frame}")


if __name__ == "__main__":
    main()
