"""``vcorner batch``: corners for every image of a folder, with decoding, inference and decoding overlapped.

Three stages run concurrently: a loader thread decodes images and cuts patches, the calling thread fills
inference batches across images, and a finisher thread back-projects, searches quadrants and writes rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcorner.card import ModelCard
from vcorner.io.records import InputError
from vcorner.pipeline.outputs import CornerJournal, corner_rows, write_errors, write_image_json
from vcorner.pipeline.plan import Plan, PlannedImage
from vcorner.pipeline.stages import ImageJob, finish, prepare
from vcorner.runtime.base import Runner

log = logging.getLogger(__name__)
_DONE = object()


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs: inference batch size (patches), resume, extra outputs, image size limit, model identity."""

    batch_size: int = 256
    resume: bool = True
    write_json: bool = False
    vis: bool = False
    max_pixels: int | None = None
    queue_images: int = 6
    model_sha256: str | None = None
    """Model identity recorded in ``OUT/run.json``; resuming with another model is refused (None: unchecked)."""


@dataclass
class BatchSummary:
    """What a batch did."""

    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    patches: int = 0
    seconds: float = 0.0
    redone: int = 0
    """Images done again on resume because their centres changed or requested extras were missing."""


class Progress:
    """Progress callbacks (the CLI shows a bar; tests use the default that does nothing)."""

    def start(self, images: int) -> None: ...
    def image_done(self, patches: int) -> None: ...


def _load(items: list[PlannedImage], card: ModelCard, options: BatchOptions, out: queue.Queue) -> None:
    """Loader thread: put an ImageJob or (name, reason) per image, then _DONE."""
    try:
        for item in items:
            try:
                out.put(prepare(item, card, keep_pixels=options.vis, max_pixels=options.max_pixels))
            except InputError as err:
                out.put((item.record.file, str(err)))
            except (OSError, ValueError, MemoryError) as err:
                out.put((item.record.file, f"cannot process: {err}"))
    finally:
        out.put(_DONE)


def _infer_all(jobs: queue.Queue, runner: Runner, batch_size: int, finished: queue.Queue) -> Iterator[int]:
    """Fill batches of exactly ``batch_size`` patches across images (the last may be smaller), run them,
    and pass completed jobs (and failures) on to ``finished``; yields each batch's size."""
    pending: deque[tuple[ImageJob, int, int]] = deque()  # (job, first patch, count) not yet inferred
    queued, source_done = 0, False
    while True:
        while not source_done and queued < batch_size:
            item = jobs.get()
            if item is _DONE:
                source_done = True
            elif isinstance(item, tuple):
                finished.put(item)
            else:
                pending.append((item, 0, len(item.patches)))
                queued += len(item.patches)
        if not pending:
            return
        take, size = [], 0
        while pending and size < batch_size:
            job, start, count = pending.popleft()
            n = min(count, batch_size - size)
            take.append((job, start, n))
            if n < count:
                pending.appendleft((job, start + n, count - n))
            size += n
        queued -= size
        maps = runner.infer(np.concatenate([job.patches[s:s + n] for job, s, n in take]))
        offset = 0
        for job, start, n in take:
            job.maps[start:start + n] = maps[offset:offset + n]
            offset += n
            job.filled += n
            if job.filled == len(job.patches):
                finished.put(job)
        yield size


def _finish_all(finished: queue.Queue, card: ModelCard, journal: CornerJournal, out_dir: Path,
                options: BatchOptions, summary: BatchSummary, progress: Progress) -> None:
    """Finisher thread: decode corners, write rows (and JSON/overlays), record failures.

    Its numba kernels run on one thread: the cores belong to inference, which this stage hides behind.
    """
    import numba

    numba.set_num_threads(1)
    while (item := finished.get()) is not _DONE:
        if isinstance(item, tuple):
            summary.failed[item[0]] = item[1]
            progress.image_done(0)
            continue
        try:
            corners, accumulated = finish(item, card)
            journal.add(corner_rows(item.name, corners))
            if options.write_json:
                write_image_json(out_dir, item.name, corners)
            if options.vis:
                from vcorner.pipeline.overlay import overlay_name, write_overlay

                write_overlay(out_dir / "vis" / overlay_name(item.name), item.pixels, corners, accumulated)
            summary.done += 1
        except (InputError, ValueError, OSError) as err:
            summary.failed[item.name] = f"post-processing failed: {err}"
        progress.image_done(len(item.patches))


def start_outputs(plan: Plan, out_dir: Path, options: BatchOptions) -> tuple[CornerJournal, list[PlannedImage],
                                                                         BatchSummary]:
    """Open ``corners.csv`` and record ``run.json``; the images still to do; a summary.

    Resuming keeps an image's rows only when they are complete, were found from the same centres, and its
    requested ``--json``/``--vis`` files exist; a different model is refused
    (:mod:`vcorner.pipeline.manifest`).

    Raises:
        InputError: resuming into an OUT whose corners came from another model.
    """
    from vcorner.pipeline import manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    records = [p.record for p in plan.images]
    expected = {r.file: 4 * len(r.vertebrae) for r in records}
    redo: set[str] = set()
    if options.resume:
        previous = manifest.read_manifest(out_dir)
        manifest.check_same_model(previous, options.model_sha256, out_dir)
        redo = manifest.changed_centers(previous, records) | manifest.missing_extras(
            out_dir, list(expected), options.write_json, options.vis)
    journal = CornerJournal(out_dir / "corners.csv", expected, options.resume, redo)
    manifest.write_manifest(out_dir, options.model_sha256, records)  # after the stale rows are gone
    todo = [p for p in plan.images if p.record.file not in journal.done]
    summary = BatchSummary(skipped=len(plan.images) - len(todo), failed=dict(plan.refused),
                           redone=len(journal.redone))
    if summary.redone:
        log.info("%d image(s) redone: centres changed or requested --json/--vis files missing", summary.redone)
    return journal, todo, summary


def run_batch(plan: Plan, out_dir: Path, runner: Runner, card: ModelCard, options: BatchOptions | None = None,
              progress: Progress | None = None) -> BatchSummary:
    """Process every planned image; write ``corners.csv``, ``errors.csv`` and requested extras in ``out_dir``.

    The runner must already be entered. Images finished by an earlier run are skipped when resuming.
    """
    options, progress = options or BatchOptions(), progress or Progress()
    journal, todo, summary = start_outputs(plan, Path(out_dir), options)
    progress.start(len(todo))
    jobs: queue.Queue = queue.Queue(maxsize=options.queue_images)
    finished: queue.Queue = queue.Queue(maxsize=options.queue_images)
    loader = threading.Thread(target=_load, args=(todo, card, options, jobs), daemon=True, name="vcorner-load")
    finisher = threading.Thread(target=_finish_all, name="vcorner-finish", daemon=True,
                                args=(finished, card, journal, out_dir, options, summary, progress))
    began = time.perf_counter()
    loader.start()
    finisher.start()
    try:
        summary.patches = sum(_infer_all(jobs, runner, options.batch_size, finished))
    finally:
        finished.put(_DONE)
        finisher.join()
        journal.close()
        write_errors(out_dir / "errors.csv", summary.failed)
    summary.seconds = time.perf_counter() - began
    return summary
