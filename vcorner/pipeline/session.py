"""The one writer of a batch: ``corners.csv`` (a journal), ``centers.detected.csv``, ``errors.csv`` and
``run.json``, opened once per run (:meth:`OutputSession.open`), fed one image outcome at a time in plan order
(:meth:`OutputSession.record`) by whichever executor runs the images, and closed once (:meth:`OutputSession.close`)."""

from __future__ import annotations

import logging
from pathlib import Path

from vcorner.models.card import ModelCard
from vcorner.pipeline import manifest
from vcorner.pipeline.detection import DETECTED_FILE, DetectedJournal, with_detected
from vcorner.pipeline.outcomes import BatchSummary, Failed, Finished, Outcome, Progress
from vcorner.pipeline.outputs import CornerJournal, keep_previous, read_errors, remove_stale_extras, write_errors
from vcorner.pipeline.overlay import adopt_legacy_overlays
from vcorner.pipeline.run import BatchRun
from vcorner.stages.plan import Plan, PlannedImage

log = logging.getLogger(__name__)


class OutputSession:
    """The open outputs of one run: the images still to do (:attr:`todo`, in plan order) and what was done
    (:attr:`summary`).

    Attributes:
        out: the output folder.
        journal: ``corners.csv``.
        detected: ``centers.detected.csv`` (None without a detector).
        todo: the planned images not finished by an earlier run.
        summary: counts and failures so far.
        progress: told of every image recorded.
    """

    def __init__(self, out: Path, journal: CornerJournal, detected: DetectedJournal | None,
                 todo: list[PlannedImage], summary: BatchSummary, progress: Progress) -> None:
        self.out, self.journal, self.detected = out, journal, detected
        self.todo, self.summary, self.progress = todo, summary, progress

    @classmethod
    def open(cls, run: BatchRun, progress: Progress | None = None) -> OutputSession:
        """Open ``corners.csv`` (and with a detector ``centers.detected.csv``), record ``run.json``, and start
        ``progress`` on the images still to do.

        Resuming keeps an image's rows only when they are complete, were found from the same centres, and its
        requested ``--json``/``--vis`` files exist; a different model (or detector) is refused
        (:mod:`vcorner.pipeline.manifest`). Images an earlier run detected keep their detected centres.

        Raises:
            InputError: resuming into an OUT whose corners came from another model.
        """
        out, settings, plan = Path(run.out), run.settings, run.plan
        out.mkdir(parents=True, exist_ok=True)
        if not settings.resume and (kept := keep_previous(out)) is not None:
            log.warning("--no-resume: the earlier outputs of %s (corners.csv, errors.csv, run.json, json/, vis/) "
                        "were moved to %s", out, kept)
        detected = None
        if run.detector is not None:
            earlier = manifest.read_manifest(out) if settings.resume else None
            manifest.check_same_detector(earlier, run.detector.identity, out)
            detected = DetectedJournal(out / DETECTED_FILE, settings.resume)
            plan = with_detected(plan, detected)
        journal, stale, previous = open_journal(run, plan)
        extra = dict(run.notes) | ({"detector": run.detector.describe()} if run.detector else {})
        unseen = untrained_names(plan, run.card)
        if unseen:
            extra["names_not_trained"] = unseen
        records = [p.record for p in plan.images]
        manifest.write_manifest(out, run.model_id, records, run.card_id, previous, extra)  # after stale rows
        todo = [p for p in plan.images if p.record.file not in journal.done]
        answered = set((previous or {}).get("centers") or {})  # images an earlier run answered (and may have drawn)
        remove_stale_extras(out, sorted(stale | (set(plan.refused) & answered)))  # answers no longer current
        summary = BatchSummary(skipped=len(plan.images) - len(todo), failed=dict(plan.refused),
                               refused_vertebrae=dict(plan.refused_vertebrae), redone=len(journal.redone))
        summary.earlier = earlier_errors(out, plan) if settings.resume else ({}, {})
        if summary.redone:
            log.info("%d image(s) redone: centres changed or requested --json/--vis files missing", summary.redone)
        progress = progress or Progress()
        progress.start(len(todo))
        return cls(out, journal, detected, todo, summary, progress)

    def record(self, outcome: Outcome) -> None:
        """Write one image's outcome: its detected centres (first) and rows to ``corners.csv``, or its reason to
        the failures (``errors.csv``); a row that cannot be written fails its image only."""
        if isinstance(outcome, Finished):
            try:
                if outcome.detected is not None and self.detected is not None:
                    self.detected.add(outcome.detected)
                    self.summary.note_detected(outcome.detected)
                self.journal.add(outcome.rows)
            except OSError as err:  # disk full, say: this image fails, the next ones still try
                outcome = Failed(outcome.image, f"cannot write {self.journal.path}: {err.strerror or err}")
            else:
                self.summary.done += 1
                self.summary.count_flags(outcome.rows)
                self.progress.image_done(outcome.patches)
                return
        self.fail(outcome.image, outcome.reason)

    def fail(self, image: str, reason: str) -> None:
        """Record an image that cannot be answered, with its one-line reason."""
        self.summary.failed[image] = reason
        self.progress.image_done(0)

    def close(self) -> None:
        """Close the journals, record the centres detected in this run in ``run.json``, and write ``errors.csv``:
        this run's failures and left-out vertebrae, plus the earlier entries it keeps."""
        self.journal.close()
        if self.detected is not None:
            self.detected.close()
            manifest.record_detected(self.out, self.summary.detected_records)
        failed, vertebrae = self.summary.earlier
        write_errors(self.out / "errors.csv", {**failed, **self.summary.failed},
                     {**vertebrae, **self.summary.refused_vertebrae})


def open_journal(run: BatchRun, plan: Plan) -> tuple[CornerJournal, set[str], dict | None]:
    """``corners.csv`` opened for ``plan`` (rows of earlier runs kept when complete and current); the images
    whose kept answers are stale (centres or card changed); the earlier ``run.json`` (None: not resuming)."""
    out, settings = Path(run.out), run.settings
    records = [p.record for p in plan.images]
    expected = {r.file: 4 * len(r.vertebrae) for r in records}
    expected.update(dict.fromkeys(plan.refused, 0))  # refused now: earlier rows of them are stale, not kept
    redo: set[str] = set()
    stale: set[str] = set()
    previous = manifest.read_manifest(out) if settings.resume else None
    planned_files = [r.file for r in records]
    if settings.resume:
        manifest.check_same_model(previous, run.model_id, out)
        retuned = manifest.changed_cards(previous, planned_files, run.card_id)
        if retuned:
            log.warning("the model card changed since %d image(s) of %s were decoded (tuned?): redoing them",
                        len(retuned), out)
        stale = manifest.changed_centers(previous, records) | retuned
        adopt_legacy_overlays(out, planned_files)  # a.jpg.png -> a_jpg.png: kept, or removed if stale
        redo = stale | manifest.missing_extras(out, planned_files, settings.write_json, settings.vis)
    journal = CornerJournal(out / "corners.csv", expected, settings.resume, redo, manifest.known_rows(previous))
    if journal.others:
        log.warning("%s keeps the rows of %d image(s) of an earlier run that this centres file does not list",
                    out / "corners.csv", len(journal.others))
    if journal.partial:
        log.warning("%s: dropped the incomplete rows of %d unlisted image(s) an earlier run was killed writing "
                    "(e.g. %s); list them again to redo them", out / "corners.csv", len(journal.partial),
                    next(iter(journal.partial)))
    return journal, stale, previous


def earlier_errors(out: Path, plan: Plan) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """The ``errors.csv`` entries of an earlier run for images this run does not plan: kept, like their rows."""
    planned = {p.record.file for p in plan.images} | set(plan.refused)
    old_failed, old_vertebrae = read_errors(out / "errors.csv")
    return ({k: v for k, v in old_failed.items() if k not in planned},
            {k: v for k, v in old_vertebrae.items() if k[0] not in planned})


def untrained_names(plan: Plan, card: ModelCard | None) -> list[str]:
    """The vertebra names of ``plan`` the corner model never trained on (:meth:`CornerPrior.unseen`), with one
    warning naming them: their corners use the pooled prior and were never validated."""
    if card is None:
        return []
    unseen = card.prior.unseen(v.name for p in plan.images for v in p.record.vertebrae)
    if unseen:
        trained = card.prior.trained()
        log.warning("the corner model was trained on %s only; %s %s never in its training data: their corners "
                    "use the pooled prior and were never validated (train a model on such films: vcorner train)",
                    ", ".join(trained), ", ".join(unseen[:8]) + (" ..." if len(unseen) > 8 else ""),
                    "was" if len(unseen) == 1 else "were")
    return unseen
