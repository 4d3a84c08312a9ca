"""Small input tables for job tests: PNG images (lossless, so crops compare exactly) and
detections in the job's schema."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cropcore.masks import encode_rle
from jobs.schema import DETECTIONS_SCHEMA
from jobs.sinks import commit_run, write_index_part, write_shard
from jobs.storage import resolve


def image_pixels(index: int, size_wh=(64, 48)) -> np.ndarray:
    rng = np.random.default_rng(index)
    width, height = size_wh
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def png(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def write_parquet(table: pa.Table, path, filesystem=None, row_group_size=None) -> None:
    pq.write_table(table, str(path), filesystem=filesystem, row_group_size=row_group_size)


def images_table(n: int, size_wh=(64, 48), **extra_columns) -> pa.Table:
    columns = {
        "image_id": [f"im{i}" for i in range(n)],
        "image": [png(image_pixels(i, size_wh)) for i in range(n)],
        "frame_number": list(range(n)),
        "video_id": ["clip-a"] * n,
    }
    columns.update(extra_columns)
    return pa.table(columns)


def detections_table(n_images: int, per_image: int = 3, size_wh=(64, 48), masks=True,
                     seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    width, height = size_wh
    rows = []
    for i in range(n_images):
        for k in range(per_image):
            x0, y0 = rng.uniform(-5, width - 10), rng.uniform(-5, height - 10)
            x1, y1 = x0 + rng.uniform(4, 30), y0 + rng.uniform(4, 30)
            mask = None
            if masks and k % 2 == 0:
                m = np.zeros((height, width), bool)
                m[int(max(y0, 0)) : int(y1), int(max(x0, 0)) : int((x0 + x1) / 2)] = True
                mask = encode_rle(m)
            rows.append({
                "image_id": f"im{i}", "detection_id": f"im{i}-d{k}",
                "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1,
                "class_name": "thing", "class_id": k, "confidence": 0.5,
                "mask": mask,
                "keypoints": [{"x": x0 + 1, "y": y0 + 2, "confidence": 0.9}],
                "polygon": [[x0, y0], [x1, y0], [x1, y1]],
            })
    return pa.Table.from_pylist(rows, schema=DETECTIONS_SCHEMA)


def write_committed_output(output: Path, crops: pa.Table, lineage: pa.Table,
                           errors: pa.Table | None = None, step: dict | None = None,
                           image_format: str = "png") -> Path:
    """A committed output written with the job's own sinks, without running the job."""
    location = resolve(str(output))
    tables = {"crops": crops, "lineage": lineage}
    if errors is not None:
        tables["errors"] = errors
    counts = {"images": 1, "detections": crops.num_rows, "crops": crops.num_rows, "errors": {}}
    fingerprint = "f" * 64
    marker = write_shard(location, "shard0", tables, counts, fingerprint)
    part = write_index_part(location, fingerprint, [marker])
    commit_run(location, fingerprint, {
        "run_id": "run-handmade", "status": "committed", "fingerprint": "f" * 64,
        "step": step or {"type": "cropcore/crop_and_resize@v1"}, "code_version": "0.1.0+test",
        "format": image_format, "inputs": {"images": str(output.parent / "images.parquet"),
                                           "detections": None},
        "counts": counts | {"images_decoded": 1, "images_without_detections": 0},
    }, [part])
    return output


def lineage_rows(crop_ids: list[str]) -> pa.Table:
    """Lineage rows with the job's columns (one 64x48 parent, each crop its top-left 3x4)."""
    n = len(crop_ids)
    created = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    integers = {"window_x_min": 0, "window_y_min": 0, "window_x_max": 3, "window_y_max": 4,
                "parent_width": 64, "parent_height": 48}
    return pa.table({
        "crop_id": pa.array(crop_ids, pa.string()), "image_id": pa.array(["im0"] * n, pa.string()),
        "detection_id": pa.array([f"d{i}" for i in range(n)], pa.string()),
        "source_uri": pa.array(["images.parquet#row=0"] * n, pa.string()),
        "source_sha256": pa.array(["0" * 64] * n, pa.string()),
        **{name: pa.array([value] * n, pa.int64()) for name, value in integers.items()},
        "created_at": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
    })
