"""Small input tables for job tests: PNG images (lossless, so crops compare exactly) and
detections in the job's schema."""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cropcore.masks import encode_rle
from jobs.schema import DETECTIONS_SCHEMA


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
