"""``vcorner batch``: corners for every image of a folder, with decoding, inference and decoding overlapped.

Three stages run concurrently: loader threads decode images and cut patches, the calling thread fills
inference batches across images and queues them on the inference thread (:class:`InferenceThread`), and finisher
threads back-project, search quadrants and write each image's JSON and overlay. Beside CPU inference, which has
its share of the cores (:func:`vcorner.hardware.cpu.inference_threads`), there are as many loaders and finishers
as the cores it leaves, at least one each; beside GPU inference, one of each per core (``BatchOptions.workers``).
The calling thread is the one writer of ``corners.csv``: it takes the finishers' results in the order inference
queued the images, so the outputs do not depend on the thread count.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vcorner.hardware.cpu import available_cores
from vcorner.io.records import ImageRecord, InputError
from vcorner.models.card import ModelCard
from vcorner.pipeline import manifest
from vcorner.pipeline.detection import DETECTED_FILE, DetectedJournal, DetectorUse, with_detected
from vcorner.pipeline.outputs import (
    CornerJournal,
    corner_rows,
    keep_previous,
    read_errors,
    remove_stale_extras,
    row_flags,
    write_errors,
    write_image_json,
)
from vcorner.pipeline.overlay import adopt_legacy_overlays, measurement_labels, overlay_name, write_overlay
from vcorner.postprocess.kernels import use_serial_kernels
from vcorner.postprocess.kernels import warm_up as warm_kernels
from vcorner.runtime.base import Runner
from vcorner.stages.detect import DetectedCentres
from vcorner.stages.finish import finish
from vcorner.stages.plan import Plan, PlannedImage
from vcorner.stages.prepare import ImageJob, prepare

log = logging.getLogger(__name__)
_DONE = object()
CANCEL_WAIT_S = 10.0
"""Longest wait, after Ctrl-C, for the cancelled inference batch to return before the runner closes."""
MAX_DEFAULT_WORKERS = 16
"""Cap of the default CPU-stage threads beside GPU inference: each holds about two images in flight."""


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs: inference batch size (patches), resume, extra outputs, image size limit, model identity."""

    batch_size: int = 256
    resume: bool = True
    write_json: bool = False
    vis: bool = False
    max_pixels: int | None = None
    queue_images: int = 6
    workers: int | None = None
    """Threads that decode images and cut patches, and as many that find corners (None: the cores CPU inference
    leaves, at least 1; one per core beside GPU inference, which leaves them idle)."""
    model_id: str | None = None
    """Model identity recorded in ``OUT/run.json``; resuming with another model is refused (None: unchecked)."""
    card_id: str | None = None
    """Digest of the model card (decoding constants, prior); resuming with another card redoes every image."""
    measure_labels: str | None = None
    """With ``vis``: label each vertebra of the overlays with its heights and slip, given the anterior side
    (``right``/``left``); ``ap`` for an AP film (its lateral tilt only); None for names only."""
    notes: tuple[tuple[str, str], ...] = ()
    """(key, message) pairs recorded in ``OUT/run.json`` (e.g. an uncalibrated card)."""
    detector: DetectorUse | None = None
    """Finds the centres of images listed without any (None: every image needs clicked centres)."""


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
    flags: dict[str, list[int]] = field(default_factory=dict)
    """flag -> [images, vertebrae] of this run's answered images carrying it (README.md, "Flags")."""

    def count_flags(self, rows: list[list[str]]) -> None:
        """Add one answered image's ``corners.csv`` rows to :attr:`flags`."""
        for flag, vertebrae in row_flags(rows).items():
            images, total = self.flags.get(flag, [0, 0])
            self.flags[flag] = [images + 1, total + vertebrae]

    @property
    def detected(self) -> int:
        """Images whose centres the detector found in this run."""
        return len(self.detected_records)


class Progress:
    """Progress callbacks (the CLI shows a bar; tests use the default that does nothing)."""

    def start(self, images: int) -> None: ...
    def image_done(self, patches: int) -> None: ...


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


def prepare_one(item: PlannedImage, card: ModelCard, options: BatchOptions,
                encoded: bytes | None = None) -> ImageJob | Failed:
    """An image's job (from its file, or the file's ``encoded`` bytes), or why it cannot be read or cut."""
    try:
        return prepare(item, card, keep_pixels=options.vis, max_pixels=options.max_pixels, detect=options.detector,
                       encoded=encoded)
    except InputError as err:
        return Failed(item.record.file, str(err))
    except (OSError, ValueError, MemoryError) as err:
        return Failed(item.record.file, f"cannot process: {err}")
    except Exception as err:  # anything else (an OpenCV error, say) fails this image only, not the rest
        log.exception("preparing %s", item.record.file)
        return Failed(item.record.file, f"cannot process: {type(err).__name__}: {err}")


def _load(items: list[PlannedImage], card: ModelCard, options: BatchOptions, out: queue.Queue,
          workers: int = 1, stop: threading.Event | None = None) -> None:
    """Loader: put an ImageJob or Failed per image, in plan order, then _DONE; quits early once ``stop`` is set
    (inference failed).

    With ``workers`` > 1 a thread pool prepares up to ``2 * workers`` images ahead (OpenCV decoding and
    warping release the GIL); the order, and so the inference batches and every output, stay the same.
    """
    stop = stop or threading.Event()
    try:
        if workers <= 1:
            for item in items:
                if stop.is_set():
                    return
                out.put(prepare_one(item, card, options))
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="vcorner-load") as pool:
            ahead: deque[Future] = deque()
            for item in items:
                if stop.is_set():
                    break
                ahead.append(pool.submit(prepare_one, item, card, options))
                if len(ahead) >= 2 * workers:
                    out.put(ahead.popleft().result())
            while ahead and not stop.is_set():
                out.put(ahead.popleft().result())
            for future in ahead:
                future.cancel()
    finally:
        out.put(_DONE)


def _infer_all(jobs: queue.Queue, inference: InferenceThread,
               batch_size: int) -> Iterator[tuple[int, list[ImageJob | Failed]]]:
    """Fill batches of exactly ``batch_size`` patches across images (the last may be smaller) and run them;
    yields each batch's size and the images it completed (with the failures met while filling it), in queue
    order.

    The next batch is filled and queued on the inference thread before the running one is awaited, so the
    runner never waits for this thread to cut, gather and hand out patches.
    """
    pending: deque[tuple[ImageJob, int, int]] = deque()  # (job, first patch, count) not yet queued
    running: deque[tuple[Future, list[tuple[ImageJob, int, int]], int, list]] = deque()
    queued, source_done = 0, False
    while True:
        failed: list[ImageJob | Failed] = []
        while not source_done and queued < batch_size:
            item = jobs.get()
            if item is _DONE:
                source_done = True
            elif isinstance(item, Failed):
                failed.append(item)
            else:
                pending.append((item, 0, len(item.patches)))
                queued += len(item.patches)
        if pending:
            take, size = [], 0
            while pending and size < batch_size:
                job, start, count = pending.popleft()
                n = min(count, batch_size - size)
                take.append((job, start, n))
                if n < count:
                    pending.appendleft((job, start + n, count - n))
                size += n
            queued -= size
            batch = np.concatenate([job.patches[s:s + n] for job, s, n in take])
            running.append((inference.submit(batch), take, size, failed))
        elif failed:
            running.append((None, [], 0, failed))
        if not running:
            return
        if len(running) < 2 and pending:
            continue  # keep two batches queued while there are patches for a second one
        done, take, size, ready = running.popleft()
        if done is not None:
            maps = inference.result(done)
            offset = 0
            for job, start, n in take:
                job.maps[start:start + n] = maps[offset:offset + n]
                offset += n
                job.filled += n
                if job.filled == len(job.patches):
                    ready.append(job)
        yield size, ready


class InferenceThread:
    """Runs a runner's batches, in order, on one long-lived daemon thread: the caller queues the next batch while
    one runs, and Ctrl-C reaches the calling (main) thread at once and cancels the inference
    (:meth:`Runner.cancel`) instead of waiting for the batch to finish.

    One thread for the whole run: starting a thread per batch cost 2.6 ms of the calling thread's time on 2 busy
    cores, every batch, on the path that feeds inference. Runners that cannot cancel (GPU runners keep their
    CUDA state on the thread that entered them) run each batch on the calling thread when it is submitted.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.own_thread = not runner.on_gpu and type(runner).cancel is not Runner.cancel
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.stopping = False
        self.thread: threading.Thread | None = None
        if self.own_thread:
            self.thread = threading.Thread(target=self._serve, daemon=True, name="vcorner-infer")
            self.thread.start()

    def _serve(self) -> None:
        while (request := self.requests.get()) is not None:
            batch, done = request
            if self.stopping:
                done.cancel()
                continue
            try:
                done.set_result(self.runner.infer(batch))
            except BaseException as err:  # handed to the waiting thread
                done.set_exception(err)

    def submit(self, batch: np.ndarray) -> Future:
        """Queue ``batch`` (on the calling thread: run it now); its maps come from :meth:`result`."""
        done: Future = Future()
        if self.own_thread:
            self.requests.put((batch, done))
            return done
        try:
            done.set_result(self.runner.infer(batch))
        except Exception as err:  # raised by result(), in order, as the thread's would be
            done.set_exception(err)
        return done

    def result(self, done: Future) -> np.ndarray:
        """The maps of a submitted batch; on Ctrl-C the queued batches are dropped, the running one cancelled, and
        KeyboardInterrupt raised."""
        try:
            while True:
                try:
                    return done.result(timeout=0.05)
                except FutureTimeout:
                    continue
        except KeyboardInterrupt:
            self.close(cancel=True)
            raise

    def close(self, cancel: bool = False) -> None:
        """Drop the batches not started and let the thread end; with ``cancel`` also stop the running batch. Waits
        (at most :data:`CANCEL_WAIT_S`) for the thread: the session must outlive its run (closing the runner while
        ONNX Runtime was still inside ``session.run`` aborted the process, exit -6 instead of 130)."""
        if self.thread is None:
            return
        self.stopping = True
        if cancel:
            self.runner.cancel()
        self.requests.put(None)
        self.thread.join(timeout=CANCEL_WAIT_S)
        self.thread = None


def finish_one(item: ImageJob, card: ModelCard, out_dir: Path, options: BatchOptions) -> Finished | Failed:
    """The corner rows of a job whose maps are filled, with its JSON/overlay written; or why it failed."""
    try:
        corners, accumulated = finish(item, card)
        if not any(s == "network" for v in corners for s in v.source):
            log.warning("%s: the network found no corner; every corner is the prior's guess (confidence 0)",
                        item.name)
        if options.write_json:
            write_image_json(out_dir, item.name, corners)
        if options.vis:
            labels = measurement_labels(corners, item.spacing_mm, options.measure_labels) \
                if options.measure_labels else None
            write_overlay(out_dir / "vis" / overlay_name(item.name), item.pixels, corners, accumulated, labels,
                          detected=item.detected)
        return Finished(item.name, corner_rows(item.name, corners), len(item.patches), item.detected)
    except OSError as err:  # a JSON or overlay that cannot be written (disk full, say): name the file
        return Failed(item.name, f"cannot write {err.filename or 'an output file'}: {err.strerror or err}")
    except (InputError, ValueError) as err:
        return Failed(item.name, f"post-processing failed: {err}")
    except Exception as err:  # anything else fails this image only: the writer must not stall
        log.exception("post-processing %s", item.name)
        return Failed(item.name, f"post-processing failed: {type(err).__name__}: {err}")


def record_outcome(outcome: Finished | Failed, journal: CornerJournal, summary: BatchSummary, progress: Progress,
            detected: DetectedJournal | None = None) -> None:
    """Write one image's outcome: its detected centres (first) and rows to ``corners.csv``, or its reason to the
    summary's failures."""
    if isinstance(outcome, Finished):
        try:
            if outcome.detected is not None and detected is not None:
                note_detected(outcome.detected, len(outcome.detected.dropped), detected, summary)
            journal.add(outcome.rows)
        except OSError as err:  # disk full, say: this image fails, the next ones still try
            outcome = Failed(outcome.image, f"cannot write {journal.path}: {err.strerror or err}")
        else:
            summary.done += 1
            summary.count_flags(outcome.rows)
            progress.image_done(outcome.patches)
            return
    summary.failed[outcome.image] = outcome.reason
    progress.image_done(0)


def note_detected(found: DetectedCentres, dropped: int, detected: DetectedJournal, summary: BatchSummary) -> None:
    """Journal an image's detected centres (before its corners) and count them, with the ``dropped`` detections
    below the threshold and the vertebrae the centre checks left out, in ``summary``."""
    detected.add(found)
    summary.detected_records.append(found.record)
    summary.dropped += dropped
    if found.view != "as_is":
        summary.turned[found.view] = summary.turned.get(found.view, 0) + 1
    summary.refused_vertebrae.update({(found.record.file, k): v for k, v in found.left_out.items()})


def close_detected(out_dir: Path, detected: DetectedJournal | None, summary: BatchSummary) -> None:
    """Close the detected-centres journal and record the rows and centres of the images detected in this run."""
    if detected is not None:
        detected.close()
        manifest.record_detected(out_dir, summary.detected_records)


def _settled(outcome: Finished | Failed) -> Future:
    """A future already holding ``outcome`` (a failure queued among the finishers' futures)."""
    future: Future = Future()
    future.set_result(outcome)
    return future


def start_outputs(plan: Plan, out_dir: Path, options: BatchOptions, card: ModelCard | None = None) -> tuple[
        CornerJournal, list[PlannedImage], BatchSummary, DetectedJournal | None]:
    """Open ``corners.csv`` (and with a detector ``centers.detected.csv``) and record ``run.json``; the images
    still to do; a summary.

    Resuming keeps an image's rows only when they are complete, were found from the same centres, and its
    requested ``--json``/``--vis`` files exist; a different model (or detector) is refused
    (:mod:`vcorner.pipeline.manifest`). Images an earlier run detected keep their detected centres.

    Raises:
        InputError: resuming into an OUT whose corners came from another model.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if not options.resume and (kept := keep_previous(out_dir)) is not None:
        log.warning("--no-resume: the earlier outputs of %s (corners.csv, errors.csv, run.json, json/, vis/) were "
                    "moved to %s", out_dir, kept)
    detected = None
    if options.detector is not None:
        earlier = manifest.read_manifest(out_dir) if options.resume else None
        manifest.check_same_detector(earlier, options.detector.identity, out_dir)
        detected = DetectedJournal(out_dir / DETECTED_FILE, options.resume)
        plan = with_detected(plan, detected)
    records = [p.record for p in plan.images]
    expected = {r.file: 4 * len(r.vertebrae) for r in records}
    expected.update(dict.fromkeys(plan.refused, 0))  # refused now: earlier rows of them are stale, not kept
    redo: set[str] = set()
    stale: set[str] = set()
    previous = manifest.read_manifest(out_dir) if options.resume else None
    planned_files = [r.file for r in records]
    if options.resume:
        manifest.check_same_model(previous, options.model_id, out_dir)
        retuned = manifest.changed_cards(previous, planned_files, options.card_id)
        if retuned:
            log.warning("the model card changed since %d image(s) of %s were decoded (tuned?): redoing them",
                        len(retuned), out_dir)
        stale = manifest.changed_centers(previous, records) | retuned
        adopt_legacy_overlays(out_dir, planned_files)  # a.jpg.png -> a_jpg.png: kept, or removed if stale
        redo = stale | manifest.missing_extras(out_dir, planned_files, options.write_json, options.vis)
    journal = CornerJournal(out_dir / "corners.csv", expected, options.resume, redo, manifest.known_rows(previous))
    if journal.others:
        log.warning("%s keeps the rows of %d image(s) of an earlier run that this centres file does not list",
                    out_dir / "corners.csv", len(journal.others))
    if journal.partial:
        log.warning("%s: dropped the incomplete rows of %d unlisted image(s) an earlier run was killed writing "
                    "(e.g. %s); list them again to redo them", out_dir / "corners.csv", len(journal.partial),
                    next(iter(journal.partial)))
    extra = dict(options.notes) | ({"detector": options.detector.describe()} if options.detector else {})
    unseen = untrained_names(plan, card)
    if unseen:
        extra["names_not_trained"] = unseen
    manifest.write_manifest(out_dir, options.model_id, records, options.card_id, previous, extra)  # after stale rows
    todo = [p for p in plan.images if p.record.file not in journal.done]
    answered = set((previous or {}).get("centers") or {})  # images an earlier run answered (and may have drawn)
    remove_stale_extras(out_dir, sorted(stale | (set(plan.refused) & answered)))  # answers no longer current
    planned = {p.record.file for p in plan.images} | set(plan.refused)
    old_failed, old_vertebrae = read_errors(out_dir / "errors.csv") if options.resume else ({}, {})
    summary = BatchSummary(skipped=len(plan.images) - len(todo), failed=dict(plan.refused),
                           refused_vertebrae=dict(plan.refused_vertebrae), redone=len(journal.redone))
    summary.earlier = ({k: v for k, v in old_failed.items() if k not in planned},  # listed on, like their rows
                       {k: v for k, v in old_vertebrae.items() if k[0] not in planned})
    if summary.redone:
        log.info("%d image(s) redone: centres changed or requested --json/--vis files missing", summary.redone)
    return journal, todo, summary, detected


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


def write_run_errors(out_dir: Path, summary: BatchSummary) -> None:
    """``errors.csv``: this run's failures and left-out vertebrae, plus the earlier entries it keeps."""
    failed, vertebrae = summary.earlier
    write_errors(Path(out_dir) / "errors.csv", {**failed, **summary.failed},
                 {**vertebrae, **summary.refused_vertebrae})


def _drain(jobs: queue.Queue, loader: threading.Thread) -> None:
    """Empty ``jobs`` until the loader has stopped (it may be blocked putting one more image)."""
    while loader.is_alive() or not jobs.empty():
        try:
            jobs.get(timeout=0.05)
        except queue.Empty:
            pass


def warm_up(runner: Runner, card: ModelCard, options: BatchOptions) -> float:
    """One inference of a blank patch (and of a blank detector input), and every numba kernel loaded: the
    one-time set-up, kept out of the batch's images/s and patches/s; its seconds."""
    began = time.perf_counter()
    size = card.sampling.patch_size
    runner.infer(np.zeros((1, 1, size, size), np.float32))
    if options.detector is not None:
        options.detector.infer(np.zeros((1, 1, *options.detector.card.detection.input_shape), np.float32))
    warm_kernels()
    return time.perf_counter() - began


def cpu_workers(runner: Runner, options: BatchOptions) -> int:
    """Threads for the CPU stages: ``options.workers``, else the cores CPU inference leaves (its ``threads``, from
    :func:`vcorner.hardware.cpu.inference_threads`; at least 1) and all cores beside GPU inference."""
    if options.workers is not None:
        return max(1, options.workers)
    cores = min(available_cores(), MAX_DEFAULT_WORKERS)
    return cores if runner.on_gpu else max(1, cores - (getattr(runner, "threads", None) or cores))


def run_batch(plan: Plan, out_dir: Path, runner: Runner, card: ModelCard, options: BatchOptions | None = None,
              progress: Progress | None = None) -> BatchSummary:
    """Process every planned image; write ``corners.csv``, ``errors.csv`` and requested extras in ``out_dir``.

    The runner must already be entered. Images finished by an earlier run are skipped when resuming. Finished
    images are written in plan order as soon as every earlier one is; at most ``queue_images`` plus the
    finisher count wait to be finished. Ctrl-C keeps every image already finished and leaves the rest to a
    resumed run.
    """
    options, progress = options or BatchOptions(), progress or Progress()
    journal, todo, summary, detected = start_outputs(plan, Path(out_dir), options, card)
    progress.start(len(todo))
    workers = cpu_workers(runner, options)
    jobs: queue.Queue = queue.Queue(maxsize=options.queue_images)
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(todo, card, options, jobs, workers, stop), daemon=True,
                              name="vcorner-load")
    # single-threaded numba kernels in the finishers: one beside CPU inference (which needs the cores and
    # which this stage hides behind), one per core beside GPU inference
    finishers = ThreadPoolExecutor(workers, thread_name_prefix="vcorner-finish", initializer=use_serial_kernels)
    waiting: deque[Future] = deque()  # in plan order; the head is written first
    inference = InferenceThread(runner)
    summary.setup_seconds = warm_up(runner, card, options) if todo else 0.0
    began = time.perf_counter()
    loader.start()
    try:
        for size, ready in _infer_all(jobs, inference, options.batch_size):
            summary.patches += size  # counted as it goes, so an interrupted run reports what it did
            waiting.extend(_settled(item) if isinstance(item, Failed) else
                           finishers.submit(finish_one, item, card, out_dir, options) for item in ready)
            while waiting and (waiting[0].done() or len(waiting) > options.queue_images + workers):
                record_outcome(waiting.popleft().result(), journal, summary, progress, detected)
    except KeyboardInterrupt:  # Ctrl-C: stop the loader and finishers, keep what is finished, report it
        summary.interrupted = True
        stop.set()
        _drain(jobs, loader)
    except BaseException:
        inference.close(cancel=True)  # the batch still queued or running must not outlive the runner
        stop.set()  # inference failed: let the loader go, keep what the finishers finish
        _drain(jobs, loader)
        raise
    finally:
        inference.close()
        finishers.shutdown(wait=True, cancel_futures=summary.interrupted)
        for future in waiting:  # every image finished is kept, also those behind one Ctrl-C left undone
            if not future.cancelled():
                record_outcome(future.result(), journal, summary, progress, detected)
        journal.close()
        close_detected(out_dir, detected, summary)
        write_run_errors(out_dir, summary)
    summary.seconds = time.perf_counter() - began
    return summary
