"""Executors: what does a run's images. Local threads (:mod:`vcorner.pipeline.local`) and Ray Data
(:mod:`vcorner.pipeline.ray.driver`) take the same :class:`~vcorner.pipeline.run.BatchRun` and feed the same one
writer (:class:`~vcorner.pipeline.session.OutputSession`), so their outputs are the same byte for byte."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from vcorner.backends import ResolvedModel
from vcorner.pipeline.detection import DetectorChoice
from vcorner.pipeline.outcomes import BatchSummary, Progress
from vcorner.pipeline.run import BatchRun, BatchSettings, Notes, card_notes, inference_batch
from vcorner.pipeline.session import OutputSession
from vcorner.stages.plan import Plan


class Executor(Protocol):
    """Does a run's images and hands each outcome, in plan order, to the session.

    Attributes:
        name: what ran, for the summary and ``run.json`` (``ort-cpu``, ``ray (2 actor(s), ort fp32)``).
        on_gpu: whether inference runs on a GPU (decides the default batch size).
        model_id: what runs, recorded in ``run.json`` (None: unchecked on resume).
        notes: ``run.json`` notes of this executor.
    """

    name: str
    on_gpu: bool
    model_id: str | None
    notes: Notes

    def execute(self, run: BatchRun, session: OutputSession) -> None:
        """Do ``session.todo`` and record every outcome in ``session`` (Ctrl-C: set
        ``session.summary.interrupted`` and return with what is finished recorded)."""
        ...


def batch_run(plan: Plan, out: Path, model: ResolvedModel, settings: BatchSettings, executor: Executor,
              detector: DetectorChoice | None = None, notes: Notes = ()) -> BatchRun:
    """The run of ``plan`` into ``out`` with ``model`` resolved (and made) for ``executor``, which holds it open:
    ``notes`` (the caller's), then the cards', the executor's and the resolved model's."""
    return BatchRun(plan, Path(out), model.card, settings, inference_batch(settings.batch_size, executor.on_gpu),
                    executor.model_id, model.card_digest, detector,
                    notes + card_notes(model.card, detector) + executor.notes + (("resolved", model.describe()),))


def run_batch(run: BatchRun, executor: Executor, progress: Progress | None = None) -> BatchSummary:
    """Do every planned image of ``run`` with ``executor``; write ``corners.csv``, ``errors.csv`` and the requested
    extras in ``run.out``. Images finished by an earlier run are skipped when resuming; Ctrl-C keeps every image
    already finished and leaves the rest to a resumed run; the outputs are closed whatever happens."""
    session = OutputSession.open(run, progress)
    began = time.perf_counter()
    try:
        executor.execute(run, session)
    finally:
        session.close()
    summary = session.summary
    summary.seconds = time.perf_counter() - began - summary.setup_seconds
    return summary
