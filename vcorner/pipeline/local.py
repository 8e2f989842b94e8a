"""The local executor: a run's images on this machine's threads, decoding, inference and corner search overlapped.

Three stages run concurrently: loader threads decode images and cut patches (:func:`load`), the calling thread fills
inference batches across images and queues them on the inference thread (:mod:`vcorner.pipeline.inference`), and
finisher threads back-project, search quadrants and write each image's JSON and overlay. Beside CPU inference,
which has its share of the cores (:func:`vcorner.hardware.cpu.inference_threads`), there are as many loaders and
finishers as the cores it leaves, at least one each; beside GPU inference, one of each per core
(``BatchSettings.workers``). The calling thread hands the finishers' results to the one writer in the order
inference queued the images, so the outputs do not depend on the thread count.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from vcorner.backends import ModelRequest, ResolvedModel
from vcorner.hardware.cpu import available_cores
from vcorner.io.records import InputError, MachineError
from vcorner.models.card import ModelCard
from vcorner.pipeline.detection import DetectorChoice, DetectorUse, open_detector_use
from vcorner.pipeline.executor import run_batch
from vcorner.pipeline.inference import DONE, InferenceThread, infer_batches, inference_failure
from vcorner.pipeline.outcomes import BatchSummary, Failed, Outcome, Progress
from vcorner.pipeline.run import BatchRun, BatchSettings, Notes, inference_batch
from vcorner.pipeline.session import OutputSession
from vcorner.pipeline.steps import finish_one, prepare_one
from vcorner.postprocess.kernels import use_serial_kernels
from vcorner.postprocess.kernels import warm_up as warm_kernels
from vcorner.runtime.base import Runner
from vcorner.stages.plan import Plan, PlannedImage

log = logging.getLogger(__name__)
MAX_DEFAULT_WORKERS = 16
"""Cap of the default CPU-stage threads beside GPU inference: each holds about two images in flight."""


@contextmanager
def open_threads(request: ModelRequest,
                 detector: DetectorChoice | None = None) -> Iterator[tuple[ThreadExecutor, ResolvedModel]]:
    """The local executor of ``request``, resolved for this machine once, made (the cache step), its runner and
    the ``detector`` open; and the resolved model."""
    from vcorner.backends import materialize, open_runner

    resolved = materialize(request.resolve())
    log.info("model: %s", resolved.describe())
    detecting = open_detector_use(detector, extend=True) if detector else nullcontext()
    with open_runner(resolved) as runner, detecting as use:
        yield ThreadExecutor(runner, use), resolved


class ThreadExecutor:
    """Does a run's images with an entered ``runner`` on this machine's threads (and ``detector``, the run's
    detector open, for images listed without centres)."""

    def __init__(self, runner: Runner, detector: DetectorUse | None = None) -> None:
        self.runner, self.detector = runner, detector

    @property
    def name(self) -> str:
        """The runner's name (``ort-cpu``, ``trt-fp16``...)."""
        return self.runner.name

    @property
    def on_gpu(self) -> bool:
        """Whether the runner infers on a GPU."""
        return self.runner.on_gpu

    @property
    def model_id(self) -> str | None:
        """What runs: the runner's identity (its graph's SHA-256)."""
        return self.runner.identity()

    @property
    def notes(self) -> Notes:
        """The runner's name, for ``run.json``."""
        return (("backend", self.runner.name),)

    def execute(self, run: BatchRun, session: OutputSession) -> None:
        """Do ``session.todo``: loaders, inference and finishers overlapped; every finished image recorded in plan
        order, also after Ctrl-C (which sets ``interrupted``) or a failed inference (re-raised)."""
        todo, summary, settings = session.todo, session.summary, run.settings
        workers = cpu_workers(self.runner, settings, detecting=self.detector is not None
                              and any(not p.record.vertebrae for p in todo))
        jobs: queue.Queue = queue.Queue(maxsize=settings.queue_images)
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(todo, run.card, settings, self.detector, jobs, workers, stop),
                                  daemon=True, name="vcorner-load")
        # single-threaded numba kernels in the finishers: one beside CPU inference (which needs the cores and
        # which this stage hides behind), one per core beside GPU inference
        finishers = ThreadPoolExecutor(workers, thread_name_prefix="vcorner-finish", initializer=use_serial_kernels)
        waiting: deque[Future] = deque()  # in plan order; the head is written first
        inference = InferenceThread(self.runner)
        summary.setup_seconds = warm_up(self.runner, run.card, self.detector) if todo else 0.0
        loader.start()
        try:
            for size, ready in infer_batches(jobs, inference, run.batch_size):
                summary.patches += size  # counted as it goes, so an interrupted run reports what it did
                waiting.extend(settled(item) if isinstance(item, Failed) else
                               finishers.submit(finish_one, item, run.card, run.out, settings) for item in ready)
                while waiting and (waiting[0].done() or len(waiting) > settings.queue_images + workers):
                    session.record(waiting.popleft().result())
        except KeyboardInterrupt:  # Ctrl-C: stop the loader and finishers, keep what is finished, report it
            summary.interrupted = True
            stop.set()
            drain(jobs, loader)
        except BaseException:
            inference.close(cancel=True)  # the batch still queued or running must not outlive the runner
            stop.set()  # inference failed: let the loader go, keep what the finishers finish
            drain(jobs, loader)
            raise
        finally:
            inference.close()
            finishers.shutdown(wait=True, cancel_futures=summary.interrupted)
            for future in waiting:  # every image finished is kept, also those behind one Ctrl-C left undone
                if not future.cancelled():
                    session.record(future.result())


def load(items: list[PlannedImage], card: ModelCard, settings: BatchSettings, detector: DetectorUse | None,
         out: queue.Queue, workers: int = 1, stop: threading.Event | None = None) -> None:
    """Loader: put an ImageJob or Failed per image, in plan order, then :data:`DONE`; quits early once ``stop`` is
    set (inference failed).

    With ``workers`` > 1 a thread pool prepares up to ``2 * workers`` images ahead (OpenCV decoding and
    warping release the GIL); the order, and so the inference batches and every output, stay the same.
    """
    stop = stop or threading.Event()
    try:
        if workers <= 1:
            for item in items:
                if stop.is_set():
                    return
                out.put(prepare_one(item, card, settings, detector))
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="vcorner-load") as pool:
            ahead: deque[Future] = deque()
            for item in items:
                if stop.is_set():
                    break
                ahead.append(pool.submit(prepare_one, item, card, settings, detector))
                if len(ahead) >= 2 * workers:
                    out.put(ahead.popleft().result())
            while ahead and not stop.is_set():
                out.put(ahead.popleft().result())
            for future in ahead:
                future.cancel()
    finally:
        out.put(DONE)


def settled(outcome: Outcome) -> Future:
    """A future already holding ``outcome`` (a failure queued among the finishers' futures)."""
    future: Future = Future()
    future.set_result(outcome)
    return future


def drain(jobs: queue.Queue, loader: threading.Thread) -> None:
    """Empty ``jobs`` until the loader has stopped (it may be blocked putting one more image)."""
    while loader.is_alive() or not jobs.empty():
        try:
            jobs.get(timeout=0.05)
        except queue.Empty:
            pass


def warm_up(runner: Runner, card: ModelCard, detector: DetectorUse | None = None) -> float:
    """One inference of a blank patch (and of a blank detector input), and every numba kernel loaded: the
    one-time set-up, kept out of the batch's images/s and patches/s; its seconds.

    Raises:
        MachineError: the runner fails on the blank patch.
    """
    began = time.perf_counter()
    size = card.sampling.patch_size
    try:
        runner.infer(np.zeros((1, 1, size, size), np.float32))
    except (InputError, MachineError):
        raise
    except Exception as err:
        raise inference_failure(runner, err) from err
    if detector is not None:
        detector.infer(np.zeros((1, 1, *detector.card.detection.input_shape), np.float32))
    warm_kernels()
    return time.perf_counter() - began


def cpu_workers(runner: Runner, settings: BatchSettings, detecting: bool = False) -> int:
    """Threads for the CPU stages: ``settings.workers``, else the cores CPU inference leaves (its ``threads``, from
    :func:`vcorner.hardware.cpu.inference_threads`; at least 1), all cores beside GPU inference, and all cores too
    when the loaders find the centres (``detecting``): the detector and its view finder, one thread each per
    loader, are then most of the work (2 cores, 100 validation films: 24.8 s with one loader, 16.1-19.0 s with
    two)."""
    if settings.workers is not None:
        return max(1, settings.workers)
    cores = min(available_cores(), MAX_DEFAULT_WORKERS)
    if runner.on_gpu or detecting:
        return cores
    return max(1, cores - (getattr(runner, "threads", None) or cores))


def run_threads(plan: Plan, out: Path, runner: Runner, card: ModelCard, settings: BatchSettings | None = None,
                progress: Progress | None = None) -> BatchSummary:
    """:func:`~vcorner.pipeline.executor.run_batch` of ``plan`` with an entered ``runner`` and its ``card`` on this
    machine's threads, without a recorded model identity (benchmarks and tests that hold a runner)."""
    settings = settings or BatchSettings()
    run = BatchRun(plan, Path(out), card, settings, inference_batch(settings.batch_size, runner.on_gpu))
    return run_batch(run, ThreadExecutor(runner), progress)
