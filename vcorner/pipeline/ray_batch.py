"""``vcorner batch --ray``: the same per-image work on Ray Data, across the CPUs or GPUs of a cluster.

The dataset is built from the plan: one row per image holding its path **and its centres**, so nothing but an
image's own centres reaches the actor that does it. Light read tasks add each file's bytes; a pool of stateful
actors (``compute=ActorPoolStrategy``), each holding one inference session, takes several images a call, decodes
them from the bytes (no temporary files), infers all their patches together in full batches and finds their
corners, writing any ``--json``/``--vis`` files straight into OUT (shared storage on a cluster). The driver
streams the result rows back in plan order and writes them through the same atomic journal as the local batch,
so ``corners.csv`` and ``errors.csv`` are the local batch's, byte for byte; it never holds pixels or maps, only
the plan (paths and centres) and the journal's index.

Failures: a file that cannot be read or decoded fails that image only. An actor that dies (killed, out of
memory) is restarted and its call retried (:data:`ACTOR_RETRIES`); a call that still fails is skipped and its
images are reported in ``errors.csv``. An unreachable cluster address fails in one line (:func:`connect`).

Resources: the read tasks need CPUs too. Actors that held every CPU starved them and the batch hung forever,
so the actors share what the cluster has less :data:`READ_RESERVE_CPUS` (:func:`actor_cpus`), each running
its ONNX Runtime session on its share of the cores; a combination that cannot fit is refused in one line
before anything starts. A watchdog (:func:`watch`) stops a batch in which no image has come back for
``stall_s`` seconds with a one-line error naming the stuck stage. Ray Data's own progress lines stay out of
the terminal unless ``-v``.
"""

from __future__ import annotations

import _thread
import json
import logging
import math
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.backends import ResolvedModel, materialize, open_runner, probe
from vcorner.geometry.patches import sample_poses
from vcorner.hardware.capabilities import Capabilities
from vcorner.io.images import read_image_file
from vcorner.io.records import ImageRecord, InputError, MachineError, Vertebra
from vcorner.pipeline.batch import (
    BatchOptions,
    BatchSummary,
    Failed,
    Finished,
    Progress,
    close_detected,
    finish_one,
    prepare_one,
    record_outcome,
    start_outputs,
    write_run_errors,
)
from vcorner.pipeline.detection import open_detector_use
from vcorner.postprocess.kernels import use_serial_kernels
from vcorner.stages.plan import Plan, PlannedImage
from vcorner.stages.prepare import ImageJob

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed: pip install 'vcorner[ray]'"
READ_CPUS = 0.25
"""CPUs of one read task (a file's bytes: light, and must never be starved by the actors)."""
READ_RESERVE_CPUS = 0.5
"""CPUs left to Ray Data's read tasks (:data:`READ_CPUS` each) beside the actors."""
GCS_PORT = 6379
"""Default port of a Ray head node's GCS (``ray start --head``)."""
CLIENT_PORT = 10001
"""Default port of the Ray Client server (``ray://`` addresses)."""
CONNECT_TIMEOUT_S = 5.0
"""Seconds to wait for a cluster address to accept a connection before refusing the batch."""
ACTOR_RETRIES = 2
"""Times a call is retried on a restarted actor after its actor died (killed, out of memory) before its images
are reported failed."""
BATCHES_PER_CALL = 4
"""Full inference batches' worth of patches handed to an actor per call (:func:`images_per_call`)."""
MAX_IMAGES_PER_CALL = 64
"""Most images per actor call: bounds an actor's memory (decoded images and patches of one call)."""
GPU_ACTOR_MAX_CPUS = 16.0
"""Most CPUs a GPU actor takes for its decoding and corner threads."""
CALLS_PER_CPU_ACTOR = 2
"""Calls a CPU actor runs at once: one prepares or finishes its images while the other infers (inference itself
runs one call at a time, as the local batch overlaps its stages)."""
MIN_ACTOR_CPUS = 0.1
"""The smallest CPU share an actor may get; fewer CPUs than that per actor is refused."""
DEFAULT_STALL_S = 600.0
"""Seconds without an image coming back before a Ray batch is declared stuck (covers actor start-up)."""


def actor_cpus(cluster_cpus: float, actors: int, cluster_gpus: float = 0.0, gpus_per_actor: float = 0.0) -> float:
    """CPUs per actor: an equal share of the cluster's CPUs less :data:`READ_RESERVE_CPUS`; at most 1 for a CPU
    actor (its inference holds the core), at most :data:`GPU_ACTOR_MAX_CPUS` for a GPU actor (whose threads
    decode images and find corners while its GPU infers).

    Raises:
        InputError: the actors cannot fit beside the reads, or ask for more GPUs than the cluster has.
    """
    if gpus_per_actor and actors * gpus_per_actor > cluster_gpus + 1e-9:
        raise InputError(f"--ray-actors {actors} x --ray-gpus {gpus_per_actor:g} needs {actors * gpus_per_actor:g} "
                         f"GPU(s); the Ray cluster has {cluster_gpus:g}")
    share = (cluster_cpus - READ_RESERVE_CPUS) / actors
    if share < MIN_ACTOR_CPUS:
        most = max(int((cluster_cpus - READ_RESERVE_CPUS) / MIN_ACTOR_CPUS), 0)
        raise InputError(f"--ray-actors {actors} cannot run beside the image reads on a Ray cluster of "
                         f"{cluster_cpus:g} CPU(s): use at most {most}")
    return round(min(GPU_ACTOR_MAX_CPUS if gpus_per_actor else 1.0, share), 3)


def actor_workers(cluster: Cluster) -> int:
    """Threads of an actor's CPU stages: one per whole CPU of a GPU actor; in a CPU actor one per concurrent call
    (:data:`CALLS_PER_CPU_ACTOR`), so that one call prepares or finishes while the other infers, as the local
    batch's loader and finisher threads do beside its inference."""
    return max(1, int(cluster.per_actor)) if cluster.gpus_per_actor else CALLS_PER_CPU_ACTOR


def actor_threads(threads: int | None, cpus_per_actor: float, actors: int, cluster_cpus: float) -> int | None:
    """ONNX Runtime threads per actor: ``threads`` if given; all cores for one whole-CPU actor; else the
    actor's share of the cores (at least 1), so that several actors do not oversubscribe them."""
    if threads is not None or (actors == 1 and cpus_per_actor >= 1.0):
        return threads
    return max(1, int(cluster_cpus // actors))


def watch(rows: Iterable, stall_s: float, actors: int) -> Iterator:
    """``rows`` as they come, or InputError (one line naming the stuck stage) once none came for ``stall_s``.

    A watchdog thread interrupts the main thread, which is blocked inside Ray's iterator.
    """
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
                         f"kept: check that {actors} actor(s) fit the cluster's CPUs/GPUs beside the reads, or raise "
                         "--ray-stall-timeout if loading the model is this slow") from None
    finally:
        state["over"] = True


def quiet_ray_data(ray) -> None:
    """No Ray Data progress bars or INFO lines on the user's terminal unless vcorner runs with ``-v``."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


def import_ray():
    """The ``ray`` module, or MachineError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MachineError(INSTALL_HINT) from None
    return ray


def connect(address: str, num_cpus: int | None = None) -> None:
    """Join a Ray cluster: ``local`` starts one here, ``auto`` joins a running one (else starts one), anything else
    is a head node's address (``HOST:PORT`` or ``ray://HOST:PORT``), checked to answer first.

    Raises:
        InputError: an address that cannot be reached, or a cluster that refuses the connection (one line).
    """
    ray = import_ray()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=num_cpus, **options)
    elif address == "auto":
        try:
            ray.init(address="auto", **options)
        except ConnectionError:
            log.warning("no running Ray cluster found; starting a local one")
            ray.init(num_cpus=num_cpus, **options)
    else:
        check_reachable(address)
        try:
            with native_stderr_quiet():  # Ray's C++ client logs a line per retry while it cannot join
                ray.init(address=address, **options)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError... with long texts
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise InputError(f"cannot join the Ray cluster at {address}: {reason}") from None


@contextmanager
def native_stderr_quiet():
    """Send what native code writes to file descriptor 2 to a discarded file meanwhile (not with ``-v``)."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def head_endpoint(address: str) -> tuple[str, int]:
    """(host, port) of a Ray head address ``HOST[:PORT]`` or ``ray://HOST[:PORT]`` (default ports: the GCS's
    :data:`GCS_PORT`, the Ray Client's :data:`CLIENT_PORT`).

    Raises:
        InputError: an address without a host or with a port that is not a number.
    """
    client = address.startswith("ray://")
    target = address.removeprefix("ray://").rstrip("/")
    if target.startswith("["):  # [IPv6]:PORT
        host, bracket, rest = target[1:].partition("]")
        port = rest.removeprefix(":") if bracket and (not rest or rest.startswith(":")) else "?"
    elif target.count(":") == 1:
        host, port = target.split(":")
    else:  # a bare host name, or an IPv6 address without a port
        host, port = target, ""
    number = int(port) if port.isascii() and port.isdigit() else None
    if not host or (port and not (number and number <= 65535)):
        raise InputError(f"--ray {address!r} is not a cluster address: use 'auto', 'local', HOST:PORT or "
                         "ray://HOST:PORT")
    return host, number or (CLIENT_PORT if client else GCS_PORT)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """InputError (one line) unless the head node at ``address`` accepts a TCP connection within ``timeout_s``."""
    host, port = head_endpoint(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        reason = f"no answer within {timeout_s:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise InputError(f"cannot reach the Ray cluster at {address} ({host}:{port}: {reason}); check --ray: a head "
                         "node's HOST:PORT, 'auto' or 'local'") from None


def _record_to_json(record: ImageRecord) -> str:
    return json.dumps({"file": record.file, "spacing": record.pixel_spacing_mm, "view": record.view,
                       "flags": list(record.flags),
                       "vertebrae": [[v.name, *map(float, v.center)] for v in record.vertebrae]})


def _record_from_json(text: str) -> ImageRecord:
    data = json.loads(text)
    vertebrae = tuple(Vertebra(n, np.array([x, y])) for n, x, y in data["vertebrae"])
    return ImageRecord(data["file"], vertebrae, data["spacing"], data.get("view", "as_is"),
                       tuple(data.get("flags", ())))


def images_per_call(batch_size: int, patches_per_image: float) -> int:
    """Images handed to an actor per call: enough patches for :data:`BATCHES_PER_CALL` full inference batches of
    ``batch_size`` patches, at most :data:`MAX_IMAGES_PER_CALL` images."""
    wanted = math.ceil(BATCHES_PER_CALL * batch_size / max(patches_per_image, 1.0))
    return max(1, min(MAX_IMAGES_PER_CALL, wanted))


def plan_rows(images: list[PlannedImage]) -> list[dict[str, str]]:
    """One dataset row per image: its path and its listed centres, which travel with it to the actor."""
    return [{"path": str(p.path), "record": _record_to_json(p.record)} for p in images]


def read_files(batch: dict[str, np.ndarray], max_pixels: int | None = None) -> dict[str, list]:
    """A read task: each row's file bytes, after the checks the local reader makes before reading
    (:func:`~vcorner.io.images.read_image_file`); b"" and its one-line reason for a file that fails them."""
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    contents, errors = [], []
    for path in batch["path"]:
        try:
            contents.append(read_image_file(Path(str(path)), **limit))
            errors.append("")
        except InputError as err:
            contents.append(b"")
            errors.append(str(err))
    return {"path": list(batch["path"]), "record": list(batch["record"]), "bytes": contents, "error": errors}


class CornerActor:
    """A Ray actor holding one inference session; maps a call's images (bytes and centres) to corner rows.

    It prepares every image of the call, runs all their patches through the runner together in batches of
    ``options.batch_size`` (so a GPU actor sees full batches), then finishes each image, writing its requested
    ``--json``/``--vis`` files into ``out_dir`` (shared storage on a cluster). It runs the model the driver
    resolved; its only own step is the TensorRT engine of its GPU when that is still pending.
    """

    def __init__(self, resolved: ResolvedModel, options: BatchOptions, out_dir: str,
                 detector: str | None = None, view_search: bool = True) -> None:
        self.resolved = materialize(resolved, steps=("engine",))
        self.card = self.resolved.card
        self.runner = open_runner(self.resolved).__enter__()
        self.options, self.out_dir = options, Path(out_dir)
        if detector is not None:  # images listed without centres: this actor's own detector session (and finder)
            self.detector = open_detector_use(Path(detector), view_search)
            self.options = replace(options, detector=self.detector.__enter__())
        self.pool = ThreadPoolExecutor(max(1, options.workers or 1), thread_name_prefix="vcorner-actor",
                                       initializer=use_serial_kernels)
        self.inferring = threading.Lock()  # one call infers at a time; the other prepares or finishes meanwhile

    def _prepare(self, path: str, record: str, encoded: bytes, error: str) -> ImageJob | Failed:
        item = PlannedImage(_record_from_json(record), Path(path))
        return Failed(item.record.file, error) if error else prepare_one(item, self.card, self.options, encoded)

    def _finish(self, job: ImageJob | Failed) -> Finished | Failed:
        return job if isinstance(job, Failed) else finish_one(job, self.card, self.out_dir, self.options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        jobs = list(self.pool.map(self._prepare, batch["path"], batch["record"], map(bytes, batch["bytes"]),
                                  batch["error"]))
        ready = [job for job in jobs if isinstance(job, ImageJob)]
        if ready:
            with self.inferring:
                maps = self.runner.infer_all(np.concatenate([job.patches for job in ready]), self.options.batch_size)
            for job, part in zip(ready, np.split(maps, np.cumsum([len(j.patches) for j in ready])[:-1]),
                                 strict=True):
                job.maps = part
        return outcome_columns(list(self.pool.map(self._finish, jobs)))


def outcome_columns(outcomes: list[Finished | Failed]) -> dict[str, list]:
    """The result rows of a call: each image's name and its ``Finished`` (rows, patches, detected centres) or
    ``Failed`` pickled, as Ray pickles everything it moves between the processes of one vcorner."""
    return {"image": [o.image for o in outcomes], "outcome": [pickle.dumps(o) for o in outcomes]}


def unanswered(images: list[PlannedImage], answered: set[str]) -> list[PlannedImage]:
    """Images sent to the actors whose row never came back (an actor that died on them more than
    :data:`ACTOR_RETRIES` times, or a call that raised), in plan order."""
    return [p for p in images if p.record.file not in answered]


@contextmanager
def streaming_context(ray):
    """Ray Data settings of a vcorner batch, restored afterwards: results in plan order (so ``corners.csv`` is
    the local batch's, byte for byte) and a failed call skipped, not fatal (its images are reported)."""
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.max_errored_blocks)
    context.execution_options.preserve_order, context.max_errored_blocks = True, -1
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.max_errored_blocks = saved


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a batch runs on: its CPUs, each actor's share and GPUs, and what a worker has.

    Attributes:
        cpus: CPUs of the cluster.
        actors: actors in the pool.
        per_actor: CPUs per actor (:func:`actor_cpus`).
        gpus_per_actor: GPUs per actor (0: CPU actors).
        caps: a worker's capabilities, probed by a task with an actor's resources: the model is resolved for
            them, once, on the driver.
    """

    cpus: float
    actors: int
    per_actor: float
    gpus_per_actor: float
    caps: Capabilities | None


PROBE_TIMEOUT_S = 300.0
"""Seconds to wait for the worker probe (a task with an actor's resources) before refusing the batch."""


def join_cluster(address: str, actors: int, gpus_per_actor: float = 0.0) -> Cluster:
    """Connect, check that ``actors`` fit beside the reads, and probe what a worker with an actor's resources has.

    Raises:
        InputError: actors that cannot fit the cluster. MachineError: a worker that does not answer the probe.
    """
    ray = import_ray()
    connect(address, num_cpus=None)
    quiet_ray_data(ray)
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    per_actor = actor_cpus(cpus, actors, gpus, gpus_per_actor)
    log.info("Ray: %d actor(s) of %.3g CPU each on a cluster of %g CPU(s)", actors, per_actor, cpus)

    task = ray.remote(num_cpus=per_actor, num_gpus=gpus_per_actor)(probe)
    try:
        caps = ray.get(task.remote(), timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise MachineError(f"no Ray worker with {per_actor:g} CPU and {gpus_per_actor:g} GPU answered in "
                         f"{PROBE_TIMEOUT_S:g} s; check --ray-actors and --ray-gpus against the cluster") from None
    return Cluster(cpus, actors, per_actor, gpus_per_actor, caps)


def run_batch_ray(plan: Plan, out_dir: Path, resolved: ResolvedModel, options: BatchOptions,
                  cluster: Cluster | None, progress: Progress | None = None, stall_s: float = DEFAULT_STALL_S,
                  images_per_actor_call: int | None = None, actor_type: type = CornerActor) -> BatchSummary:
    """Process every planned image on Ray Data; same outputs as :func:`vcorner.pipeline.batch.run_batch`.

    Rows (path and centres) go to read tasks, which add the file's bytes, then to a pool of ``actor_type`` actors,
    ``images_per_actor_call`` images a call (None: :func:`images_per_call`). Every actor opens ``resolved``
    (resolved for ``cluster.caps`` on the driver, so all run the same graph) with :func:`actor_threads` ONNX
    Runtime threads. The driver writes each image as its row streams back, in plan order; ``cluster`` is None only
    when there is nothing to do. An image whose actor died more than :data:`ACTOR_RETRIES` times is reported in
    ``errors.csv``, never left out silently.

    Raises:
        MachineError: a batch stuck for ``stall_s`` seconds.
    """
    ray = import_ray()
    progress = progress or Progress()
    out_dir = Path(out_dir)
    journal, todo, summary, detected = start_outputs(plan, out_dir, options, resolved.card)
    progress.start(len(todo))
    began = time.perf_counter()
    readable = [p for p in todo if p.path.is_file()]
    for item in todo:
        if not item.path.is_file():  # the same one-line reason the local batch gives
            try:
                read_image_file(item.path)
            except InputError as err:
                summary.failed[item.record.file] = str(err)
            progress.image_done(0)
    try:
        if readable and cluster is not None:
            threads = actor_threads(resolved.threads, cluster.per_actor, cluster.actors, cluster.cpus)
            per_call = images_per_actor_call or images_per_call(options.batch_size,
                                                                patches_per_image(readable, resolved, options))
            log.info("Ray: %d image(s) per actor call", per_call)
            actor_options = replace(options, detector=None, workers=options.workers or actor_workers(cluster))
            constructor = {"resolved": replace(resolved, threads=threads), "options": actor_options,
                           "out_dir": str(out_dir), "detector": options.detector.path if options.detector else None,
                           "view_search": bool(options.detector and options.detector.finder is not None)}
            answered: set[str] = set()
            for row in stream_rows(ray, readable, per_call, cluster, actor_type, constructor, stall_s):
                outcome = pickle.loads(row["outcome"])
                answered.add(outcome.image)
                summary.patches += outcome.patches if isinstance(outcome, Finished) else 0
                record_outcome(outcome, journal, summary, progress, detected)  # the local batch's one writer
            for item in unanswered(readable, answered):
                summary.failed[item.record.file] = (
                    f"no result from the Ray actors: the call holding it failed or its actor died {ACTOR_RETRIES + 1} "
                    "times (see the Ray log); run again to retry it")
                progress.image_done(0)
    finally:
        journal.close()
        close_detected(out_dir, detected, summary)
        write_run_errors(out_dir, summary)
    summary.seconds = time.perf_counter() - began
    return summary


def stream_rows(ray, images: list[PlannedImage], per_call: int, cluster: Cluster, actor_type: type,
                constructor: dict[str, Any], stall_s: float) -> Iterator[dict[str, Any]]:
    """The result rows of ``images`` as they stream back in plan order: read tasks, then ``actor_type`` actors
    built with ``constructor``, ``per_call`` images a call."""
    if not images:
        return
    with streaming_context(ray):  # before the dataset is made: it keeps a copy of the context
        rows = ray.data.from_items(plan_rows(images), override_num_blocks=math.ceil(len(images) / per_call))
        # Reading is light: a fraction of a CPU, so that the actors' CPUs never starve it (deadlock).
        read = rows.map_batches(read_files, batch_size=per_call, num_cpus=READ_CPUS,
                                fn_kwargs={"max_pixels": constructor["options"].max_pixels})
        results = map_actors(read, actor_type, per_call, cluster, fn_constructor_kwargs=constructor)
        yield from watch(results.iter_rows(), stall_s, cluster.actors)


def actor_pool(ray, cluster: Cluster):
    """The actor pool: ``cluster.actors`` actors; a CPU actor runs :data:`CALLS_PER_CPU_ACTOR` calls at once
    where this Ray can (a GPU actor one: GPU runners keep their CUDA state on one thread). A call that kills its
    actor also kills the call beside it, whose retries it uses up too."""
    if cluster.gpus_per_actor:
        return ray.data.ActorPoolStrategy(size=cluster.actors)
    try:
        return ray.data.ActorPoolStrategy(size=cluster.actors, max_concurrent_calls_per_actor=CALLS_PER_CPU_ACTOR,
                                          enable_true_multi_threading=True)
    except TypeError:  # Ray before 2.4x: one call at a time
        return ray.data.ActorPoolStrategy(size=cluster.actors)


def map_actors(dataset, actor_type: type, per_call: int, cluster: Cluster, **kwargs: Any):
    """``dataset.map_batches`` on a pool of ``cluster.actors`` actors of ``actor_type``, ``per_call`` rows a call.

    Each actor is restarted whenever it dies and a call is retried :data:`ACTOR_RETRIES` times. Ray 2.60
    deprecates passing these actor options (without a replacement) and will drop them in 2.64; where they are
    refused, Ray's default applies (retried without end: a file that kills every actor holding it then stops the
    batch by the stall watchdog instead of failing alone).
    """
    ray = import_ray()
    common = {"batch_size": per_call, "num_cpus": cluster.per_actor, "num_gpus": cluster.gpus_per_actor or None,
              "compute": actor_pool(ray, cluster), **kwargs}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        try:
            return dataset.map_batches(actor_type, max_restarts=-1, max_task_retries=ACTOR_RETRIES, **common)
        except TypeError:
            log.warning("this Ray refuses max_task_retries: a call whose actor dies is retried without end")
            return dataset.map_batches(actor_type, **common)


def patches_per_image(images: list[PlannedImage], resolved: ResolvedModel, options: BatchOptions) -> float:
    """The mean patches an image will take: poses per vertebra x mean listed vertebrae (the detector's names for
    images listed without centres)."""
    names = len(options.detector.card.names) if options.detector else 0
    vertebrae = [len(p.record.vertebrae) or names for p in images]
    return len(sample_poses(resolved.card.sampling)) * max(float(np.mean(vertebrae)), 1.0)
