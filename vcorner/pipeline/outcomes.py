"""What a batch hands between its stages and back to its caller: one image's outcome (:class:`Finished` or
:class:`Failed`), the run's :class:`BatchSummary`, and the :class:`Progress` callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field

from vcorner.io.records import ImageRecord
from vcorner.pipeline.outputs import row_flags
from vcorner.stages.detect import DetectedCentres


@dataclass(frozen=True)
class Failed:
    """An image that cannot be answered, with the one-line reason recorded in ``errors.csv``."""

    image: str
    reason: str


@dataclass(frozen=True)
class Finished:
    """An image whose corners were found: its ``corners.csv`` rows and the patches it took."""

    image: str
    rows: list[list[str]]
    patches: int
    detected: DetectedCentres | None = None
    """The detector's centres of an image listed without any (written to ``OUT/centers.detected.csv``)."""


Outcome = Finished | Failed
"""One image's answer, as the one writer records it."""


@dataclass
class BatchSummary:
    """What a batch did."""

    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    refused_vertebrae: dict[tuple[str, str], str] = field(default_factory=dict)
    """Vertebrae left out of images that were answered ((image, vertebra) -> reason)."""
    patches: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    redone: int = 0
    """Images done again on resume because their centres changed or requested extras were missing."""
    earlier: tuple[dict[str, str], dict[tuple[str, str], str]] = ({}, {})
    """errors.csv entries of images an earlier run listed and this run does not plan: kept, not counted."""
    interrupted: bool = False
    """Stopped by Ctrl-C (SIGINT): what was finished is written, the rest is left for a resumed run."""
    detected_records: list[ImageRecord] = field(default_factory=list)
    """The checked centres of the images whose centres the detector found in this run (for ``run.json``)."""
    dropped: int = 0
    """Detections below the detector's confidence threshold, not used."""
    turned: dict[str, int] = field(default_factory=dict)
    """View (other than ``as_is``) -> images the detector found in it in this run (:mod:`vcorner.geometry.views`)."""
    renamed: int = 0
    """Images the detector's second namer named in this run (the first unsure of their levels)."""
    extended: int = 0
    """Vertebrae found past an end of a detected run in this run: guessed, then confirmed by the corner model
    (:func:`vcorner.stages.finish.confirmed_guesses`)."""
    unconfirmed: int = 0
    """Names guessed past an end of a detected run that the corner model did not confirm (dropped, not errors)."""
    filled: int = 0
    """Vertebrae found between two names of a detected run in this run: guessed midway, then confirmed by the corner
    model (:func:`vcorner.stages.detect.run_holes`)."""
    unfilled: int = 0
    """Names guessed between two names of a detected run that the corner model did not confirm."""
    flags: dict[str, list[int]] = field(default_factory=dict)
    """flag -> [images, vertebrae] of this run's answered images carrying it (README.md, "Flags")."""

    def count_flags(self, rows: list[list[str]]) -> None:
        """Add one answered image's ``corners.csv`` rows to :attr:`flags`."""
        for flag, vertebrae in row_flags(rows).items():
            images, total = self.flags.get(flag, [0, 0])
            self.flags[flag] = [images + 1, total + vertebrae]

    def note_detected(self, found: DetectedCentres) -> None:
        """Count an image's detected centres: the detections below the threshold, its view, whether the second
        namer named it, the vertebrae guessed past its run's ends or between its names (confirmed or not), and those
        the centre checks left out."""
        self.detected_records.append(found.record)
        self.dropped += len(found.dropped)
        self.renamed += found.second_namer
        self.extended += sum(n not in found.filled for n in found.extended)
        self.unconfirmed += sum(n not in found.filled for n in found.unconfirmed)
        self.filled += sum(n in found.filled for n in found.extended)
        self.unfilled += sum(n in found.filled for n in found.unconfirmed)
        if found.view != "as_is":
            self.turned[found.view] = self.turned.get(found.view, 0) + 1
        self.refused_vertebrae.update({(found.record.file, k): v for k, v in found.left_out.items()})

    @property
    def detected(self) -> int:
        """Images whose centres the detector found in this run."""
        return len(self.detected_records)


class Progress:
    """Progress callbacks (the CLI shows a bar; tests use the default that does nothing)."""

    def start(self, images: int) -> None: ...
    def image_done(self, patches: int) -> None: ...
