"""A batch run, decided once: the user's settings (:class:`BatchSettings`) apart from the run's identity
(:class:`BatchRun`: the plan, OUT, the model card and identity, the detector, the inference batch size, the
``run.json`` notes). An executor (:mod:`vcorner.pipeline.executor`) does the run's images; the one writer
(:mod:`vcorner.pipeline.session`) records them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vcorner.measure.table import READER_NOTE
from vcorner.models.card import ModelCard
from vcorner.pipeline.detection import DetectorChoice
from vcorner.stages.plan import Plan

CPU_BATCH, GPU_BATCH = 64, 256
"""Default patches per inference batch: on 2 CPU cores with 10 patches per image, 64 took 12.6-13.1 s for the 100
test phantoms against 16.5 s at 256 (the batch waits for fewer images); GPUs want large batches."""

Notes = tuple[tuple[str, str | float], ...]
"""(key, message) pairs recorded in ``OUT/run.json``."""

WARNING_NOTES = ("detector_validation", "validation")
"""Notes that are warnings for the user whenever present (``calibration`` is one unless it says calibrated)."""


@dataclass(frozen=True)
class BatchSettings:
    """What the user chose for a batch (``vcorner batch`` options), before any model or machine is known.

    Attributes:
        batch_size: patches per inference batch (None: :func:`inference_batch` decides from where inference runs).
        resume: skip images already in ``corners.csv`` (else earlier outputs move to ``previous-<time>/``).
        write_json: also write ``OUT/json/<image>.json``.
        vis: also write ``OUT/vis/<image>.png`` overlays.
        max_pixels: refuse larger images (None: the reader's default).
        workers: threads that decode images and cut patches, and as many that find corners (None: the cores
            CPU inference leaves, at least 1; one per core beside GPU inference, which leaves them idle).
        measure_labels: with ``vis``: label each vertebra of the overlays with its heights and slip, given the
            anterior side (``right``/``left``); ``ap`` for an AP film (its lateral tilt only); None for names only.
        queue_images: prepared images waiting for inference (and finished ones waiting to be written).
    """

    batch_size: int | None = None
    resume: bool = True
    write_json: bool = False
    vis: bool = False
    max_pixels: int | None = None
    workers: int | None = None
    measure_labels: str | None = None
    queue_images: int = 6


def inference_batch(wanted: int | None, on_gpu: bool) -> int:
    """Patches per inference batch: ``wanted`` (``--batch-size``), else :data:`GPU_BATCH` where inference runs on
    a GPU and :data:`CPU_BATCH` on a CPU. The one place this is decided."""
    return wanted or (GPU_BATCH if on_gpu else CPU_BATCH)


@dataclass(frozen=True)
class BatchRun:
    """One batch: what to do, with which model, into which folder; built once, read by the executors and the
    writer, never rebuilt.

    Attributes:
        plan: the images and their centres (:mod:`vcorner.stages.plan`).
        out: the output folder.
        card: the corner model's card (decoding constants, prior, patch sampling).
        settings: the user's settings.
        batch_size: patches per inference batch (:func:`inference_batch`).
        model_id: what runs, recorded in ``run.json``; resuming with another model is refused (None: unchecked).
        card_id: digest of ``card``; resuming with another card redoes every image (None: unchecked).
        detector: the centre detector of images listed without centres (None: every image needs clicked ones).
        notes: ``run.json`` notes (where the images are, warnings of the cards, the resolved model).
    """

    plan: Plan
    out: Path
    card: ModelCard
    settings: BatchSettings
    batch_size: int
    model_id: str | None = None
    card_id: str | None = None
    detector: DetectorChoice | None = None
    notes: Notes = ()

    @property
    def warnings(self) -> list[str]:
        """The notes a user must read (a detector or model that failed validation, uncalibrated ellipses)."""
        return [text for key, text in self.notes
                if key in WARNING_NOTES or (key == "calibration" and text != "calibrated")]


def card_notes(card: ModelCard, detector: DetectorChoice | None) -> Notes:
    """``run.json`` notes of the cards: the detector's failed validation, the model's calibration and its failed
    validation (each only when there is something to say, calibration always), and the reader's spread that gives
    measurements.csv its anatomy intervals (:data:`vcorner.measure.table.READER_NOTE`)."""
    found = detector.card.validation_warning() if detector is not None else None
    failed = card.validation_warning()
    reader = card.trust.reader_sd_mm
    return ((("detector_validation", found),) if found else ()) + (
        ("calibration", card.calibration_warning() or "calibrated"),) + ((("validation", failed),) if failed else ()) \
        + (((READER_NOTE, reader),) if reader > 0 else ())
