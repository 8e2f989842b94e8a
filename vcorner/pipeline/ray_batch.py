"""``vcorner batch --ray``: the same per-image work on Ray Data, across the CPUs or GPUs of a cluster.

``read_binary_files`` streams the images (one row per image, so no shuffle), a pool of stateful actors each
holding one inference session (``compute=ActorPoolStrategy``) prepares, infers and decodes them, and the driver
writes through the same atomic journal as the local batch, so results and ``errors.csv`` are identical.

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
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vcorner.export.materialize import materialize
from vcorner.hardware.capabilities import Capabilities, probe
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, InputError, Vertebra
from vcorner.models.resolve import ResolvedModel
from vcorner.pipeline.batch import (
    BatchOptions,
    BatchSummary,
    Progress,
    close_detected,
    note_detected,
    start_outputs,
    write_run_errors,
)
from vcorner.pipeline.detection import DetectorUse
from vcorner.pipeline.outputs import corner_rows
from vcorner.runtime.open import open_detector, open_runner
from vcorner.stages.detect import DetectedCentres
from vcorner.stages.finish import finish
from vcorner.stages.plan import Plan, PlannedImage
from vcorner.stages.prepare import prepare

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed: pip install 'vcorner[ray]'"
READ_RESERVE_CPUS = 0.5
"""CPUs left to Ray Data's read tasks (0.25 each) beside the actors."""
MIN_ACTOR_CPUS = 0.1
"""The smallest CPU share an actor may get; fewer CPUs than that per actor is refused."""
DEFAULT_STALL_S = 600.0
"""Seconds without an image coming back before a Ray batch is declared stuck (covers actor start-up)."""


def actor_cpus(cluster_cpus: float, actors: int, cluster_gpus: float = 0.0, gpus_per_actor: float = 0.0) -> float:
    """CPUs per actor: an equal share of the cluster's CPUs less :data:`READ_RESERVE_CPUS`, at most 1.

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
    return round(min(1.0, share), 3)


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
        raise InputError(f"the Ray batch made no progress for {stall_s:g} s, stuck {stage}; finished images are "
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
    """The ``ray`` module, or InputError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return ray


def connect(address: str, num_cpus: int | None = None) -> None:
    """Join a Ray cluster: ``local`` starts one here, ``auto`` joins a running one (else starts one)."""
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
        ray.init(address=address, **options)


def _record_to_json(record: ImageRecord) -> str:
    return json.dumps({"file": record.file, "spacing": record.pixel_spacing_mm,
                       "vertebrae": [[v.name, *map(float, v.center)] for v in record.vertebrae]})


def _record_from_json(text: str) -> ImageRecord:
    data = json.loads(text)
    vertebrae = tuple(Vertebra(n, np.array([x, y])) for n, x, y in data["vertebrae"])
    return ImageRecord(data["file"], vertebrae, data["spacing"])


def _detected_to_json(found: DetectedCentres | None) -> str:
    """The detector's findings of one image, for the driver's journal ("" for clicked centres)."""
    if found is None:
        return ""
    return json.dumps({"listed": _record_to_json(found.listed), "confidence": found.confidence,
                       "record": _record_to_json(found.record), "left_out": found.left_out,
                       "dropped": len(found.dropped)})


def _detected_from_json(text: str) -> tuple[DetectedCentres | None, int]:
    """The detector's findings sent back by an actor, and how many detections it dropped."""
    if not text:
        return None, 0
    data = json.loads(text)
    return DetectedCentres(_record_from_json(data["listed"]), data["confidence"], _record_from_json(data["record"]),
                           data["left_out"]), int(data["dropped"])


def read_images(ray, paths: list[str]):
    """A dataset of (bytes, path) rows, each read task taking a quarter CPU (named argument in Ray >= 2.5x)."""
    try:
        return ray.data.read_binary_files(paths, include_paths=True, num_cpus=0.25)
    except TypeError:  # older Ray: remote arguments as a dict
        return ray.data.read_binary_files(paths, include_paths=True, ray_remote_args={"num_cpus": 0.25})


class CornerActor:
    """A Ray actor holding one inference session; maps a batch of image rows to corner rows or errors.

    It runs the model the driver resolved (:class:`~vcorner.models.resolve.ResolvedModel`); its only own step is
    the TensorRT engine of its GPU when that is still pending (the cache step, before the runner opens).
    """

    def __init__(self, resolved: ResolvedModel, centers: dict[str, str], batch_size: int,
                 max_pixels: int | None, detector: str | None = None) -> None:

        self.resolved = materialize(resolved, steps=("engine",))
        self.card = self.resolved.card
        self.runner = open_runner(self.resolved).__enter__()
        self.centers, self.batch_size, self.max_pixels = centers, batch_size, max_pixels
        self.detect = None
        if detector is not None:  # images listed without centres: this actor's own detector session
            runner, card = open_detector(Path(detector))
            self.detect = DetectorUse(card, runner.__enter__().infer, runner.identity(), detector)

    def one(self, data: bytes, path: str) -> tuple[str, str, str, int, str]:
        """(image name, corner rows as JSON, error reason or "", patches, detected centres as JSON or "") for one
        image's bytes."""
        record = _record_from_json(self.centers[path])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            local.write_bytes(data)
            try:
                job = prepare(PlannedImage(record, local), self.card, max_pixels=self.max_pixels,
                              detect=self.detect)
            except InputError as err:
                return record.file, "", str(err).replace(str(local), path), 0, ""
            except (OSError, ValueError, TypeError, MemoryError) as err:  # as the local batch: this image fails
                return (record.file, "", f"cannot process: {type(err).__name__}: {err}".replace(str(local), path), 0,
                        "")
        job.maps = self.runner.infer_all(job.patches, self.batch_size)
        try:
            corners, _ = finish(job, self.card)
            rows = corner_rows(record.file, corners)
        except (InputError, ValueError) as err:  # as in the local batch: this image fails, not the dataset
            return record.file, "", f"post-processing failed: {err}", len(job.patches), ""
        return record.file, json.dumps(rows), "", len(job.patches), _detected_to_json(job.detected)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"image": [], "rows": [], "error": [], "patches": [], "detected": []}
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            for key, value in zip(out, self.one(bytes(data), str(path)), strict=True):
                out[key].append(value)
        return out


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
        InputError: actors that cannot fit the cluster, or a worker that does not answer the probe.
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
        raise InputError(f"no Ray worker with {per_actor:g} CPU and {gpus_per_actor:g} GPU answered in "
                         f"{PROBE_TIMEOUT_S:g} s; check --ray-actors and --ray-gpus against the cluster") from None
    return Cluster(cpus, actors, per_actor, gpus_per_actor, caps)


def run_batch_ray(plan: Plan, out_dir: Path, resolved: ResolvedModel, options: BatchOptions,
                  cluster: Cluster | None, progress: Progress | None = None,
                  stall_s: float = DEFAULT_STALL_S) -> BatchSummary:
    """Process every planned image on Ray Data; same outputs as :func:`vcorner.pipeline.batch.run_batch`.

    Every actor opens ``resolved`` (resolved for ``cluster.caps`` on the driver, so all run the same graph),
    with :func:`actor_threads` ONNX Runtime threads; ``cluster`` is None only when there is nothing to do.

    Raises:
        InputError: a batch stuck for ``stall_s`` seconds.
    """
    ray = import_ray()
    progress = progress or Progress()
    out_dir = Path(out_dir)
    journal, todo, summary, detected = start_outputs(plan, out_dir, options)
    progress.start(len(todo))
    began = time.perf_counter()
    readable = [p for p in todo if p.path.is_file()]
    for item in todo:
        if not item.path.is_file():  # the same one-line reason the local batch gives
            try:
                read_image(item.path)
            except InputError as err:
                summary.failed[item.record.file] = str(err)
            progress.image_done(0)
    try:
        if readable and cluster is not None:
            centers = {str(p.path): _record_to_json(p.record) for p in readable}
            threads = actor_threads(resolved.threads, cluster.per_actor, cluster.actors, cluster.cpus)
            # Reading is light: a fraction of a CPU, so that the actors' CPUs never starve it (deadlock).
            dataset = read_images(ray, [str(p.path) for p in readable])
            results = dataset.map_batches(
                CornerActor, batch_size=1, num_cpus=cluster.per_actor, num_gpus=cluster.gpus_per_actor or None,
                compute=ray.data.ActorPoolStrategy(size=cluster.actors),
                fn_constructor_kwargs={"resolved": replace(resolved, threads=threads), "centers": centers,
                                       "batch_size": options.batch_size, "max_pixels": options.max_pixels,
                                       "detector": options.detector.path if options.detector else None},
            )
            for row in watch(results.iter_rows(), stall_s, cluster.actors):
                if row["error"]:
                    summary.failed[row["image"]] = row["error"]
                else:
                    found, dropped = _detected_from_json(row["detected"])
                    if found is not None and detected is not None:  # its centres first, as in the local batch
                        note_detected(found, dropped, detected, summary)
                    journal.add(json.loads(row["rows"]))
                    summary.done += 1
                summary.patches += int(row["patches"])
                progress.image_done(int(row["patches"]))
    finally:
        journal.close()
        close_detected(out_dir, detected, summary)
        write_run_errors(out_dir, summary)
    summary.seconds = time.perf_counter() - began
    return summary
