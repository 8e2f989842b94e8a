"""Joining a Ray cluster for a batch: Ray imported on demand, an address parsed and checked to answer, the actors'
share of the cluster worked out, and what a worker with an actor's resources has probed."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vcorner.backends import probe
from vcorner.hardware.capabilities import Capabilities
from vcorner.io.records import InputError, MachineError
from vcorner.pipeline.ray.resources import actor_cpus

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed: pip install 'vcorner[ray]'"
GCS_PORT = 6379
"""Default port of a Ray head node's GCS (``ray start --head``)."""
CLIENT_PORT = 10001
"""Default port of the Ray Client server (``ray://`` addresses)."""
CONNECT_TIMEOUT_S = 5.0
"""Seconds to wait for a cluster address to accept a connection before refusing the batch."""
PROBE_TIMEOUT_S = 300.0
"""Seconds to wait for the worker probe (a task with an actor's resources) before refusing the batch."""


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a batch runs on: its CPUs, each actor's share and GPUs, and what a worker has.

    Attributes:
        cpus: CPUs of the cluster.
        actors: actors in the pool.
        per_actor: CPUs per actor (:func:`~vcorner.pipeline.ray.resources.actor_cpus`).
        gpus_per_actor: GPUs per actor (0: CPU actors).
        caps: a worker's capabilities, probed by a task with an actor's resources: the model is resolved for
            them, once, on the driver.
    """

    cpus: float
    actors: int
    per_actor: float
    gpus_per_actor: float
    caps: Capabilities | None


def import_ray():
    """The ``ray`` module, or MachineError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MachineError(INSTALL_HINT) from None
    return ray


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


def quiet_ray_data(ray) -> None:
    """No Ray Data progress bars or INFO lines on the user's terminal unless vcorner runs with ``-v``."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
