"""Resource arithmetic of a Ray batch: CPUs and threads per actor beside the read tasks, images per actor call."""

from __future__ import annotations

import math

from vcorner.io.records import InputError

READ_CPUS = 0.25
"""CPUs of one read task (a file's bytes: light, and must never be starved by the actors)."""
READ_RESERVE_CPUS = 0.5
"""CPUs left to Ray Data's read tasks (:data:`READ_CPUS` each) beside the actors."""
GPU_ACTOR_MAX_CPUS = 16.0
"""Most CPUs a GPU actor takes for its decoding and corner threads."""
CALLS_PER_CPU_ACTOR = 2
"""Calls a CPU actor runs at once: one prepares or finishes its images while the other infers (inference itself
runs one call at a time, as the local batch overlaps its stages)."""
MIN_ACTOR_CPUS = 0.1
"""The smallest CPU share an actor may get; fewer CPUs than that per actor is refused."""
BATCHES_PER_CALL = 4
"""Full inference batches' worth of patches handed to an actor per call (:func:`images_per_call`)."""
MAX_IMAGES_PER_CALL = 64
"""Most images per actor call: bounds an actor's memory (decoded images and patches of one call)."""


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


def actor_workers(cpus_per_actor: float, gpus_per_actor: float) -> int:
    """Threads of an actor's CPU stages: one per whole CPU of a GPU actor; in a CPU actor one per concurrent call
    (:data:`CALLS_PER_CPU_ACTOR`), so that one call prepares or finishes while the other infers, as the local
    batch's loader and finisher threads do beside its inference."""
    return max(1, int(cpus_per_actor)) if gpus_per_actor else CALLS_PER_CPU_ACTOR


def actor_threads(threads: int | None, cpus_per_actor: float, actors: int, cluster_cpus: float) -> int | None:
    """ONNX Runtime threads per actor: ``threads`` if given; all cores for one whole-CPU actor; else the
    actor's share of the cores (at least 1), so that several actors do not oversubscribe them."""
    if threads is not None or (actors == 1 and cpus_per_actor >= 1.0):
        return threads
    return max(1, int(cluster_cpus // actors))


def images_per_call(batch_size: int, patches_per_image: float) -> int:
    """Images handed to an actor per call: enough patches for :data:`BATCHES_PER_CALL` full inference batches of
    ``batch_size`` patches, at most :data:`MAX_IMAGES_PER_CALL` images."""
    wanted = math.ceil(BATCHES_PER_CALL * batch_size / max(patches_per_image, 1.0))
    return max(1, min(MAX_IMAGES_PER_CALL, wanted))
