"""Bad input, untrusted files and interruption: the batch processes what it can and explains the rest."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vcorner.cli import app
from vcorner.io.annotations import annotations_to_dict, parse_annotations
from vcorner.io.centers import centers_to_csv, load_centers
from vcorner.io.images import read_image
from vcorner.io.records import ImageRecord, InputError, Vertebra

EXAMPLES = Path(__file__).parents[1] / "examples" / "xrays"
HEADER = "image,vertebra,x,y\n"


def rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def spine_rows(image: str, x: float = 200.0) -> str:
    return "".join(f"{image},C{3 + i},{x},{80 + 60 * i}\n" for i in range(5))


def batch(root: Path, csv_text: str | bytes, out: Path, model: Path, *extra: str):
    centers = root / "centers.csv"
    centers.write_bytes(csv_text if isinstance(csv_text, bytes) else csv_text.encode())
    return CliRunner().invoke(app, ["batch", str(root), "--centers", str(centers), "--out", str(out),
                                    "--model", str(model), *extra])


@pytest.fixture
def folder(tmp_path, toy_dataset):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(toy_dataset / "toy0.png", root / "good.png")
    return root


BAD_ROWS = {
    "duplicate": ("good.png,C4,200,140\n", "listed twice"),
    "bad number": ("good.png,C3,12x,80\n", "not a number"),
}
BAD_CENTRES = {
    "nan": ("good.png,C3,nan,80\n", "NaN"),
    "inf": ("good.png,C3,inf,80\n", "NaN or infinite"),
    "far out of line": ("good.png,C3,5000,80\n", "out of line"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rows_fail_only_their_image(folder, tiny_onnx, tmp_path, case):
    shutil.copy(folder / "good.png", folder / "other.png")
    row, reason = BAD_ROWS[case]
    good = spine_rows("good.png").splitlines(keepends=True)
    good = good + [row] if case == "duplicate" else [row] + good[1:]  # the bad row replaces C3's
    text = HEADER + "".join(good) + spine_rows("other.png")
    result = batch(folder, text, tmp_path / "out", tiny_onnx)
    assert result.exit_code == 1, result.output
    errors = {r["image"]: r["reason"] for r in rows(tmp_path / "out" / "errors.csv")}
    assert list(errors) == ["good.png"] and reason in errors["good.png"]
    assert {r["image"] for r in rows(tmp_path / "out" / "corners.csv")} == {"other.png"}


@pytest.mark.parametrize("case", sorted(BAD_CENTRES))
def test_a_bad_centre_fails_only_its_vertebra(folder, tiny_onnx, tmp_path, case):
    shutil.copy(folder / "good.png", folder / "other.png")
    row, reason = BAD_CENTRES[case]
    text = HEADER + row + "".join(spine_rows("good.png").splitlines(keepends=True)[1:]) + spine_rows("other.png")
    result = batch(folder, text, tmp_path / "out", tiny_onnx)
    assert result.exit_code == 1, result.output
    errors = [(r["image"], r["vertebra"], r["reason"]) for r in rows(tmp_path / "out" / "errors.csv")]
    assert [e[:2] for e in errors] == [("good.png", "C3")] and reason in errors[0][2]
    corners = Counter((r["image"], r["vertebra"]) for r in rows(tmp_path / "out" / "corners.csv"))
    assert ("good.png", "C3") not in corners and corners[("good.png", "C4")] == 4 and len(corners) == 9


def test_single_vertebra_missing_image_and_unlisted_image(folder, tiny_onnx, tmp_path):
    shutil.copy(folder / "good.png", folder / "unlisted.png")
    text = HEADER + "good.png,C3,200,80\n" + spine_rows("gone.png")
    result = batch(folder, text, tmp_path / "out", tiny_onnx)
    assert result.exit_code == 1
    errors = {r["image"]: r["reason"] for r in rows(tmp_path / "out" / "errors.csv")}
    assert "at least two" in errors["good.png"] and "no such file" in errors["gone.png"]
    assert "unlisted.png" not in errors


@pytest.mark.parametrize("name", ["../escape.png", "/etc/passwd", "sub/../../escape.png"])
def test_paths_never_leave_dir(folder, tiny_onnx, tmp_path, name):
    shutil.copy(folder / "good.png", tmp_path / "escape.png")
    result = batch(folder, HEADER + spine_rows(name) + spine_rows("good.png"), tmp_path / "out", tiny_onnx, "--vis")
    assert result.exit_code == 1
    errors = {r["image"]: r["reason"] for r in rows(tmp_path / "out" / "errors.csv")}
    assert name in errors and "relative to DIR" in errors[name]
    written = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert written == {"corners.csv", "errors.csv", "run.json", "vis/good.png"}


@pytest.mark.parametrize("kind", ["zero bytes", "truncated", "text", "unsupported", "directory"])
def test_broken_images_are_listed_and_the_batch_goes_on(folder, tiny_onnx, tmp_path, kind):
    data = (folder / "good.png").read_bytes()
    target = folder / ("bad.bmp" if kind == "unsupported" else "bad.png")
    if kind == "directory":
        target.mkdir()
    else:
        target.write_bytes({"zero bytes": b"", "truncated": data[: len(data) // 3], "text": b"hello",
                            "unsupported": data}[kind])
    result = batch(folder, HEADER + spine_rows(target.name) + spine_rows("good.png"), tmp_path / "out", tiny_onnx)
    assert result.exit_code == 1
    errors = {r["image"]: r["reason"] for r in rows(tmp_path / "out" / "errors.csv")}
    assert list(errors) == [target.name] and "\n" not in errors[target.name]
    assert len(rows(tmp_path / "out" / "corners.csv")) == 20


def test_sixteen_bit_and_monochrome1_images_run(tiny_onnx, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(EXAMPLES), "--centers", str(EXAMPLES / "centers.csv"),
                                      "--out", str(out), "--model", str(tiny_onnx)])
    assert result.exit_code == 0, result.output
    assert {r["image"] for r in rows(out / "corners.csv")} >= {"phantom_00001.dcm", "phantom_00002.png",
                                                              "phantom_00004.tif"}


@pytest.mark.parametrize("variant", ["semicolon", "utf-16", "latin-1", "extra column"])
def test_csv_dialects_and_encodings(folder, tiny_onnx, tmp_path, variant):
    shutil.copy(folder / "good.png", folder / "résumé.png")
    text = HEADER + spine_rows("résumé.png")
    if variant == "semicolon":
        data = text.replace(",", ";").encode()
    elif variant == "extra column":
        data = text.replace("x,y\n", "x,y,note\n").replace("\n", ",n\n").replace("x,y,note,n", "x,y,note").encode()
    else:
        data = text.encode(variant)
    result = batch(folder, data, tmp_path / "out", tiny_onnx)
    assert result.exit_code == 0, result.output
    assert {r["image"] for r in rows(tmp_path / "out" / "corners.csv")} == {"résumé.png"}


def test_usage_errors_exit_2(folder, tiny_onnx, tmp_path):
    result = batch(folder, "image,vertebra,x\n", tmp_path / "out", tiny_onnx)
    assert result.exit_code == 2 and "missing column(s) y" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = batch(folder, HEADER + spine_rows("good.png"), blocker / "out", tiny_onnx)
    assert result.exit_code == 2 and "not writable" in result.output


def test_model_checksum_and_input_shape_are_checked(folder, tiny_onnx, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes() + b"x")
    shutil.copy(f"{tiny_onnx}.json", f"{model}.json")
    result = batch(folder, HEADER + spine_rows("good.png"), tmp_path / "out", model)
    assert result.exit_code == 2 and "SHA-256" in result.output
    torch = pytest.importorskip("torch")
    from vcorner.export.onnx_export import export_model
    from vcorner.models.modelfile import read_model_card
    from vcorner.network.unet import create_model

    torch.manual_seed(0)
    export_model(create_model("tiny", in_channels=3), read_model_card(tiny_onnx), tmp_path / "rgb.onnx")
    result = batch(folder, HEADER + spine_rows("good.png"), tmp_path / "out2", tmp_path / "rgb.onnx")
    assert result.exit_code == 2 and "(batch, 1, N, N)" in result.output


def test_killed_batch_resumes_with_every_row_exactly_once(toy_dataset, tiny_onnx, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    text = HEADER
    for i in range(150):
        shutil.copy(toy_dataset / f"toy{i % 4}.png", root / f"img{i:03d}.png")
        text += spine_rows(f"img{i:03d}.png", x=200.0)
    (root / "centers.csv").write_text(text)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vcorner", "batch", str(root), "--centers", str(root / "centers.csv"),
               "--out", str(out), "--model", str(tiny_onnx), "--vis", "--batch-size", "8"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "corners.csv").is_file() and len((out / "corners.csv").read_text().splitlines()) > 100:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the batch finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = len(rows(out / "corners.csv"))
    assert 0 < partial < 150 * 20
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = Counter((r["image"], r["vertebra"], r["corner"]) for r in rows(out / "corners.csv"))
    assert len(counts) == 150 * 20 and set(counts.values()) == {1}


names = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-."), min_size=1,
                max_size=12).filter(lambda s: s.strip() == s and s not in (".", ".."))
coords = st.floats(-1e5, 1e5, allow_nan=False)


@st.composite
def image_records(draw):
    files = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    out = []
    for f in files:
        verts = draw(st.lists(names, min_size=1, max_size=5, unique=True))
        spacing = draw(st.one_of(st.none(), st.floats(0.02, 2.0)))
        out.append(ImageRecord(f + ".png", tuple(
            Vertebra(v, np.array([draw(coords), draw(coords)]),
                     np.array(draw(st.lists(st.tuples(coords, coords), min_size=4, max_size=4)), dtype=float))
            for v in verts), spacing))
    return out


@given(image_records())
@settings(max_examples=40, deadline=None)
def test_centers_csv_round_trips(records):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.csv"
        path.write_text(centers_to_csv(records), encoding="utf-8")
        table = load_centers(path)
    assert not table.problems
    assert [r.file for r in table.records] == [r.file for r in records]
    for got, want in zip(table.records, records, strict=True):
        assert [v.name for v in got.vertebrae] == [v.name for v in want.vertebrae]
        np.testing.assert_allclose(got.centers, want.centers, atol=1e-3)


@given(image_records())
@settings(max_examples=40, deadline=None)
def test_annotations_round_trip(records):
    back = parse_annotations(annotations_to_dict(records))
    for got, want in zip(back, records, strict=True):
        np.testing.assert_allclose(got.centers, want.centers, atol=1e-3)
        for gv, wv in zip(got.vertebrae, want.vertebrae, strict=True):
            np.testing.assert_allclose(gv.corners, wv.corners, atol=1e-3)


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3)))
@settings(max_examples=100, deadline=None)
def test_annotations_parser_raises_only_input_errors(data):
    try:
        parse_annotations({"format": "vcorner-annotations/1", "images": [data]})
    except InputError as err:
        assert "\n" not in str(err)


@pytest.mark.parametrize("name", ["phantom_00000.png", "phantom_00001.dcm", "phantom_00003.jpg",
                                  "phantom_00004.tif"])
def test_image_readers_survive_random_corruption(tmp_path, name):
    data = bytearray((EXAMPLES / name).read_bytes())
    rng = np.random.default_rng(0)
    for trial in range(12):
        mutated = bytearray(data)
        for position in rng.integers(0, min(len(data), 4096), 8):  # headers live at the start
            mutated[position] = rng.integers(0, 256)
        if trial % 3 == 0:
            mutated = mutated[: rng.integers(1, len(mutated))]
        path = tmp_path / f"{trial}{Path(name).suffix}"
        path.write_bytes(bytes(mutated))
        try:
            image = read_image(path)
        except InputError as err:
            assert path.name in str(err) and "\n" not in str(err)
        else:
            assert image.pixels.ndim == 2 and np.isfinite(image.pixels).all()


def _two_images(folder: Path) -> str:
    shutil.copy(folder / "good.png", folder / "other.png")
    return HEADER + spine_rows("good.png") + spine_rows("other.png")


def test_resuming_with_another_model_is_refused_in_one_line(folder, tiny_onnx, tmp_path):
    text = _two_images(folder)
    assert batch(folder, text, tmp_path / "out", tiny_onnx).exit_code == 0
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_onnx))
    model.doc_string = "another model"  # same graph, another file: another SHA-256
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    result = batch(folder, text, tmp_path / "out", other)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another model" in errors[0] and "--no-resume" in errors[0], result.output
    assert len(rows(tmp_path / "out" / "corners.csv")) == 40  # nothing lost
    assert batch(folder, text, tmp_path / "out", other, "--no-resume").exit_code == 0


def test_resuming_when_auto_switches_to_the_int8_graph_is_refused(folder, tiny_onnx, tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    text = _two_images(folder)
    assert batch(folder, text, tmp_path / "out", tiny_onnx).exit_code == 0
    model = onnx.load(str(tiny_onnx))
    model.doc_string = "stands in for the INT8 variant"
    onnx.save(model, str(tmp_path / "tiny.int8.onnx"))
    from dataclasses import replace

    from vcorner.backends import registry as resolve
    from vcorner.models.card import sha256_file

    real = resolve.resolve_model

    def int8_wins(*args, **kwargs):  # as if a benchmark had shown the INT8 variant winning here
        resolved = real(*args, **kwargs)
        int8 = tmp_path / "tiny.int8.onnx"
        return replace(resolved, graph=int8, graph_sha256=sha256_file(int8), precision="int8")

    monkeypatch.setattr(resolve, "resolve_model", int8_wins)
    result = batch(folder, text, tmp_path / "out", tiny_onnx)  # same --model, but another graph would run
    assert result.exit_code == 2 and "another model or precision" in result.output


def test_resume_redoes_images_whose_centres_changed(folder, tiny_onnx, tmp_path):
    text = _two_images(folder)
    assert batch(folder, text, tmp_path / "out", tiny_onnx).exit_code == 0
    before = {(r["image"], r["vertebra"], r["corner"]): r for r in rows(tmp_path / "out" / "corners.csv")}
    moved = HEADER + spine_rows("good.png", x=204.0) + spine_rows("other.png")
    result = batch(folder, moved, tmp_path / "out", tiny_onnx)
    assert result.exit_code == 0 and "1 image(s) done (1 redone" in result.output.replace("\n", " ")
    after = rows(tmp_path / "out" / "corners.csv")
    assert Counter(r["image"] for r in after) == {"good.png": 20, "other.png": 20}
    assert all(before[(r["image"], r["vertebra"], r["corner"])] == r for r in after if r["image"] == "other.png")
    assert any(before[(r["image"], r["vertebra"], r["corner"])] != r for r in after if r["image"] == "good.png")

    broken = HEADER + "good.png,C3,nan,80\n" + spine_rows("good.png")[len("good.png,C3,200.0,80\n"):] + \
        spine_rows("other.png")
    result = batch(folder, broken, tmp_path / "out", tiny_onnx)
    assert result.exit_code == 1  # a centre that became NaN fails its vertebra instead of keeping stale corners
    after = rows(tmp_path / "out" / "corners.csv")
    assert Counter(r["image"] for r in after) == {"good.png": 16, "other.png": 20}
    assert not any(r["vertebra"] == "C3" and r["image"] == "good.png" for r in after)
    assert [r["image"] for r in rows(tmp_path / "out" / "errors.csv")] == ["good.png"]


@pytest.mark.parametrize("extra, made", [("--vis", "vis/good.png"), ("--json", "json/good.png.json")])
def test_resume_writes_requested_extras_that_are_missing(folder, tiny_onnx, tmp_path, extra, made):
    text = _two_images(folder)
    assert batch(folder, text, tmp_path / "out", tiny_onnx).exit_code == 0
    result = batch(folder, text, tmp_path / "out", tiny_onnx, extra)
    assert result.exit_code == 0 and (tmp_path / "out" / made).is_file()
    assert Counter(r["image"] for r in rows(tmp_path / "out" / "corners.csv")) == {"good.png": 20, "other.png": 20}
    assert "2 image(s) done (2 redone" in result.output.replace("\n", " ")
    again = batch(folder, text, tmp_path / "out", tiny_onnx, extra)
    assert "0 image(s) done, 2 already done" in again.output.replace("\n", " ")
    fresh = batch(folder, text, tmp_path / "fresh", tiny_onnx, extra)
    assert "2 image(s) done, 0 already done" in fresh.output.replace("\n", " ")  # nothing to redo in a new OUT
