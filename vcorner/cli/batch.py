"""``vcorner batch DIR --centers centers.csv``: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TextColumn

from vcorner.cli.common import EXIT_OK, EXIT_PARTIAL, fail, progress_bar, stderr, user_errors
from vcorner.io.records import InputError
from vcorner.runtime.select import Backend


class BarProgress:
    """Feeds the batch's progress bar: images done, images/s, patches/s."""

    def __init__(self, bar) -> None:
        import time

        self.bar, self.task, self.patches, self.clock, self.began = bar, None, 0, time.perf_counter, 0.0

    def start(self, images: int) -> None:
        self.began = self.clock()
        self.task = self.bar.add_task("images", total=images, ips=0.0, pps=0.0)

    def image_done(self, patches: int) -> None:
        self.patches += patches
        elapsed = max(self.clock() - self.began, 1e-9)
        done = self.bar.tasks[0].completed + 1
        self.bar.update(self.task, advance=1, ips=done / elapsed, pps=self.patches / elapsed)


def batch(
    image_dir: Annotated[Path, typer.Argument(help="Folder of X-rays (PNG, JPEG, TIFF, DICOM).")],
    centers: Annotated[Path, typer.Option("--centers", help="centers.csv: image,vertebra,x,y[,pixel_spacing_mm].")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("vcorner-out"),
    model: Annotated[Path | None, typer.Option(help="ONNX model or checkpoint (default: the shipped model).")] = None,
    backend: Annotated[Backend, typer.Option(help="Inference backend.")] = Backend.auto,
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per inference batch.")] = 256,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Skip images already in corners.csv (redoing those whose centres changed).")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Also write OUT/json/<image>.json.")] = False,
    vis: Annotated[bool, typer.Option("--vis", help="Also write OUT/vis/<image>.png overlays.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads (default: all cores).")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Threads decoding images and finding corners (default: 1 with CPU inference, one per core, "
                    "at most 16, with GPU inference).")] = None,
    max_pixels: Annotated[int | None, typer.Option(min=1, help="Refuse larger images (decompression bombs; default "
                                                                      "200 megapixels).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Where to run: cpu, cuda[:N] (ONNX Runtime's CUDA provider, or torch), tensorrt[:N] "
                         "(ONNX Runtime's TensorRT provider); the GPU for --backend trt. Default: the best here.")
    ] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Export profile of GPU runs (export/profiles.toml): batch range and precision of the "
                          "TensorRT engine, ONNX Runtime's GPU graph and torch's CUDA path; default gpu (FP16).")
    ] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Run on Ray Data: 'auto' (running cluster, else local), 'local', or an ADDRESS.")] = None,
    ray_actors: Annotated[int, typer.Option(min=1, help="Ray actors, each holding one inference session.")] = 1,
    ray_gpus: Annotated[float, typer.Option(min=0, help="GPUs per Ray actor (e.g. 1 or 0.5).")] = 0.0,
) -> None:
    """Find the four corners of every vertebra listed in CENTERS for the images in IMAGE_DIR.

    Writes OUT/corners.csv and OUT/errors.csv. Exit code 0: all images done; 1: some failed (listed in
    errors.csv); 2: usage or configuration error.
    """
    from dataclasses import replace

    from vcorner.pipeline.batch import BatchOptions, run_batch
    from vcorner.pipeline.plan import make_plan
    from vcorner.runtime.select import open_runner

    with user_errors():
        if profile is not None:
            from vcorner.export.profiles import get_profile

            get_profile(profile)  # an unknown name fails here, before any work
        check_writable(out)
        plan = make_plan(image_dir, centers)
        options = BatchOptions(batch_size=batch_size, resume=resume, write_json=json_out, vis=vis,
                               max_pixels=max_pixels, workers=workers)
        columns = TextColumn("{task.fields[ips]:.1f} img/s"), TextColumn("{task.fields[pps]:.0f} patches/s")
        if ray is not None:
            from vcorner.pipeline.ray_batch import import_ray, run_batch_ray

            import_ray()
            if json_out or vis:
                fail("--json and --vis are not available with --ray yet; run without --ray for them")
            # the graph the actors will load, as the driver resolves it (None: unknown here, unchecked)
            try:
                options = replace(options, model_id=open_runner(model, backend, device=device, threads=threads,
                                                                profile=profile)[0].identity())
            except InputError:  # the backend may exist on the workers only
                pass
            with progress_bar(*columns) as bar:
                summary = run_batch_ray(plan, out, model, backend.value, options, ray, ray_actors, threads,
                                        ray_gpus, BarProgress(bar), profile, device)
            runner_name = f"ray ({ray_actors} actor(s), {backend.value})"
        else:
            runner, card = open_runner(model, backend, device=device, threads=threads, profile=profile)
            with runner, progress_bar(*columns) as bar:
                options = replace(options, model_id=runner.identity())
                summary = run_batch(plan, out, runner, card, options, BarProgress(bar))
            runner_name = runner.name
    rate = summary.patches / max(summary.seconds, 1e-9)
    redone = f" ({summary.redone} redone: centres changed or --json/--vis files missing)" if summary.redone else ""
    stderr.print(f"{summary.done} image(s) done{redone}, {summary.skipped} already done, {len(summary.failed)} failed "
                 f"in {summary.seconds:.1f} s ({rate:.0f} patches/s, backend {runner_name}); "
                 f"corners: {out / 'corners.csv'}", highlight=False, soft_wrap=True)
    if summary.failed:
        stderr.print(f"failed images are listed with reasons in {out / 'errors.csv'}", highlight=False,
                     soft_wrap=True)
    raise typer.Exit(EXIT_PARTIAL if summary.failed else EXIT_OK)


def check_writable(out: Path) -> None:
    """Fail fast, with one line, when OUT cannot be created or written."""
    if out.exists() and not out.is_dir():
        fail(f"{out}: is a file, not a folder (choose another --out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vcorner-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        fail(f"{out}: output folder is not writable ({err.strerror or err})")
