"""Automatic centres in a batch: the detector bound to its runner, and ``OUT/centers.detected.csv``, the journal
of the centres it found (README.md, "Automatic centres").

The journal has the columns of ``centers.csv`` plus ``confidence``, the image's ``view`` (the candidate view the
detector found the spine in, :mod:`vcorner.geometry.views`), its ``naming_margin`` and its image-level ``flags``
(so ``vcorner batch --centers OUT/centers.detected.csv`` reruns on the same centres and views, and a person can
correct them first). Each image's rows
are appended and fsynced before its corners are, so a resumed run reuses the centres of every image it detected
instead of detecting it again, and its corners are complete or redone, never half kept.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vcorner.geometry.patches import build_pyramid
from vcorner.geometry.sequence import checked_record
from vcorner.io.atomic import write_text_atomic
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, InputError, Vertebra, checked_view
from vcorner.io.spreadsheet import neutralise, restore
from vcorner.models.detector_card import DetectorCard
from vcorner.pipeline.outputs import append_synced, csv_text
from vcorner.stages.detect import DetectedCentres, Finder, Infer, detect_centres
from vcorner.stages.plan import Plan, PlannedImage
from vcorner.stages.prepare import VIEW_CONTRADICTED, record_side, side_flags

DETECTED_FILE = "centers.detected.csv"
DETECTED_COLUMNS = ("image", "vertebra", "x", "y", "pixel_spacing_mm", "confidence", "view", "naming_margin", "flags")
IMAGE_FLAGS = ("levels_uncertain", "view_uncertain", VIEW_CONTRADICTED)
"""The image-level flags a journal's ``flags`` column may hold (README.md, "Flags")."""
EARLIER_COLUMNS = DETECTED_COLUMNS[:6]
"""The journal's columns before views and flags (vcorner 0.x up to issue #33): still read on resume."""


@dataclass(frozen=True)
class DetectorChoice:
    """The centre detector a batch runs, decided once (:func:`resolve_detector`) and handed as a value to whatever
    opens it (the local batch, every Ray actor): its file, card and SHA-256, and the view finder its card names
    (empty when its card names none), and the second namer it names (``detection.second_namer``: it names the films
    whose levels this detector is unsure of). With ``view_search`` off the finder looks at the film as it is only: it
    checks that a spine is there, and picks no view.
    """

    path: str
    card: DetectorCard
    sha256: str
    finder_path: str = ""
    finder_card: DetectorCard | None = None
    finder_sha256: str = ""
    view_search: bool = True
    second_path: str = ""
    second_card: DetectorCard | None = None
    second_sha256: str = ""

    @property
    def identity(self) -> str:
        """What a resumed run must match: the detector's SHA-256, ``+`` the view finder's when it has one, and ``+``
        its second namer's when it has one."""
        finder = [self.finder_sha256] if self.finder_card is not None else []
        second = [self.second_sha256] if self.second_card is not None else []
        return "+".join([self.sha256, *finder, *second])

    def describe(self) -> dict:
        """The ``run.json`` entry: file, SHA-256, names, input size, confidence threshold and views searched."""
        searched = self.finder_card if self.finder_card is not None else self.card
        views = list(searched.detection.views) if self.view_search else ["as_is"]
        return {"path": self.path, "sha256": self.sha256, "names": list(self.card.names),
                "input_size": self.card.detection.input_size, "min_confidence": self.card.detection.min_confidence,
                **({"input_width": self.card.detection.input_width} if self.card.detection.input_width else {}),
                "views": views,
                **({"view_finder": {"path": self.finder_path, "sha256": self.finder_sha256}}
                   if self.finder_card is not None else {}),
                **({"second_namer": {"path": self.second_path, "sha256": self.second_sha256,
                                     "min_confidence": self.second_card.detection.min_confidence}}
                   if self.second_card is not None else {})}


def resolve_detector(path: Path, view_search: bool = True) -> DetectorChoice:
    """The detector of ``path``, checked, with the view finder and the second namer its card names
    (``detection.view_finder``, ``detection.second_namer``: files beside it). With ``view_search`` off (films known
    to be in the learned pose) they look at the films as they are: the finder then only checks that each shows a
    spine. Nothing is opened.

    Raises:
        InputError: not a centre detector, or its view finder or second namer is missing or not one.
    """
    from vcorner.backends import open_detector

    runner, card = open_detector(Path(path))  # not entered: reads and verifies the card only
    if not card.detection.view_finder:
        return DetectorChoice(str(path), card, runner.identity(), view_search=view_search)
    finder_path, finder_card, finder_sha256 = _beside(
        path, card.detection.view_finder, "the view finder", "it checks that each film shows a spine, with "
        "--no-view-search too: put it back beside the detector")
    second_path, second_card, second_sha256 = "", None, ""
    if card.detection.second_namer:
        second_path, second_card, second_sha256 = _beside(path, card.detection.second_namer, "the second namer",
                                                          "put it back beside the detector")
    return DetectorChoice(str(path), card, runner.identity(), finder_path, finder_card, finder_sha256, view_search,
                          second_path, second_card, second_sha256)


def _beside(path: Path, name: str, what: str, hint: str) -> tuple[str, DetectorCard, str]:
    """The path, verified card and SHA-256 of the detector file ``name`` that ``path``'s card names beside it.

    Raises:
        InputError: naming ``what`` it is and the ``hint``, when it is missing or not a centre detector.
    """
    from vcorner.backends import open_detector

    beside = Path(path).parent / name
    try:
        runner, card = open_detector(beside)  # not entered: reads and verifies the card only
    except InputError as err:
        raise InputError(f"{what} named by {Path(path).name}'s card: {err} ({hint})") from None
    return str(beside), card, runner.identity()


@dataclass(frozen=True)
class DetectorUse:
    """A :class:`DetectorChoice` open: its runner's ``infer``, and its view finder's and second namer's beside it
    (None when the choice has none); called as the prepare stage's ``Detect``."""

    choice: DetectorChoice
    infer: Infer
    finder_infer: Infer | None = None
    second_infer: Infer | None = None
    extend: bool = False
    """Guess the names just past the detected run's ends for the corner model to confirm (a batch's; not
    ``vcorner detect``'s, which has no corner model): :func:`vcorner.stages.detect.run_extension`."""

    @property
    def card(self) -> DetectorCard:
        """The detector's card."""
        return self.choice.card

    @property
    def finder(self) -> Finder | None:
        """The view finder's card and ``infer`` (None: films are looked at as they are)."""
        if self.finder_infer is None or self.choice.finder_card is None:
            return None
        return self.choice.finder_card, self.finder_infer

    @property
    def second(self) -> Finder | None:
        """The second namer's card and ``infer`` (None: none)."""
        if self.second_infer is None or self.choice.second_card is None:
            return None
        return self.choice.second_card, self.second_infer

    def __call__(self, pyramid: list[np.ndarray], shape: tuple[int, int], file: str,
                 spacing_mm: float | None) -> DetectedCentres:
        """:func:`vcorner.stages.detect.detect_centres` with this detector (a ``Detect`` of the prepare stage)."""
        return detect_centres(pyramid, shape, file, spacing_mm, self.card, self.infer, self.finder,
                              self.choice.view_search, self.second, self.extend)


@contextmanager
def open_detector_use(choice: DetectorChoice, threads: int = 1, extend: bool = False) -> Iterator[DetectorUse]:
    """``choice`` open: the detector's ONNX Runtime session, its view finder's and its second namer's, each with
    ``threads`` intra-op threads (1: a batch's loaders, and ``vcorner detect``'s threads, detect one film per core
    side by side); ``extend``: see :attr:`DetectorUse.extend`.

    Raises:
        InputError: the files changed since they were chosen (their checksums no longer match).
    """
    from vcorner.backends import open_detector

    with ExitStack() as stack:
        opened = [stack.enter_context(open_detector(Path(path), threads=threads)[0]) if path else None
                  for path in (choice.path, choice.finder_card and choice.finder_path,
                               choice.second_card and choice.second_path)]
        yield DetectorUse(choice, *(r.infer if r is not None else None for r in opened), extend=extend)


def detected_rows(found: DetectedCentres) -> list[list[str]]:
    """The journal rows of one image: its confident detections as found, cranial first."""
    record, spacing = found.listed, found.listed.pixel_spacing_mm
    margin = "" if not np.isfinite(found.naming_margin) else f"{found.naming_margin:.4f}"
    return [[neutralise(record.file), neutralise(v.name), f"{v.center[0]:.3f}", f"{v.center[1]:.3f}",
             "" if spacing is None else f"{spacing:.6g}", f"{found.confidence[v.name]:.4f}", found.view, margin,
             ";".join(found.flags)]
            for v in record.vertebrae]


class DetectedJournal:
    """Appends each detected image's centres to ``OUT/centers.detected.csv``; reads those of an earlier run.

    Args:
        path: the journal file.
        resume: keep the earlier run's rows (else start afresh).

    Attributes:
        records: image -> its detected centres (as listed, before the sequence checks).
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = Path(path)
        rows = read_journal_rows(self.path) if resume else {}
        records = {image: journal_record(image, group) for image, group in rows.items()}
        self.records = {image: record for image, record in records.items() if record is not None}
        kept = [r for image, group in rows.items() if image in self.records for r in group]  # the rest: detected again
        write_text_atomic(self.path, csv_text(kept, DETECTED_COLUMNS))
        self.handle = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())

    def add(self, found: DetectedCentres) -> None:
        """Append one image's detections in a single write, then flush and fsync."""
        append_synced(self.handle, detected_rows(found))
        self.records[found.listed.file] = found.listed

    def close(self) -> None:
        self.handle.close()


def read_journal_rows(path: Path) -> dict[str, list[list[str]]]:
    """Complete rows of an existing journal grouped by image (as written; a partial last line dropped)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    grouped: dict[str, list[list[str]]] = {}
    for row in csv.reader(io.StringIO(text[: text.rfind("\n") + 1])):
        if len(row) in (len(DETECTED_COLUMNS), len(EARLIER_COLUMNS)) and row[0] != "image" and _finite(row[2], row[3]):
            grouped.setdefault(restore(row[0]), []).append(row)
    return grouped


def _finite(*values: str) -> bool:
    try:
        return all(np.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def journal_record(image: str, rows: list[list[str]]) -> ImageRecord | None:
    """The record of one image's journal rows (None when their view is unreadable)."""
    spacing = next((float(r[4]) for r in rows if r[4] and _finite(r[4])), None)
    try:
        view = checked_view(rows[0][6] if len(rows[0]) > 6 else "")
    except InputError:
        return None  # not a view vcorner wrote: the image is detected again
    flags = tuple(f for f in (rows[0][8].split(";") if len(rows[0]) > 8 else ()) if f in IMAGE_FLAGS)
    return ImageRecord(image, tuple(Vertebra(restore(r[1]), np.array([float(r[2]), float(r[3])])) for r in rows),
                       spacing, view, flags)


def with_detected(plan: Plan, journal: DetectedJournal) -> Plan:
    """``plan`` with the centres an earlier run detected filled in for the images it lists without centres
    (checked like clicked centres: the same vertebrae are left out, with the same reasons)."""
    images, refused, left_out = [], dict(plan.refused), dict(plan.refused_vertebrae)
    for item in plan.images:
        found = journal.records.get(item.record.file) if not item.record.vertebrae else None
        if found is None:
            images.append(item)
            continue
        try:
            record, dropped = checked_record(found)
        except InputError as err:
            refused[item.record.file] = f"detected centres fail the sequence checks: {err}"
            continue
        left_out.update({(record.file, name): reason for name, reason in dropped.items()})
        images.append(PlannedImage(replace(record, pixel_spacing_mm=item.record.pixel_spacing_mm
                                           or record.pixel_spacing_mm), item.path))
    return replace(plan, images=images, refused=refused, refused_vertebrae=left_out)


@dataclass
class FolderDetections:
    """What ``vcorner detect`` found: per image its detections, or why none could be used."""

    found: list[DetectedCentres]
    failed: dict[str, str]
    seconds: float = 0.0

    @property
    def dropped(self) -> int:
        """Detections below the confidence threshold, over all images."""
        return sum(len(f.dropped) for f in self.found)


def detect_folder(plan: Plan, detector: DetectorUse, max_pixels: int | None = None,
                  advance: Callable[[], None] = lambda: None, side_check: bool = False,
                  workers: int = 1) -> FolderDetections:
    """Decode every planned image once and find its centres on ``workers`` threads (``advance`` is called after each
    image; the results keep the plan's order); with ``side_check`` (a corner model card's ``trust.side_check``) a
    film whose anatomy contradicts the view it was named in is flagged ``view_contradicted``, as ``vcorner batch``
    flags it (:func:`vcorner.stages.prepare.side_flags`).

    An unreadable image, or one where the detector finds fewer than two confident vertebrae ("no vertebrae
    found") or a sequence that fails the centre checks, goes to ``failed`` with its one-line reason.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(item) -> DetectedCentres | str:
        try:
            image = read_image(item.path) if max_pixels is None else read_image(item.path, max_pixels=max_pixels)
            pyramid = build_pyramid(image.pixels)
            found = detector(pyramid, image.pixels.shape, item.record.file, image.pixel_spacing_mm)
            if side_check:
                found = replace(found, flags=side_flags(found.flags, record_side(pyramid, found.record), True))
            return found
        except InputError as err:
            return str(err)
        except (OSError, ValueError, MemoryError) as err:
            return f"cannot process: {err}"

    began, result = time.perf_counter(), FolderDetections([], dict(plan.refused))
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="vcorner-detect") as pool:
        for item, found in zip(plan.images, pool.map(one, plan.images), strict=True):
            if isinstance(found, str):
                result.failed[item.record.file] = found
            else:
                result.found.append(found)
            advance()
    result.seconds = time.perf_counter() - began
    return result


def write_detected(path: Path, found: list[DetectedCentres]) -> None:
    """Write detections as a centres file with a ``confidence`` column, atomically."""
    write_text_atomic(Path(path), csv_text([row for f in found for row in detected_rows(f)], DETECTED_COLUMNS))
