"""The driver of a Ray batch: the model resolved once for a worker (:func:`open_ray`), the dataset of the images
still to do streamed through read tasks and a pool of actors, and every outcome handed in plan order to the run's
one writer (:class:`RayExecutor`)."""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vcorner.backends import ModelRequest, ResolvedModel
from vcorner.geometry.patches import sample_poses
from vcorner.io.images import read_image_file
from vcorner.io.records import InputError, MachineError
from vcorner.pipeline.outcomes import Finished
from vcorner.pipeline.ray.actor import CornerActor, read_files
from vcorner.pipeline.ray.cluster import Cluster, import_ray, join_cluster
from vcorner.pipeline.ray.codec import outcome_of, plan_rows
from vcorner.pipeline.ray.resources import (
    CALLS_PER_CPU_ACTOR,
    READ_CPUS,
    actor_threads,
    actor_workers,
    images_per_call,
)
from vcorner.pipeline.ray.watchdog import DEFAULT_STALL_S, watch
from vcorner.pipeline.run import BatchRun, Notes
from vcorner.pipeline.session import OutputSession
from vcorner.stages.plan import Plan, PlannedImage

log = logging.getLogger(__name__)

ACTOR_RETRIES = 2
"""Times a call is retried on a restarted actor after its actor died (killed, out of memory) before its images
are reported failed."""


@dataclass(frozen=True)
class RaySettings:
    """The user's Ray options: ``--ray`` (``auto``, ``local`` or a head's address), ``--ray-actors``,
    ``--ray-gpus`` (per actor), ``--ray-stall-timeout`` (s) and ``--ray-images`` (per actor call; None: enough for
    full inference batches, :func:`~vcorner.pipeline.ray.resources.images_per_call`)."""

    address: str
    actors: int = 1
    gpus_per_actor: float = 0.0
    stall_s: float = DEFAULT_STALL_S
    images_per_call: int | None = None


@contextmanager
def open_ray(plan: Plan, request: ModelRequest,
             settings: RaySettings) -> Iterator[tuple[RayExecutor, ResolvedModel]]:
    """The Ray executor of ``request``: the cluster joined (when there is anything to do; refused before OUT is
    touched), the model resolved once for a worker's capabilities and its FP16 graph and INT8 check made here, so
    that every actor runs this very graph; and the resolved model."""
    from vcorner.backends import materialize

    import_ray()
    cluster = join_cluster(settings.address, settings.actors, settings.gpus_per_actor) if plan.images else None
    resolved = materialize(request.resolve(cluster.caps if cluster else None), steps=("fp16", "int8_check", "ov_check"))
    yield RayExecutor(cluster, resolved, settings), resolved


class RayExecutor:
    """Does a run's images on Ray Data: rows (path and centres) go to read tasks, which add the file's bytes, then
    to a pool of ``actor_type`` actors, each opening ``resolved`` with
    :func:`~vcorner.pipeline.ray.resources.actor_threads` ONNX Runtime threads. ``cluster`` is None only when there
    is nothing to do."""

    notes: Notes = ()

    def __init__(self, cluster: Cluster | None, resolved: ResolvedModel, settings: RaySettings,
                 actor_type: type = CornerActor) -> None:
        self.cluster, self.resolved, self.settings, self.actor_type = cluster, resolved, settings, actor_type
        self.name = f"ray ({settings.actors} actor(s), {resolved.backend.value} {resolved.precision})"
        self.on_gpu, self.model_id = resolved.device != "cpu", resolved.identity

    def execute(self, run: BatchRun, session: OutputSession) -> None:
        """Do ``session.todo``: each image written as its row streams back, in plan order. A missing file fails
        with the local batch's reason; an image whose actor died more than :data:`ACTOR_RETRIES` times is reported
        in ``errors.csv``, never left out silently.

        Raises:
            MachineError: a batch stuck for ``settings.stall_s`` seconds, or stopped by Ray (actors that cannot
                start).
        """
        ray = import_ray()
        readable = [p for p in session.todo if p.path.is_file()]
        for item in session.todo:
            if not item.path.is_file():  # the same one-line reason the local batch gives
                try:
                    read_image_file(item.path)
                except InputError as err:
                    session.fail(item.record.file, str(err))
                    continue
                session.progress.image_done(0)
        if not readable or self.cluster is None:
            return
        per_call = self.settings.images_per_call or images_per_call(run.batch_size, patches_per_image(readable, run))
        log.info("Ray: %d image(s) per actor call", per_call)
        answered: set[str] = set()
        rows = stream_rows(ray, readable, per_call, self.cluster, self.actor_type, self.actor_arguments(run),
                           self.settings.stall_s, run.settings.max_pixels)
        try:
            for row in rows:
                outcome = outcome_of(row)
                answered.add(outcome.image)
                session.summary.patches += outcome.patches if isinstance(outcome, Finished) else 0
                session.record(outcome)  # the local batch's one writer
        except ray.exceptions.RayError as err:  # actors that cannot start, a cluster gone: not the images' fault
            raise ray_failure(err) from None
        for item in unanswered(readable, answered):
            session.fail(item.record.file, f"no result from the Ray actors: the call holding it failed or its actor "
                                           f"died {ACTOR_RETRIES + 1} times (see the Ray log); run again to retry it")

    def actor_arguments(self, run: BatchRun) -> dict[str, Any]:
        """What every actor is built with: the resolved model (with its share of the cores as threads), the run's
        settings, OUT, batch size and detector, and its threads for preparing and finishing images."""
        cluster = self.cluster
        threads = actor_threads(self.resolved.threads, cluster.per_actor, cluster.actors, cluster.cpus)
        return {"resolved": replace(self.resolved, threads=threads), "settings": run.settings, "out_dir": str(run.out),
                "batch_size": run.batch_size, "detector": run.detector,
                "workers": run.settings.workers or actor_workers(cluster.per_actor, cluster.gpus_per_actor)}


def ray_failure(err: Exception) -> MachineError:
    """The one-line MachineError of a Ray batch that Ray stopped (actors that fail to start, say): Ray's error
    type and the last line of its text, which names the first cause (``RuntimeError: ...`` raised in an actor)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
    reason = (lines[-1] if lines else "")[:300]
    return MachineError(f"the Ray batch failed ({type(err).__name__}): {reason}; finished images are kept, run the "
                        "same command again to resume")


def patches_per_image(images: list[PlannedImage], run: BatchRun) -> float:
    """The mean patches an image will take: poses per vertebra x mean listed vertebrae (the detector's names for
    images listed without centres)."""
    names = len(run.detector.card.names) if run.detector else 0
    vertebrae = [len(p.record.vertebrae) or names for p in images]
    return len(sample_poses(run.card.sampling)) * max(float(np.mean(vertebrae)), 1.0)


def unanswered(images: list[PlannedImage], answered: set[str]) -> list[PlannedImage]:
    """Images sent to the actors whose row never came back (an actor that died on them more than
    :data:`ACTOR_RETRIES` times, or a call that raised), in plan order."""
    return [p for p in images if p.record.file not in answered]


def stream_rows(ray, images: list[PlannedImage], per_call: int, cluster: Cluster, actor_type: type,
                constructor: dict[str, Any], stall_s: float, max_pixels: int | None) -> Iterator[dict[str, Any]]:
    """The result rows of ``images`` as they stream back in plan order: read tasks, then ``actor_type`` actors
    built with ``constructor``, ``per_call`` images a call."""
    if not images:
        return
    with streaming_context(ray):  # before the dataset is made: it keeps a copy of the context
        rows = ray.data.from_items(plan_rows(images), override_num_blocks=math.ceil(len(images) / per_call))
        # Reading is light: a fraction of a CPU, so that the actors' CPUs never starve it (deadlock).
        read = rows.map_batches(read_files, batch_size=per_call, num_cpus=READ_CPUS,
                                fn_kwargs={"max_pixels": max_pixels})
        results = map_actors(read, actor_type, per_call, cluster, fn_constructor_kwargs=constructor)
        yield from watch(results.iter_rows(), stall_s, cluster.actors)


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
