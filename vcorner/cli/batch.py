"""``vcorner batch DIR --centers centers.csv``: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TextColumn

from vcorner.backends import Backend, ModelRequest
from vcorner.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    fail,
    progress_bar,
    stderr,
    user_errors,
)
from vcorner.io.claims import claim_folder
from vcorner.pipeline.outputs import OWN_FILES, check_outputs_apart, is_batch_output
from vcorner.stages.plan import make_plan, plan_folder


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
    centers: Annotated[Path | None, typer.Option(
        "--centers", help="centers.csv: image,vertebra,x,y[,pixel_spacing_mm]. Without it the detector finds and "
                          "names the vertebrae of every image in IMAGE_DIR (OUT/centers.detected.csv).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("vcorner-out"),
    model: Annotated[Path | None, typer.Option(help="ONNX model or checkpoint (default: the shipped model).")] = None,
    backend: Annotated[Backend, typer.Option(help="Inference backend.")] = Backend.auto,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Patches per inference batch (default: 64 on a CPU, where it was fastest end to end, 256 on a "
                    "GPU).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Skip images already in corners.csv (redoing those whose centres changed).")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Also write OUT/json/<image>.json.")] = False,
    vis: Annotated[bool, typer.Option("--vis", help="Also write OUT/vis/<image>.png overlays.")] = False,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Inference threads (default on a CPU: inference's share of the cores, e.g. 1 of 2 for INT8, "
                    "2 of 2 for FP32).")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Threads decoding images and finding corners (default: the cores CPU inference leaves, at "
                    "least 1; one per core, at most 16, with GPU inference).")] = None,
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
    measure: Annotated[bool, typer.Option(
        "--measure", help="Also write OUT/measurements.csv: heights, wedging, slips, angles with 95% intervals.")]
    = False,
    anterior: Annotated[str, typer.Option(help="With --measure: anterior side of the vertebra frame, right or "
                                               "left.")] = "right",
    ap: Annotated[bool, typer.Option("--ap", help="With --measure: an AP film, also the main Cobb angle.")] = False,
    ray_stall_timeout: Annotated[float, typer.Option(
        min=1, help="Stop a Ray batch (exit 3) when no image came back for this many seconds.")] = 600.0,
    ray_images: Annotated[int | None, typer.Option(
        min=1, help="Images handed to a Ray actor per call, their patches inferred together (default: enough for "
                    "4 full batches, at most 64).")] = None,
    precision: Annotated[str, typer.Option(
        "--precision", help="What runs on the CPU: auto (INT8, or OpenVINO, where recorded or self-checked "
                            "evidence shows it wins here), fp32, int8 or bf16 (--backend ov).")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Write into an OUT whose corners.csv, errors.csv, run.json, "
                                                       "centers.detected.csv or measurements.csv vcorner did not "
                                                       "write (they are moved into previous-<time>/).")] = False,
    detector: Annotated[Path | None, typer.Option(
        "--detector", help="Centre detector (ONNX) used without --centers (default: the shipped one).")] = None,
    view_search: Annotated[bool, typer.Option(
        help="Without --centers: let the view finder pick each film's view (mirrored, upside down, inverted) "
             "before naming; --no-view-search looks at the films as they are, the finder only checking each shows a "
             "spine (about 4x faster detection).")] = True,
) -> None:
    """Find the four corners of every vertebra listed in CENTERS for the images in IMAGE_DIR; without --centers,
    of every vertebra the detector finds in them.

    Writes OUT/corners.csv and OUT/errors.csv (and without --centers OUT/centers.detected.csv). Exit code 0: all
    images done; 1: some images or vertebrae failed (listed in errors.csv); 2: usage or configuration error (the
    options, centers.csv, the model or detector files); 3: a failure of this machine or of a dependency (Ray,
    inference); 130: interrupted (Ctrl-C), resumable.
    """
    from vcorner.pipeline.run import BatchSettings

    with user_errors():
        threads = clamp_threads(threads)
        check_options(device, profile, precision)
        check_choices(anterior, centers, detector)
        plan = planned(image_dir, centers, out, json_out, vis, measure, force)
        settings = BatchSettings(batch_size=batch_size, resume=resume, write_json=json_out, vis=vis,
                                 max_pixels=max_pixels, workers=workers,
                                 measure_labels=("ap" if ap else anterior) if measure else None)
        request = ModelRequest(model, backend, device, threads, profile, precision)
        try:
            found = chosen_detector(detector, view_search, out) if centers is None else None
            summary, name = execute(plan, out, request, settings, found, (("images", str(image_dir.resolve())),),
                                    ray_options(ray, ray_actors, ray_gpus, ray_stall_timeout, ray_images))
        except KeyboardInterrupt:
            fail(f"interrupted; images finished so far are in {out / 'corners.csv'}: run the same command again "
                 "to resume", EXIT_INTERRUPTED)
        if measure and not summary.interrupted:
            write_batch_measurements(out, image_dir, centers or out / "centers.detected.csv", anterior, ap,
                                     summary.seconds)
    report(summary, name, out)


def check_choices(anterior: str, centers: Path | None, detector: Path | None) -> None:
    """The options that depend on each other: ``--anterior`` right or left, ``--detector`` only without
    ``--centers``."""
    if anterior not in ("right", "left"):
        fail(f"--anterior must be right or left, got {anterior!r}")
    if centers is not None and detector is not None:
        fail("--detector is used only without --centers (the clicked centres are used as given)")


def planned(image_dir: Path, centers: Path | None, out: Path, json_out: bool, vis: bool, measure: bool,
            force: bool):
    """The plan (the images of CENTERS, else every image of IMAGE_DIR), with OUT checked writable, apart from every
    input, and claimed (``--force``: a stranger's files moved aside); nothing written yet but that move."""
    plan = make_plan(image_dir, centers) if centers is not None else plan_folder(image_dir, exclude=out)
    check_writable(out)
    inputs = [*([centers] if centers else []), *(p.path for p in plan.images), *unlisted_paths(image_dir, plan, out)]
    check_outputs_apart(out, inputs, [p.record.file for p in plan.images], json_out, vis)
    claim_folder(out, (*OWN_FILES, *(("measurements.csv",) if measure else ())), force=force, own=is_batch_output)
    return plan


def execute(plan, out: Path, request: ModelRequest, settings, detector, notes, ray):
    """Build the run on its executor (Ray Data with ``ray``, a ``RaySettings``; else local threads), print the
    cards' warnings, and run it under a progress bar; (summary, the executor's name)."""
    from vcorner.pipeline.executor import batch_run, run_batch

    with open_executor(plan, request, detector, ray) as (executor, resolved):
        run = batch_run(plan, out, resolved, settings, executor, detector, notes)
        for warning in run.warnings:
            stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
        columns = TextColumn("{task.fields[ips]:.1f} img/s"), TextColumn("{task.fields[pps]:.0f} patches/s")
        with progress_bar(*columns) as bar:
            return run_batch(run, executor, BarProgress(bar)), executor.name


def chosen_detector(path: Path | None, view_search: bool, out: Path):
    """The centre detector of a batch without clicked centres (``path``, else the shipped one; with its view
    finder unless ``view_search`` is off), announced on stderr."""
    from vcorner.models.modelfile import default_detector_path
    from vcorner.pipeline.detection import resolve_detector

    found = resolve_detector(path or default_detector_path(), view_search)
    names = ", ".join(found.card.names)
    stderr.print(f"centres: found by the detector {Path(found.path).name} ({names}, confidence >= "
                 f"{found.card.detection.min_confidence:g}), written to {out / 'centers.detected.csv'}",
                 highlight=False, soft_wrap=True)
    return found


def ray_options(address: str | None, actors: int, gpus: float, stall_s: float, per_call: int | None):
    """The ``--ray*`` options as ``RaySettings`` (None without ``--ray``: the Ray modules are not imported)."""
    if address is None:
        return None
    from vcorner.pipeline.ray.driver import RaySettings

    return RaySettings(address, actors, gpus, stall_s, per_call)


def open_executor(plan, request: ModelRequest, detector, ray):
    """The executor of the batch, open, with the model resolved for it: Ray Data with ``ray`` (``RaySettings``),
    else this machine's threads."""
    if ray is None:
        from vcorner.pipeline.local import open_threads

        return open_threads(request, detector)
    from vcorner.pipeline.ray.driver import open_ray

    return open_ray(plan, request, ray)


def write_batch_measurements(out: Path, image_dir: Path, centers: Path, anterior: str, ap: bool,
                             batch_seconds: float) -> None:
    """OUT/measurements.csv from OUT/corners.csv (every image in it, resumed ones included)."""
    import time

    from vcorner.measure.table import measure_run

    began = time.perf_counter()
    _, rows, _ = measure_run(out / "corners.csv", out / "measurements.csv", image_dir, centers, anterior, ap)
    seconds = time.perf_counter() - began
    share = f", {100 * seconds / batch_seconds:.1f}% of the batch" if batch_seconds > 0 else ""
    stderr.print(f"{len(rows)} measurement(s) in {seconds:.2f} s{share}: {out / 'measurements.csv'}",
                 highlight=False, soft_wrap=True)


def report(summary, runner_name: str, out: Path) -> None:
    """Print the summary line(s), record them in OUT/run.json, and exit: 0 all done, 1 some images or
    vertebrae failed, 130 interrupted."""
    from vcorner.pipeline.manifest import update_manifest
    from vcorner.stages.prepare import VIEW_CONTRADICTED

    rate = summary.patches / max(summary.seconds, 1e-9)
    update_manifest(out, {"last_run": {
        "backend": runner_name, "done": summary.done, "skipped": summary.skipped, "failed": len(summary.failed),
        "vertebrae_left_out": len(summary.refused_vertebrae), "seconds": round(summary.seconds, 3),
        "setup_seconds": round(summary.setup_seconds, 3),
        "patches_per_s": round(rate, 1), "interrupted": summary.interrupted,
        "flags": {flag: {"images": images, "vertebrae": vertebrae}
                  for flag, (images, vertebrae) in sorted(summary.flags.items())},
        **({"detected": summary.detected, "detections_dropped": summary.dropped, "detected_views": summary.turned,
            "named_by_second_namer": summary.renamed,
            "past_the_run": {"found": summary.extended, "not_confirmed": summary.unconfirmed},
            "between_names": {"found": summary.filled, "not_confirmed": summary.unfilled}}
           if summary.detected else {})}})
    redone = f" ({summary.redone} redone: centres or card changed, or --json/--vis files missing)" \
        if summary.redone else ""
    left_out = f", {len(summary.refused_vertebrae)} vertebra(e) left out" if summary.refused_vertebrae else ""
    setup = f" after {summary.setup_seconds:.1f} s of set-up" if summary.setup_seconds else ""
    if summary.flags:
        flagged = ", ".join(f"{flag} {vertebrae} vertebra(e) of {images} image(s)"
                            for flag, (images, vertebrae) in sorted(summary.flags.items()))
        left_out += f"; flagged: {flagged} (README.md, Flags)"
    if summary.detected:
        left_out += (f"; centres of {summary.detected} image(s) detected ({summary.dropped} detection(s) below the "
                     "confidence threshold dropped)")
        if summary.turned:
            left_out += "; seen " + ", ".join(f"{n} {view.replace('+', ' and ')}" for view, n in
                                              sorted(summary.turned.items()))
        if summary.renamed:
            left_out += f"; {summary.renamed} image(s) of uncertain levels named by the second namer"
        if summary.extended:
            left_out += f"; {summary.extended} vertebra(e) past a detected run's end found by the corner model"
        if summary.filled:
            left_out += f"; {summary.filled} vertebra(e) between two detected names found by the corner model"
    stderr.print(f"{summary.done} image(s) done{redone}, {summary.skipped} already done, {len(summary.failed)} failed"
                 f"{left_out} in {summary.seconds:.1f} s{setup} ({rate:.0f} patches/s, backend {runner_name}); "
                 f"corners: {out / 'corners.csv'}", highlight=False, soft_wrap=True)
    if summary.failed or summary.refused_vertebrae:
        stderr.print(f"failed images and left-out vertebrae are listed with reasons in {out / 'errors.csv'}",
                     highlight=False, soft_wrap=True)
    if VIEW_CONTRADICTED in summary.flags:
        stderr.print(f"{summary.flags[VIEW_CONTRADICTED][0]} image(s) flagged {VIEW_CONTRADICTED}: their anatomy puts "
                     "the anterior side on the other side, so their anterior and posterior corners may be swapped; if "
                     "a film is mirrored (patient facing left) or inverted (bone dark), give it that view in the view "
                     "column of the centres file and run again", highlight=False, soft_wrap=True)
    if summary.interrupted:
        stderr.print("interrupted: run the same command again to resume with the images not yet done",
                     highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_PARTIAL if summary.failed or summary.refused_vertebrae else EXIT_OK)


def clamp_threads(threads: int | None) -> int | None:
    """``threads`` capped at the cores this process may use, with a warning when capped."""
    from vcorner.hardware.cpu import available_cores

    cores = available_cores()
    if threads is not None and threads > cores:
        stderr.print(f"[yellow]warning:[/] --threads {threads} is more than the {cores} core(s) here; using {cores}",
                     highlight=False, soft_wrap=True)
        return cores
    return threads


def check_options(device: str | None, profile: str | None, precision: str = "auto") -> None:
    """Every option that can be checked without reading inputs, before anything is written."""
    from vcorner.backends import check_device
    from vcorner.models.precision import cpu_precision
    from vcorner.models.profiles import get_profile

    cpu_precision(precision)
    check_device(device)
    if profile is not None:
        get_profile(profile)  # an unknown name fails here, before any work


def unlisted_paths(image_dir: Path, plan, out: Path) -> list[Path]:
    """Images under DIR without centres, except those inside OUT (an earlier run's overlays)."""
    inside_out = out.resolve()
    paths = [(image_dir / name).resolve() for name in plan.unlisted]
    return [p for p in paths if not p.is_relative_to(inside_out)]


def check_writable(out: Path) -> None:
    """Fail fast, with one line, when OUT cannot be created or written; creates nothing (the batch makes OUT
    once every option and input has been checked)."""
    import os

    if out.exists() and not out.is_dir():
        fail(f"{out}: is a file, not a folder (choose another --out)")
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{out}: output folder is not writable (no write permission in {existing})")
