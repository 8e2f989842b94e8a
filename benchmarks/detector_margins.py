"""Set an exported centre detector's flag margins on in-style validation films, and optionally the view finder it
searches views with (README.md, "Orientation, polarity and naming").

The margins are chosen as at the end of ``vcorner train`` (:func:`vcorner.training.detector_trainer.choose_margins`:
the 1st percentile of the validation films' own naming margin, and view lead when the detector searches views
itself), through the same view search and naming as a batch. With ``--write`` the detector's card (its sidecar and
its ONNX metadata) is rewritten with them and with ``--finder``'s file name.

    python benchmarks/detector_margins.py DETECTOR.onnx VALDATA [VALDATA ...] [--finder FINDER.onnx --align 15] \
        [--write]

Each VALDATA must be of the training style (``vcorner synth VALDATA --images 100 --seed 6161``), never the holdout;
several folders are pooled (the 1st percentile of 100 films is nearly their minimum, so one seed's tail decides it).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import onnx

from vcorner.backends import open_detector
from vcorner.export.fp16 import set_card_metadata
from vcorner.models.modelfile import write_sidecar
from vcorner.training.detector_data import load_detector_images
from vcorner.training.detector_trainer import choose_margins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("detector", type=Path)
    parser.add_argument("data", type=Path, nargs="+", help="In-style validation films (vcorner synth, training "
                                                           "style), one or more folders pooled.")
    parser.add_argument("--finder", type=Path, help="A detector trained on several views, beside DETECTOR.")
    parser.add_argument("--align", type=float, default=0.0,
                        help="With --finder: turn views whose spine leans more than this (degrees) from the median "
                             "lean of DETECTOR's names back to it before naming (0: never).")
    parser.add_argument("--view-turns", type=float, nargs="+", metavar="DEG",
                        help="Set the card's view_turns_deg first (its view search votes over the film turned by "
                             "each), so that the view margin is chosen on the same vote.")
    parser.add_argument("--write", action="store_true", help="Rewrite DETECTOR's card with the margins.")
    args = parser.parse_args()
    for data in args.data:
        if json.loads((data / "phantoms.json").read_text()).get("style", "train") == "holdout":
            parser.error("the holdout style is for validation only: choose margins on training-style films")
    runner, card = open_detector(args.detector)
    if args.view_turns is not None:
        card = card.with_detection(replace(card.detection, view_turns_deg=tuple(args.view_turns)))
    finder = open_detector(args.finder) if args.finder else None
    with runner:
        images = [im for data in args.data for im in load_detector_images(data, card.detection.input_shape, 1.0)]
        searcher = None
        if finder is not None:
            finder[0].__enter__()
            searcher = (finder[1], finder[0].infer)
        detection, chosen = choose_margins(runner.infer, images, card, searcher)
        if finder is not None:
            finder[0].__exit__(None, None, None)
    detection = replace(detection, view_finder=args.finder.name if args.finder else card.detection.view_finder,
                        align_deg=args.align if args.finder else card.detection.align_deg)
    print(json.dumps({"detection": {k: getattr(detection, k) for k in ("view_margin", "naming_margin", "view_finder",
                                                                        "spine_angle_deg", "align_deg",
                                                                        "view_turns_deg")},
                      "chosen_on": chosen}, indent=1))
    if args.write:
        if args.finder and args.finder.resolve().parent != args.detector.resolve().parent:
            parser.error("--finder must lie beside the detector (its card names it by file name)")
        folders = " ".join(map(str, args.data))
        searched = f" --finder {args.finder.name} --align {args.align:g}" if args.finder else ""
        if args.view_turns is not None:
            searched += " --view-turns " + " ".join(f"{t:g}" for t in args.view_turns)
        new = replace(card.with_detection(detection), training={**card.training, "margins_chosen_on": {
            **chosen, "data": folders, "command": f"python benchmarks/detector_margins.py {args.detector.name} "
                                                  f"{folders}{searched}"}})
        model = onnx.load(str(args.detector))
        set_card_metadata(model, new)
        onnx.save(model, str(args.detector))
        write_sidecar(args.detector, new)
        print(f"wrote the card of {args.detector}")


if __name__ == "__main__":
    main()
