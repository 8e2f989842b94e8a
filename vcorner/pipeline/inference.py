"""The local batch's inference: patches of several images gathered into batches of exactly ``batch_size``
(:func:`infer_batches`) and run in order on one long-lived thread (:class:`InferenceThread`), two batches queued at
a time so the runner never waits for the next one to be gathered."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np

from vcorner.io.records import InputError, MachineError
from vcorner.pipeline.outcomes import Failed
from vcorner.runtime.base import Runner
from vcorner.stages.prepare import ImageJob

DONE = object()
"""Put on the jobs queue after the last image."""
CANCEL_WAIT_S = 10.0
"""Longest wait, after Ctrl-C, for the cancelled inference batch to return before the runner closes."""


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
        KeyboardInterrupt raised.

        Raises:
            MachineError: the runner failed (a device lost, a session error): not the fault of any image.
        """
        try:
            while True:
                try:
                    return done.result(timeout=0.05)
                except FutureTimeout:
                    continue
        except KeyboardInterrupt:
            self.close(cancel=True)
            raise
        except (InputError, MachineError):
            raise
        except Exception as err:
            raise inference_failure(self.runner, err) from err

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


def inference_failure(runner: Runner, err: Exception) -> MachineError:
    """The one-line MachineError of a runner that raised ``err`` (a device lost, a session error): a failure of
    the machine or of the runtime, never of one image or of the command line."""
    reason = (str(err).strip().splitlines() or [""])[0][:300]
    return MachineError(f"inference failed on {runner.name}: {type(err).__name__}: {reason}; the images finished so "
                        "far are kept, run the same command again to resume")


@dataclass(frozen=True)
class Span:
    """Patches ``start`` to ``start + count`` of one image's job."""

    job: ImageJob
    start: int
    count: int


@dataclass
class Queued:
    """A batch handed to inference: its maps to come (None: a batch of failures only), the spans it holds, and the
    images it completes once its maps are in (with the failures met while it was gathered)."""

    maps: Future | None
    spans: list[Span]
    size: int
    ready: list[ImageJob | Failed] = field(default_factory=list)


class Gatherer:
    """Reads prepared images from the loader's queue until a batch's worth of patches waits (:attr:`pending`)."""

    def __init__(self, jobs: queue.Queue) -> None:
        self.jobs, self.pending, self.exhausted = jobs, deque[Span](), False

    def fill(self, batch_size: int) -> list[Failed]:
        """Read images until ``batch_size`` patches wait or the loader is done; the failures read meanwhile."""
        failed: list[Failed] = []
        waiting = sum(span.count for span in self.pending)
        while not self.exhausted and waiting < batch_size:
            item = self.jobs.get()
            if item is DONE:
                self.exhausted = True
            elif isinstance(item, Failed):
                failed.append(item)
            else:
                self.pending.append(Span(item, 0, len(item.patches)))
                waiting += len(item.patches)
        return failed

    def take(self, batch_size: int) -> list[Span]:
        """The next ``batch_size`` waiting patches (fewer at the end), splitting an image across two batches."""
        taken, size = [], 0
        while self.pending and size < batch_size:
            span = self.pending.popleft()
            n = min(span.count, batch_size - size)
            taken.append(Span(span.job, span.start, n))
            if n < span.count:
                self.pending.appendleft(Span(span.job, span.start + n, span.count - n))
            size += n
        return taken


def scatter(maps: np.ndarray, queued: Queued) -> None:
    """Copy a batch's (B, 1, N, N) maps into its images' jobs; the jobs it completes join ``queued.ready``."""
    offset = 0
    for span in queued.spans:
        span.job.maps[span.start:span.start + span.count] = maps[offset:offset + span.count]
        offset += span.count
        span.job.filled += span.count
        if span.job.filled == len(span.job.patches):
            queued.ready.append(span.job)


def infer_batches(jobs: queue.Queue, inference: InferenceThread,
                  batch_size: int) -> Iterator[tuple[int, list[ImageJob | Failed]]]:
    """Fill batches of exactly ``batch_size`` patches across images (the last may be smaller) and run them;
    yields each batch's size and the images it completed (with the failures met while filling it), in queue
    order.

    The next batch is filled and queued on the inference thread before the running one is awaited, so the
    runner never waits for this thread to cut, gather and hand out patches.
    """
    gatherer, running = Gatherer(jobs), deque[Queued]()
    while True:
        failed = gatherer.fill(batch_size)
        if gatherer.pending:
            spans = gatherer.take(batch_size)
            batch = np.concatenate([span.job.patches[span.start:span.start + span.count] for span in spans])
            running.append(Queued(inference.submit(batch), spans, len(batch), list(failed)))
        elif failed:
            running.append(Queued(None, [], 0, list(failed)))
        if not running:
            return
        if len(running) < 2 and gatherer.pending:
            continue  # keep two batches queued while there are patches for a second one
        queued = running.popleft()
        if queued.maps is not None:
            scatter(inference.result(queued.maps), queued)
        yield queued.size, queued.ready
