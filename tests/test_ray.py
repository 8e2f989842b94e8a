"""``vcorner batch --ray`` on a local Ray instance gives exactly the local batch's outputs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vcorner.cli import app


def test_without_ray_the_flag_fails_with_an_install_hint(toy_dataset, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--out", str(tmp_path / "o"), "--model", str(tiny_onnx), "--ray", "local"])
    assert result.exit_code == 3 and "pip install 'vcorner[ray]'" in result.output  # a dependency, not the input


@pytest.mark.slow
def test_ray_batch_writes_the_local_batch_byte_for_byte(toy_dataset, tiny_onnx, tmp_path):
    """Several images per actor call, decoded from bytes, with --json and --vis written by the actors: every
    output file is the local batch's, byte for byte, and a file that fails to decode fails only itself."""
    ray = pytest.importorskip("ray")
    root = tmp_path / "xrays"
    shutil.copytree(toy_dataset, root)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with open(root / "centers.csv", "a", encoding="utf-8") as handle:
        handle.write("broken.png,C3,100,100\nbroken.png,C4,100,160\ngone.png,C3,1,1\ngone.png,C4,1,2\n")
    outputs = {}
    try:
        for mode in ("local", "ray"):
            out = tmp_path / mode
            args = ["batch", str(root), "--centers", str(root / "centers.csv"), "--out", str(out),
                    "--model", str(tiny_onnx), "--json", "--vis"] + (
                ["--ray", "local", "--ray-images", "3"] if mode == "ray" else [])
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 1, result.output  # broken.png and gone.png failed
            outputs[mode] = {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*"))
                             if f.is_file() and f.name != "run.json"}
    finally:
        ray.shutdown()
    assert outputs["ray"] == outputs["local"]
    assert len(outputs["ray"]["corners.csv"].decode().splitlines()) == 1 + 4 * 5 * 4
    assert sum(name.endswith(".json") for name in outputs["ray"]) == 4
    assert sum(name.startswith("vis/") for name in outputs["ray"]) == 4
    errors = outputs["ray"]["errors.csv"].decode().splitlines()
    assert [line.split(",")[0] for line in errors] == ["image", "broken.png", "gone.png"]
    assert "broken.png: corrupt PNG" in errors[1]


def _ray_run(root: Path, model: Path, out: Path, actor_type, per_call: int):
    """``run_batch_ray`` of ``root``'s centres on one local actor of class ``actor_type``."""
    from vcorner.backends import ModelRequest
    from vcorner.pipeline.executor import run_batch
    from vcorner.pipeline.ray.cluster import join_cluster
    from vcorner.pipeline.ray.driver import RayExecutor, RaySettings
    from vcorner.pipeline.run import BatchRun, BatchSettings
    from vcorner.stages.plan import make_plan

    cluster = join_cluster("local", 1)
    resolved = ModelRequest(model).resolve(cluster.caps)
    run = BatchRun(make_plan(root, root / "centers.csv"), out, resolved.card, BatchSettings(), 64,
                   resolved.identity, resolved.card_digest)
    return run_batch(run, RayExecutor(cluster, resolved, RaySettings("local", images_per_call=per_call), actor_type))


@pytest.mark.slow
def test_a_killed_actor_has_its_images_retried_and_one_that_always_dies_has_them_reported(
        toy_dataset, tiny_onnx, tmp_path):
    """The actor's process is SIGKILLed in its first call: Ray restarts it and retries the call, and the corners
    are those of an undisturbed run. An actor killed by every call holding one image is retried, then that call's
    images are reported in errors.csv; the other calls' images are done."""
    import os
    import signal

    ray = pytest.importorskip("ray")
    from vcorner.pipeline.ray.actor import CornerActor
    from vcorner.pipeline.ray.driver import ACTOR_RETRIES

    killed = tmp_path / "killed"

    class KilledOnce(CornerActor):
        def __call__(self, batch):
            try:  # created atomically: of two actors in their first call at once, one alone dies
                os.close(os.open(killed, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return super().__call__(batch)
            os.kill(os.getpid(), signal.SIGKILL)

    class KilledByToy0(CornerActor):
        def __call__(self, batch):
            if any(str(path).endswith("toy0.png") for path in batch["path"]):
                with open(killed, "a") as handle:
                    handle.write("1")
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    try:
        calm = _ray_run(toy_dataset, tiny_onnx, tmp_path / "calm", CornerActor, 2)
        once = _ray_run(toy_dataset, tiny_onnx, tmp_path / "once", KilledOnce, 2)
        assert killed.exists()  # an actor was killed in its call (a marker written then could be cut by Ray)
        killed.write_text("")
        always = _ray_run(toy_dataset, tiny_onnx, tmp_path / "always", KilledByToy0, 2)
    finally:
        ray.shutdown()
    assert (calm.done, once.done) == (4, 4) and not once.failed
    assert (tmp_path / "once" / "corners.csv").read_bytes() == (tmp_path / "calm" / "corners.csv").read_bytes()
    assert len(killed.read_text()) >= ACTOR_RETRIES + 1  # the first try and every retry died
    # the call holding toy0 is reported; the other call is done, or reported too when it ran beside toy0's in
    # the actor's process and died with it: every image is answered or reported, never missing
    corners = (tmp_path / "always" / "corners.csv").read_text().splitlines()
    done = {line.split(",")[0] for line in corners[1:]}
    assert {"toy0.png", "toy1.png"} <= set(always.failed) and always.done == len(done) == 4 - len(always.failed)
    assert done | set(always.failed) == {f"toy{i}.png" for i in range(4)}
    assert all("no result from the Ray actors" in reason for reason in always.failed.values())
    assert set(corners) <= set((tmp_path / "calm" / "corners.csv").read_text().splitlines())
    assert "toy0.png" in (tmp_path / "always" / "errors.csv").read_text()


@pytest.mark.slow
def test_actors_that_cannot_start_stop_the_batch_as_a_machine_failure(toy_dataset, tiny_onnx, tmp_path):
    """An actor whose session will not open (an engine that fails to load) is a failure of the machine, in one
    line naming the cause (exit 3 from the CLI), not a traceback (exit 1, as if some images had failed)."""
    ray = pytest.importorskip("ray")
    from vcorner.io.records import MachineError
    from vcorner.pipeline.ray.actor import CornerActor

    class Unloadable(CornerActor):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("TensorRT cannot deserialize the plan")

    try:
        with pytest.raises(MachineError, match=r"Ray batch failed \(.*\): RuntimeError: TensorRT cannot deserialize"):
            _ray_run(toy_dataset, tiny_onnx, tmp_path / "o", Unloadable, 2)
    finally:
        ray.shutdown()
    assert (tmp_path / "o" / "corners.csv").read_text().startswith("image,")  # the writer was closed


def test_cluster_addresses_are_parsed_or_refused_in_one_line():
    from vcorner.io.records import InputError
    from vcorner.pipeline.ray.cluster import head_endpoint

    assert head_endpoint("10.0.0.1:6380") == ("10.0.0.1", 6380) and head_endpoint("head") == ("head", 6379)
    assert head_endpoint("ray://head") == ("head", 10001) and head_endpoint("[::1]:7000") == ("::1", 7000)
    for bad in ("ray://", "h:x", "h:\u00b2", "h:70000", "h:0", "[::1", "[::1]x"):
        with pytest.raises(InputError, match="is not a cluster address"):
            head_endpoint(bad)


def test_an_unreachable_cluster_address_fails_in_one_line(toy_dataset, tiny_onnx, tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port on this machine that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(app, ["batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
                                      "--out", str(tmp_path / "o"), "--model", str(tiny_onnx),
                                      "--ray", f"127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_images_per_call_fill_whole_inference_batches():
    from vcorner.pipeline.ray.resources import MAX_IMAGES_PER_CALL, images_per_call

    assert images_per_call(256, 80) == 13  # 13 x 80 = 1040 patches >= 4 batches of 256
    assert images_per_call(4096, 80) == MAX_IMAGES_PER_CALL and images_per_call(1, 500) == 1


def test_actors_share_the_cpus_left_beside_the_reads():
    from vcorner.io.records import InputError
    from vcorner.pipeline.ray.resources import actor_cpus, actor_threads

    assert actor_cpus(2, 1) == 1.0 and actor_cpus(2, 2) == 0.75 and actor_cpus(16, 4) == 1.0
    assert actor_cpus(16, 4, cluster_gpus=4, gpus_per_actor=1) == 3.875  # a GPU actor's threads decode and decide
    assert actor_threads(None, 1.0, 1, 2) is None and actor_threads(None, 0.75, 2, 2) == 1
    assert actor_threads(3, 0.75, 2, 2) == 3
    with pytest.raises(InputError, match="use at most 15"):
        actor_cpus(2, 16)
    with pytest.raises(InputError, match="needs 4 GPU"):
        actor_cpus(16, 4, cluster_gpus=1, gpus_per_actor=1)


def test_a_stalled_ray_batch_stops_with_a_named_stage():
    import threading

    from vcorner.io.records import MachineError
    from vcorner.pipeline.ray.watchdog import watch

    never = threading.Event()

    def rows(n):
        yield from range(n)
        for _ in range(300):  # a stuck pipeline: no row comes for 30 s (interrupted by the watchdog)
            never.wait(0.1)

    with pytest.raises(MachineError, match="before the first image came back"):
        list(watch(rows(0), 0.5, 2))
    with pytest.raises(MachineError, match="in the actors after 2 image"):
        list(watch(rows(2), 0.5, 2))
    assert list(watch(iter(range(3)), 5, 1)) == [0, 1, 2]


def test_the_stall_watchdog_works_in_a_batch_started_in_the_background():
    """A shell's background job (``vcorner batch ... &``) starts with SIGINT ignored; the watchdog still stops a
    stuck batch, and the ignored handler is back afterwards."""
    import signal
    import threading

    from vcorner.io.records import MachineError
    from vcorner.pipeline.ray.watchdog import watch

    never = threading.Event()

    def stuck():
        for _ in range(300):  # no row for 30 s (interrupted by the watchdog)
            never.wait(0.1)
        yield 0

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(MachineError, match="before the first image came back"):
            list(watch(stuck(), 0.5, 1))
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_as_many_actors_as_cpus_finishes_with_the_local_corners(toy_dataset, tiny_onnx, tmp_path):
    """Issue H: on a 2-core machine, 2 actors holding a CPU each starved the reads and hung forever."""
    import os
    import subprocess

    pytest.importorskip("ray")
    cpus = os.cpu_count() or 2
    base = [sys.executable, "-m", "vcorner", "batch", str(toy_dataset), "--centers", str(toy_dataset / "centers.csv"),
            "--model", str(tiny_onnx)]
    local = subprocess.run(base + ["--out", str(tmp_path / "local")], capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    ray = subprocess.run(base + ["--out", str(tmp_path / "ray"), "--ray", "local", "--ray-actors", str(cpus)],
                         capture_output=True, text=True, timeout=600)  # a hang fails here instead of stalling CI
    assert ray.returncode == 0, ray.stderr
    assert sorted((tmp_path / "ray" / "corners.csv").read_text().splitlines()) == sorted(
        (tmp_path / "local" / "corners.csv").read_text().splitlines())
    assert "ReadBinary" not in ray.stderr and "Resources:" not in ray.stderr  # Ray Data's lines stay quiet


@pytest.mark.slow
def test_ray_batch_without_centres_matches_the_local_automatic_batch(tmp_path):
    """No --centers: every actor runs its own detector session; corners, detected centres and errors (a film
    with no spine) are the local automatic batch's."""
    import cv2
    import numpy as np

    ray = pytest.importorskip("ray")
    examples = Path(__file__).resolve().parents[1] / "examples" / "xrays"
    root = tmp_path / "films"
    shutil.copytree(examples, root, ignore=shutil.ignore_patterns("*.csv", "*.json"))
    cv2.imwrite(str(root / "noise.png"), (np.random.default_rng(0).random((600, 500)) * 255).astype(np.uint8))
    outputs = {}
    try:
        for mode in ("local", "ray"):
            out = tmp_path / mode
            result = CliRunner().invoke(app, ["batch", str(root), "--out", str(out)] +
                                        (["--ray", "local"] if mode == "ray" else []))
            assert result.exit_code == 1, result.output  # noise.png: no vertebrae found
            outputs[mode] = {name: sorted((out / name).read_text().splitlines())
                             for name in ("corners.csv", "errors.csv", "centers.detected.csv")}
    finally:
        ray.shutdown()
    assert outputs["ray"] == outputs["local"]
    assert len(outputs["ray"]["corners.csv"]) == 1 + 6 * 5 * 4
    assert [line.split(",")[0] for line in outputs["ray"]["errors.csv"]] == ["image", "noise.png"]
    assert "no vertebrae found" in outputs["ray"]["errors.csv"][1]
