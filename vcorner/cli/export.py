"""``vcorner export RUN_OR_CKPT``: ONNX (dynamic batch) with the model card, checked against torch eager;
``--fp16`` adds the mixed-precision FP16 ONNX, ``--engine`` the cached TensorRT engine of ``--profile``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vcorner.cli.common import fail, stderr, user_errors

FP16_TOLERANCE = 1e-2
"""Largest FP16-vs-FP32 map difference accepted, relative to the FP32 map's peak."""


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Run folder or .safetensors checkpoint.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="ONNX file (default: RUN/model.onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with torch eager.")] = True,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write the mixed-precision FP16 ONNX for GPUs "
                                                      "(FP32 I/O and normalization).")] = False,
    fp16_out: Annotated[Path | None, typer.Option("--fp16-out", help="FP16 ONNX file (default: "
                                                                     "<out stem>.fp16.onnx).")] = None,
    engine: Annotated[bool, typer.Option("--engine", help="Build (or reuse) the TensorRT engine of --profile; "
                                                          "needs TensorRT and a GPU.")] = False,
    profile: Annotated[str, typer.Option("--profile", help="Export profile: batch range, precision, "
                                                           "workspace (export/profiles.toml).")] = "gpu",
    profiles: Annotated[Path | None, typer.Option("--profiles", help="Profiles TOML (default: the repository's "
                                                                     "export/profiles.toml, else built-in).")] = None,
    engine_dir: Annotated[Path | None, typer.Option("--engine-dir", help="Engine cache folder (default: beside "
                                                                         "the ONNX file).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write the CPU INT8 ONNX (static QDQ, u8s8), "
                                                      "calibrated on --calib.")] = False,
    calib: Annotated[Path | None, typer.Option("--calib", help="Calibration images: an annotated folder or "
                                                               "one with centers.csv.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing ONNX files outside the run's folder "
                                                       "(they are moved into previous-<time>/).")] = False,
) -> None:
    """Export a trained checkpoint to ONNX, with its model card in the metadata and a .json sidecar.

    Earlier exports in the checkpoint's own run folder (RUN/model.onnx... with vcorner's card) are rewritten; any
    other existing file is kept unless --force."""
    with user_errors():
        try:
            import numpy as np

            from vcorner.export.onnx_export import export_model, max_abs_difference
            from vcorner.models.card import ModelCard
            from vcorner.models.modelfile import resolve_checkpoint
            from vcorner.models.profiles import get_profile
            from vcorner.network.checkpoint import load_model
        except ImportError as err:
            fail(f"export needs torch and onnx: pip install 'vcorner[train]' ({err})")
        from vcorner.models.detector_card import DETECTOR_FORMAT, DetectorCard
        from vcorner.models.modelfile import card_format

        chosen = get_profile(profile, profiles)
        source = resolve_checkpoint(checkpoint)
        target = out or source.with_suffix(".onnx")
        claim_exports(source, target, fp16_out if fp16 else None, fp16, int8, calib, force)
        detector = card_format(source) == DETECTOR_FORMAT
        if detector and (int8 or engine):
            fail("--int8 and --engine are for the corner model; export the centre detector to ONNX (and --fp16) "
                 "only: it is a few percent of a batch's work (README.md, Automatic centres)")
        model, card = load_model(source, DetectorCard if detector else ModelCard)
        export_model(model, card, target, opset)
        stderr.print(f"wrote {target} and {target}.json" + (" (centre detector)" if detector else ""), highlight=False)
        patches = np.random.default_rng(0).standard_normal((8 if not detector else 2, 1, *card.input_shape))
        patches = patches.astype(np.float32)
        if check:
            diff = max_abs_difference(model, target, patches)
            stderr.print(f"ONNX Runtime vs torch eager: max |difference| {diff:.2e}", highlight=False)
            if diff > 1e-5:
                fail(f"{target}: ONNX Runtime differs from torch eager by {diff:.2e} (> 1e-5)")
        if int8:
            write_int8(target, calib)
        if detector and fp16:
            fp16_step(target, fp16_out, patches if check else None)
        if detector or not (fp16 or engine):
            return
        engine_onnx = target
        if fp16 or chosen.precision == "fp16":
            half = fp16_step(target, fp16_out, patches if check else None)
            engine_onnx = half if chosen.precision == "fp16" else target
        build_engine_step(checkpoint, engine_onnx, chosen, engine, engine_dir)


def claim_exports(source: Path, target: Path, fp16_out: Path | None, fp16: bool, int8: bool, calib: Path | None,
                  force: bool) -> None:
    """The output rule (:mod:`vcorner.io.claims`) for the ONNX files (and their .json cards) an export writes."""
    from vcorner.io.claims import claim_files
    from vcorner.models.card import CARD_FORMAT
    from vcorner.models.detector_card import DETECTOR_FORMAT
    from vcorner.models.modelfile import card_format, sidecar_path
    from vcorner.models.variants import fp16_path, int8_path

    models = [target, *([fp16_out or fp16_path(target)] if fp16 else []), *([int8_path(target)] if int8 else [])]
    run = source.resolve().parent

    def own(path: Path) -> bool:
        """An earlier export of this run: inside its folder, and a vcorner model by its card."""
        onnx = Path(str(path).removesuffix(".json")) if path.suffix == ".json" else path
        return path.resolve().parent == run and card_format(onnx) in (CARD_FORMAT, DETECTOR_FORMAT)

    claim_files([p for m in models for p in (m, sidecar_path(m))], inputs=[source, calib], force=force, own=own)


def fp16_step(target: Path, fp16_out: Path | None, patches=None) -> Path:
    """Write the FP16 variant of ``target``; with ``patches`` (B, 1, N, N), check its maps against FP32."""
    import importlib.util

    from vcorner.export.fp16 import convert_fp16, fp16_map_difference, fp16_path

    if importlib.util.find_spec("onnxconverter_common") is None:
        fail("--fp16 needs onnxconverter-common: pip install 'vcorner[train]'")
    half = convert_fp16(target, fp16_out or fp16_path(target))
    stderr.print(f"wrote {half} and {half}.json (FP16 body, FP32 I/O and normalization)", highlight=False,
                 soft_wrap=True)
    if patches is not None:
        absolute, relative = fp16_map_difference(target, half, patches)
        stderr.print(f"FP16 vs FP32 (ONNX Runtime CPU): max |difference| {absolute:.2e} "
                     f"({relative:.1e} of the map peak)", highlight=False, soft_wrap=True)
        if relative > FP16_TOLERANCE:
            fail(f"{half}: FP16 maps differ from FP32 by {relative:.1e} of the peak (> {FP16_TOLERANCE})")
    return half


def build_engine_step(checkpoint: Path, onnx: Path, profile, requested: bool, engine_dir: Path | None) -> None:
    """Build or reuse the TensorRT engine when asked and possible; otherwise say in one line how to get it."""
    from vcorner.hardware.tensorrt import tensorrt_installed

    later = f"vcorner export {checkpoint} --fp16 --engine --profile {profile.name}"
    if not tensorrt_installed():
        if requested:
            fail(f"TensorRT is not installed here: run `{later}` on the GPU machine (pip install 'vcorner[gpu]')")
        stderr.print(f"TensorRT is absent here: build the engine on the GPU machine with `{later}` (or let "
                     "`vcorner batch --backend trt` build it in its cache step)", highlight=False, soft_wrap=True)
        return
    if not requested:
        stderr.print(f"TensorRT is installed: add --engine to build the [{profile.name}] engine now (else "
                     "`vcorner batch --backend trt` builds it in its cache step)", highlight=False, soft_wrap=True)
        return
    from vcorner.export.tensorrt_build import ensure_engine

    loaded = ensure_engine(onnx, profile, engine_dir)
    stderr.print(f"engine {loaded.plan} ({'built' if loaded.built else 'cached, key matches'}) for "
                 f"{loaded.gpu.name} (compute capability {loaded.gpu.compute_capability}), batch "
                 f"{profile.batch_min}..{profile.batch_max}", highlight=False, soft_wrap=True)


def write_int8(model: Path, calib: Path | None) -> None:
    """Quantize ``model`` to ``m.int8.onnx`` with patches cut from ``calib``."""
    from vcorner.export.int8 import quantize_int8
    from vcorner.models.variants import int8_path

    if calib is None:
        fail("--int8 needs --calib DATA: a folder of images with centers.csv or annotations.json")
    out = quantize_int8(model, int8_path(model), calib)
    stderr.print(f"wrote {out} (INT8; `vcorner benchmark --precision fp32,int8` measures whether it wins here, "
                 "and --backend auto uses it only then)", highlight=False)
