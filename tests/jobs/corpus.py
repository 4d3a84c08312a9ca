"""Inputs for the reliability tests: a corpus of bad images and detections, each with the error
reason the job must record for it, and a dataset big enough for faults to land mid-job.

Every image in the corpus is 64 x 48 (when it has a size at all), so ``max_pixels`` =
``SMALL_MAX_PIXELS`` refuses every image whose header can be read: the pixel limit is checked
on the header, before the decoder runs, so a corrupt PNG or a truncated JPEG with an intact
header gets ``too_many_pixels`` then (see ``ImageCase.reason_small_limit``).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jobs.schema import DETECTIONS_SCHEMA
from tests.jobs.builders import image_pixels, png

SIZE_WH = (64, 48)
SMALL_MAX_PIXELS = SIZE_WH[0] * SIZE_WH[1] - 1  # one pixel short of every corpus image
CROP = "crop"  # the outcome of a detection (or image) that produced a crop

# Reasons the job gives before it looks at the image: they do not depend on the image.
PLAN_REASONS = ("missing_id", "duplicate_detection_id", "image_missing")


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR (valid CRC) declares ``width x height`` RGB pixels, with one
    tiny IDAT: decoding it for real would allocate ``width * height * 3`` bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


def jpeg(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def cmyk_jpeg(pixels_bgr: np.ndarray) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(pixels_bgr[:, :, ::-1])).convert("CMYK")
    sink = io.BytesIO()
    image.save(sink, format="JPEG", quality=95)
    return sink.getvalue()


def corrupt_png(pixels: np.ndarray) -> bytes:
    """A PNG with an intact signature and IHDR whose image data is overwritten with noise."""
    data = bytearray(png(pixels))
    data[60:200] = np.random.default_rng(7).integers(0, 256, 140, dtype=np.uint8).tobytes()
    return bytes(data)


def corrupt_jpeg_scan(pixels: np.ndarray) -> bytes:
    """A JPEG with intact headers and end-of-image marker whose entropy-coded data is noise
    without FF bytes (so no stray markers)."""
    data = jpeg(pixels)
    start = data.find(b"\xff\xda") + 14  # past a three-component scan header
    noise = np.random.default_rng(11).integers(0, 255, len(data) - start - 2, dtype=np.uint8)
    return data[:start] + noise.tobytes() + b"\xff\xd9"


def jpeg_claiming(pixels: np.ndarray, width: int, height: int) -> bytes:
    """A valid JPEG of ``pixels`` whose frame header (SOF0) is patched to declare
    ``width x height``."""
    data = bytearray(jpeg(pixels))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@dataclass(frozen=True)
class ImageCase:
    image_id: str
    data: bytes | None
    reason: str | None  # the error every crop of this image gets; None: it decodes
    reason_small_limit: str | None  # the same with max_pixels=SMALL_MAX_PIXELS


@dataclass(frozen=True)
class DetectionCase:
    image_id: str | None
    detection_id: str | None
    xyxy: tuple[float | None, float | None, float | None, float | None]
    reason: str | None = None  # a reason of its own (plan or box); None: its image decides


def image_cases() -> list[ImageCase]:
    good = image_pixels(0, SIZE_WH)
    other = image_pixels(1, SIZE_WH)
    rgba = np.dstack([other, np.arange(SIZE_WH[0] * SIZE_WH[1], dtype=np.uint32)
                      .reshape(SIZE_WH[1], SIZE_WH[0]).astype(np.uint8)])
    small = "too_many_pixels"
    return [
        # an ordinary 8-bit BGR PNG
        ImageCase("good", png(good), None, small),
        # another ordinary PNG, the home of the duplicate detection ids
        ImageCase("good-2", png(other), None, small),
        # random bytes: no known signature, refused from the header
        ImageCase("corrupt-bytes", np.random.default_rng(3).integers(
            0, 256, 500, dtype=np.uint8).tobytes(), "undecodable", "undecodable"),
        # PNG signature and IHDR intact, pixel data noise: the header passes, the decoder fails
        ImageCase("corrupt-png", corrupt_png(good), "undecodable", small),
        # the first half of a JPEG: the header is whole, the scan has no end-of-image marker
        ImageCase("truncated-jpeg", jpeg(good)[: len(jpeg(good)) // 2], "undecodable", small),
        # present but empty
        ImageCase("zero-length", b"", "no_image_bytes", "no_image_bytes"),
        # null
        ImageCase("null-image", None, "no_image_bytes", "no_image_bytes"),
        # a decompression bomb: 10^10 pixels declared, refused before any pixel is allocated
        ImageCase("bomb", png_declaring(100_000, 100_000), "too_many_pixels", small),
        # 16 bits per sample: reduced to 8
        ImageCase("png-16bit", png(good.astype(np.uint16) * 257), None, small),
        # one channel: replicated to BGR
        ImageCase("grayscale", png(good[:, :, 0]), None, small),
        # a CMYK JPEG written by Pillow: converted to BGR
        ImageCase("cmyk-jpeg", cmyk_jpeg(good), None, small),
        # BGRA: alpha dropped
        ImageCase("rgba", png(rgba), None, small),
        # no detections at all: never fetched or decoded by the dynamic crop
        ImageCase("no-detections", png(other), None, small),
        # a whole JPEG (headers, end-of-image marker) whose scan data is noise: libjpeg would
        # conceal it with grey; its corrupt-data warning makes it undecodable
        ImageCase("corrupt-jpeg-scan", corrupt_jpeg_scan(good), "undecodable", small),
        # a 2 KB JPEG whose frame header claims 13000 x 13000 (under the default pixel limit):
        # far too few bytes for that many blocks, undecodable rather than a grey 13000 x 13000
        ImageCase("jpeg-claims-13000", jpeg_claiming(good[:24, :32], 13_000, 13_000),
                  "undecodable", small),
    ]


# A second row with an id already taken: skipped whatever its bytes (never decoded).
DUPLICATE_IMAGE = ImageCase("good", b"garbage that is never decoded", "duplicate_image_id",
                            "duplicate_image_id")

NAN, INF = float("nan"), float("inf")


def detection_cases() -> list[DetectionCase]:
    cases = [
        # fine
        DetectionCase("good", "good/ok", (10.5, 5.0, 40.0, 30.5)),
        # a NaN coordinate
        DetectionCase("good", "good/nan", (NAN, 5.0, 40.0, 30.0), "invalid_box"),
        # an infinite coordinate
        DetectionCase("good", "good/inf", (10.0, 5.0, INF, 30.0), "invalid_box"),
        # a null coordinate
        DetectionCase("good", "good/null-coordinate", (10.0, None, 40.0, 30.0), "invalid_box"),
        # x_max < x_min
        DetectionCase("good", "good/inverted", (40.0, 5.0, 10.0, 30.0), "invalid_box"),
        # enormous, covering the image: clamped to the whole image, a crop
        DetectionCase("good", "good/enormous", (-1e30, -1e30, 1e30, 1e30)),
        # enormous, entirely off the image: clamped to nothing
        DetectionCase("good", "good/far-away", (1e30, 1e30, 2e30, 2e30), "empty_window"),
        # the first of two rows with one detection id keeps it...
        DetectionCase("good-2", "dup", (1.0, 1.0, 20.0, 20.0)),
        # ...the second is refused
        DetectionCase("good-2", "dup", (2.0, 2.0, 30.0, 30.0), "duplicate_detection_id"),
        # a null detection id
        DetectionCase("good-2", None, (1.0, 1.0, 20.0, 20.0), "missing_id"),
        # a null image id
        DetectionCase(None, "no-image-id", (1.0, 1.0, 20.0, 20.0), "missing_id"),
        # an image that does not exist
        DetectionCase("ghost", "ghost/a", (1.0, 1.0, 20.0, 20.0), "image_missing"),
        DetectionCase("ghost", "ghost/b", (1.0, 1.0, 20.0, 20.0), "image_missing"),
    ]
    # one ordinary box on every other image: it takes that image's fate
    for case in image_cases():
        if case.image_id not in ("good", "good-2", "no-detections"):
            cases.append(DetectionCase(case.image_id, f"{case.image_id}/ok", (3.0, 4.0, 50.0,
                                                                              40.0)))
    return cases


def images_table() -> pa.Table:
    rows = [*image_cases(), DUPLICATE_IMAGE]
    return pa.table({"image_id": pa.array([c.image_id for c in rows], pa.string()),
                     "image": pa.array([c.data for c in rows], pa.binary())})


def detections_table() -> pa.Table:
    cases = detection_cases()
    columns = {
        "image_id": [c.image_id for c in cases],
        "detection_id": [c.detection_id for c in cases],
        **{name: [c.xyxy[k] for c in cases]
           for k, name in enumerate(("x_min", "y_min", "x_max", "y_max"))},
    }
    schema = pa.schema([DETECTIONS_SCHEMA.field(name) for name in columns])
    # from_pandas=False keeps NaN a value (not null), so NaN and null are separate cases
    return pa.table({name: pa.array(values, schema.field(name).type, from_pandas=False)
                     for name, values in columns.items()}, schema=schema)


def write_corpus(root) -> tuple[str, str]:
    """Write the corpus under ``root``: ``images/`` (the table in row groups of 4, plus an
    images file with 0 rows) and ``detections/`` (the table, plus a 0-row detections file).
    Returns the two folder paths."""
    images, detections = root / "images", root / "detections"
    images.mkdir(parents=True)
    detections.mkdir(parents=True)
    table = images_table()
    pq.write_table(table, images / "part-0.parquet", row_group_size=4)
    pq.write_table(table.schema.empty_table(), images / "part-1-empty.parquet")
    pq.write_table(detections_table(), detections / "part-0.parquet")
    pq.write_table(detections_table().schema.empty_table(), detections / "part-1-empty.parquet")
    return str(images), str(detections)


def expected_detection_outcomes(*, small_limit: bool = False,
                                max_detections: int = 10_000) -> Counter:
    """``Counter((detection_id, outcome))`` the dynamic crop must produce for the corpus: the
    outcome is ``CROP`` or the error reason, in the job's order of checks (planning, the
    per-image detection limit, the box, the image, the window)."""
    images = {c.image_id: c for c in image_cases()}
    outcomes: Counter = Counter()
    kept_per_image: Counter = Counter()
    for case in detection_cases():
        if case.reason in PLAN_REASONS:
            outcomes[case.detection_id, case.reason] += 1
            continue
        kept_per_image[case.image_id] += 1
        image = images[case.image_id]
        image_reason = image.reason_small_limit if small_limit else image.reason
        if kept_per_image[case.image_id] > max_detections:
            outcome = "too_many_detections"
        elif case.reason == "invalid_box":
            outcome = case.reason
        elif image_reason is not None:
            outcome = image_reason
        else:
            outcome = case.reason or CROP
        outcomes[case.detection_id, outcome] += 1
    return outcomes


def expected_image_outcomes(*, small_limit: bool = False) -> Counter:
    """``Counter((image_id, outcome))`` of a static crop (one window inside every image)."""
    outcomes = Counter()
    for case in [*image_cases(), DUPLICATE_IMAGE]:
        reason = case.reason_small_limit if small_limit else case.reason
        outcomes[case.image_id, reason or CROP] += 1
    return outcomes


# -- a dataset big enough for a fault to land mid-job ------------------------------------------
FAULT_IMAGES = 40
FAULT_DETECTIONS_PER_IMAGE = 10
FAULT_SIZE_WH = (640, 480)
FAULT_ROW_GROUP = 4


@lru_cache(maxsize=1)
def fault_tables() -> tuple[pa.Table, pa.Table]:
    """40 noise images of 640 x 480 (PNG: slow to decode and to encode crops of, so the job
    takes seconds) with 10 boxes of 100-200 px each, all inside the image (no error rows)."""
    rng = np.random.default_rng(2024)
    width, height = FAULT_SIZE_WH
    ids, images, detections = [], [], []
    for i in range(FAULT_IMAGES):
        ids.append(f"img-{i:03d}")
        images.append(png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
        for k in range(FAULT_DETECTIONS_PER_IMAGE):
            w, h = rng.uniform(100, 200, 2)
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            detections.append({"image_id": ids[-1], "detection_id": f"{ids[-1]}/{k}",
                               "x_min": x0, "y_min": y0, "x_max": x0 + w, "y_max": y0 + h,
                               "class_name": "noise", "confidence": 0.5})
    schema = pa.schema([DETECTIONS_SCHEMA.field(n) for n in detections[0]])
    return (pa.table({"image_id": ids, "image": images, "frame_number": range(FAULT_IMAGES)}),
            pa.Table.from_pylist(detections, schema=schema))


def write_fault_dataset(root: str, filesystem=None) -> tuple[str, str]:
    """Write the fault dataset as ``root/images/part-0.parquet`` (row groups of 4 images: 10
    units) and ``root/detections/part-0.parquet``; ``root`` is a local path or, with a pyarrow
    ``filesystem``, a path in it. Returns the two folder paths."""
    images, detections = fault_tables()
    if filesystem is None:
        for folder in ("images", "detections"):
            os.makedirs(f"{root}/{folder}", exist_ok=True)
    pq.write_table(images, f"{root}/images/part-0.parquet", filesystem=filesystem,
                   row_group_size=FAULT_ROW_GROUP)
    pq.write_table(detections, f"{root}/detections/part-0.parquet", filesystem=filesystem)
    return f"{root}/images", f"{root}/detections"
