"""Every error reason the job can write is produced by this file's end-to-end runs.

``jobs.schema.ERROR_REASONS`` is the closed list. ``PRODUCERS`` below names, for each reason, the
input row built to produce it; the runs happen once per module on the real local Ray cluster.
A reason added to the code but not to the list fails ``test_reasons_in_the_code_are_listed``; a
reason added to the list without an input that produces it fails
``test_every_listed_reason_has_a_producing_input``.
"""

from __future__ import annotations

import ast
import pathlib

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cropcore import REASONS as CROP_REASONS
from cropcore import codec
from cropcore.masks import encode_rle
from jobs import schema, steps
from jobs.pipeline import JobConfig, run
from tests.jobs.builders import image_pixels, png, write_parquet

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAN = float("nan")

# reason -> (image_id, detection_id, stage) of the error row the inputs below must produce
PRODUCERS = {
    "duplicate_image_id": ("im_dup", None, "plan"),  # the second row with that id
    "missing_id": ("im_dup", None, "plan"),  # a detection whose detection_id is null
    "duplicate_detection_id": ("im_dup", "x0", "plan"),  # the second detection called x0
    "image_missing": ("nowhere", "w0", "plan"),  # no image has this id
    "too_many_detections": ("im_many", "m3", "plan"),  # the 4th of 4 with --max-detections 3
    "fetch_failed": ("u_missing", None, "read"),  # a uri under --allow-uris that does not exist
    "no_image_bytes": ("im_null", "n0", "read"),  # a null image
    "undecodable": ("im_garbage", "g0", "decode"),  # bytes of no image format
    "too_many_pixels": ("im_big", "big0", "decode"),  # 200 x 200 with --max-pixels 6144
    "unsupported": ("im_bmp", "b0", "decode"),  # a valid BMP: we decode JPEG, PNG and WebP
    "invalid_parameter": ("u_param", None, "crop"),  # a null per-image x_center
    "invalid_box": ("im_ok", "d_nan", "crop"),  # a NaN coordinate
    "empty_window": ("im_ok", "d_outside", "crop"),  # a box entirely right of the image
    "invalid_mask": ("im_ok", "d_badmask", "crop"),  # an RLE sized for another image
}


def detection(image_id, detection_id, box=(2.0, 3.0, 20.0, 15.0), mask=None):
    x0, y0, x1, y1 = box
    return {"image_id": image_id, "detection_id": detection_id, "x_min": x0, "y_min": y0,
            "x_max": x1, "y_max": y1, "mask": mask}


def dynamic_run_inputs(folder: pathlib.Path) -> None:
    ok, bmp = cv2.imencode(".bmp", image_pixels(9))
    assert ok
    images = [
        ("im_ok", png(image_pixels(0))),
        ("im_many", png(image_pixels(1))),
        ("im_garbage", b"not an image at all"),
        ("im_bmp", bmp.tobytes()),
        ("im_big", png(image_pixels(2, (200, 200)))),
        ("im_null", None),
        ("im_dup", png(image_pixels(3))),
        ("im_dup", png(image_pixels(4))),
    ]
    write_parquet(pa.table({"image_id": [i for i, _ in images],
                            "image": pa.array([b for _, b in images], pa.binary())}),
                  folder / "images.parquet")
    wrong_size = encode_rle(np.ones((10, 10), bool))
    rows = [
        detection("im_ok", "d_nan", (NAN, 3.0, 20.0, 15.0)),
        detection("im_ok", "d_outside", (100.0, 3.0, 120.0, 15.0)),
        detection("im_ok", "d_badmask", mask=wrong_size),
        *(detection("im_many", f"m{k}") for k in range(4)),
        detection("im_garbage", "g0"),
        detection("im_bmp", "b0"),
        detection("im_big", "big0"),
        detection("im_null", "n0"),
        detection("im_dup", "x0"),
        detection("im_dup", "x0"),
        detection("im_dup", None),
        detection("nowhere", "w0"),
    ]
    write_parquet(pa.Table.from_pylist(rows, schema=schema.DETECTIONS_SCHEMA),
                  folder / "detections.parquet")


def static_run_inputs(folder: pathlib.Path) -> None:
    pictures = folder / "pictures"
    pictures.mkdir()
    cv2.imwrite(str(pictures / "a.png"), image_pixels(5))
    write_parquet(pa.table({
        "image_id": ["u_ok", "u_missing", "u_param"],
        "uri": [str(pictures / "a.png"), str(pictures / "missing.png"), str(pictures / "a.png")],
        "cx": pa.array([10.0, 10.0, None], pa.float64()),
    }), folder / "images.parquet")


def read_errors(output: pathlib.Path) -> list[dict]:
    files = sorted((output / "errors").glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def error_rows(ray_cluster, tmp_path_factory) -> list[dict]:
    """The errors/ rows of two runs: a dynamic crop over bad images and detections, and an
    absolute static crop over `uri` images with a per-image parameter."""
    dynamic = tmp_path_factory.mktemp("dynamic")
    dynamic_run_inputs(dynamic)
    run(JobConfig(images=str(dynamic / "images.parquet"),
                  detections=str(dynamic / "detections.parquet"), output=str(dynamic / "out"),
                  step=steps.parse_step({"type": "roboflow_core/dynamic_crop@v1",
                                         "mask_opacity": 1.0}),
                  max_detections=3, max_pixels=64 * 48 * 2))
    static = tmp_path_factory.mktemp("static")
    static_run_inputs(static)
    run(JobConfig(images=str(static / "images.parquet"), output=str(static / "out"),
                  step=steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1",
                                         "x_center": "$inputs.cx", "y_center": 10, "width": 8,
                                         "height": 6}),
                  allow_uris=(str(static / "pictures"),)))
    return read_errors(dynamic / "out") + read_errors(static / "out")


def test_the_table_of_producers_covers_exactly_the_listed_reasons():
    assert set(PRODUCERS) == set(schema.ERROR_REASONS)
    assert len(schema.ERROR_REASONS) == len(set(schema.ERROR_REASONS))


@pytest.mark.parametrize("reason", schema.ERROR_REASONS)
def test_every_listed_reason_has_a_producing_input(error_rows, reason):
    assert reason in PRODUCERS, f"{reason!r} is in ERROR_REASONS but no input here produces it"
    image_id, detection_id, stage = PRODUCERS[reason]
    rows = [r for r in error_rows if r["reason"] == reason]
    assert [(r["image_id"], r["detection_id"], r["stage"]) for r in rows] == [
        (image_id, detection_id, stage)], rows
    assert rows[0]["message"]


def test_no_run_writes_an_unlisted_reason(error_rows):
    assert {r["reason"] for r in error_rows} == set(schema.ERROR_REASONS)
    assert len(error_rows) == len(schema.ERROR_REASONS)  # each input fails exactly once


def reasons_written_by_the_code() -> set[str]:
    """Reason literals in the job's sources: the 4th argument of ``error(...)`` and
    ``_error_rows(...)`` calls and the reasons of the plan's ``(mask, reason, message)`` table,
    plus the decode reasons ``ImageDecodeError`` may carry and the crop reasons cropcore's
    batched kernels return (``cropcore.REASONS``, written by ``ShardBuilder._record``)."""
    found = set(codec._REASONS) | set(CROP_REASONS)
    for path in (ROOT / "jobs").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in ("error", "_error_rows") and len(node.args) >= 4:
                    reason = node.args[3]
                    if isinstance(reason, ast.Constant) and isinstance(reason.value, str):
                        found.add(reason.value)
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
                for item in node.iter.elts:
                    if (isinstance(item, ast.Tuple) and len(item.elts) == 3
                            and isinstance(item.elts[1], ast.Constant)):
                        found.add(item.elts[1].value)
    return found


def test_reasons_in_the_code_are_listed():
    written = reasons_written_by_the_code()
    assert len(written) >= 10  # the scan still finds the job's error calls
    assert written <= set(schema.ERROR_REASONS), written - set(schema.ERROR_REASONS)
