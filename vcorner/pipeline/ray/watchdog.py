"""The stall watchdog of a Ray batch: a batch in which no image came back for a while stops with one line."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from vcorner.io.records import MachineError

DEFAULT_STALL_S = 600.0
"""Seconds without an image coming back before a Ray batch is declared stuck (covers actor start-up)."""


def watch(rows: Iterable, stall_s: float, actors: int) -> Iterator:
    """``rows`` as they come, or MachineError (one line naming the stuck stage) once none came for ``stall_s``.

    A watchdog thread interrupts the main thread, which is blocked inside Ray's iterator. That needs Python's own
    SIGINT handler: a batch started in the background of a shell (``vcorner batch ... &``) inherits SIGINT ignored,
    so the handler is put back for the watch (:func:`interruptible`) and restored after.
    """
    with interruptible():
        yield from _watch(rows, stall_s, actors)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within it, SIGINT raises KeyboardInterrupt in the main thread (Python's default handler), whatever handler
    the process had; the earlier handler is restored on exit. Elsewhere than the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch(rows: Iterable, stall_s: float, actors: int) -> Iterator:
    """:func:`watch` under Python's SIGINT handler."""
    state = {"last": time.monotonic(), "count": 0, "stalled": False, "over": False}

    def guard() -> None:
        while not state["over"]:
            if time.monotonic() - state["last"] > stall_s:
                state["stalled"] = True
                _thread.interrupt_main()
                return
            time.sleep(min(1.0, stall_s / 10))

    threading.Thread(target=guard, daemon=True, name="vcorner-ray-watchdog").start()
    try:
        for row in rows:
            state["last"], state["count"] = time.monotonic(), state["count"] + 1
            yield row
    except KeyboardInterrupt:
        if not state["stalled"]:
            raise
        stage = ("before the first image came back: reading the images or starting the actors" if not state["count"]
                 else f"in the actors after {state['count']} image(s)")
        raise MachineError(f"the Ray batch made no progress for {stall_s:g} s, stuck {stage}; finished images are "
                           f"kept: check that {actors} actor(s) fit the cluster's CPUs/GPUs beside the reads, or "
                           "raise --ray-stall-timeout if loading the model is this slow") from None
    finally:
        state["over"] = True
