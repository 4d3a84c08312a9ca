"""The demo's inputs (``python -m jobs demo``), synthetic but realistic, made from real photographs.
The benchmark (``benchmarks/``) builds its datasets with the same generator.

The photographs are scikit-image's bundled samples (they ship inside its wheel, so nothing is
downloaded). Each generated image is a random view of one photograph, scaled and tiled to the
requested size and JPEG-encoded; each gets 0 or ``detections_range`` boxes of random size, a
share of them with an instance mask (an ellipse filling the box, COCO RLE), keypoints and a
polygon outline.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cropcore.codec import encode_image
from cropcore.masks import encode_rle
from jobs import schema
from jobs.storage import resolve, write_atomic

__all__ = ["DatasetSpec", "make_dataset", "photo_view", "sample_photographs"]

_SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
            "motorcycle_left", "retina", "colorwheel", "cat")


def sample_photographs() -> list[np.ndarray]:
    """scikit-image's colour sample photographs as BGR uint8 arrays."""
    try:
        from skimage import data
    except ImportError as error:
        raise RuntimeError("the demo data needs scikit-image: pip install 'cropcore[demo]'") \
            from error
    photos = []
    for name in _SAMPLES:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            image = loader()
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            photos.append(cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2BGR))
    if not photos:
        raise RuntimeError("scikit-image ships no colour sample photographs here")
    return photos


@dataclass(frozen=True)
class DatasetSpec:
    """What ``make_dataset`` generates: image count and size, detections per image (0 for a
    ``no_detections_share`` of images), the share with a mask, JPEG quality, row-group size,
    and the seed."""

    num_images: int = 48
    size_wh: tuple[int, int] = (640, 480)
    detections_range: tuple[int, int] = (5, 30)
    masked_share: float = 0.5
    no_detections_share: float = 0.1
    quality: int = 90
    rows_per_group: int = 16
    seed: int = 0


def photo_view(photo: np.ndarray, size_wh: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """A random view of ``photo`` of ``size_wh`` (width, height): scaled by 0.8-1.6, tiled as
    needed, and cut at a random place."""
    width, height = size_wh
    scale = rng.uniform(0.8, 1.6)
    scaled = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    reps_y = -(-height // scaled.shape[0]) + 1
    reps_x = -(-width // scaled.shape[1]) + 1
    tiled = np.tile(scaled, (reps_y, reps_x, 1))
    y = int(rng.integers(0, tiled.shape[0] - height + 1))
    x = int(rng.integers(0, tiled.shape[1] - width + 1))
    return np.ascontiguousarray(tiled[y : y + height, x : x + width])


def make_dataset(output: str, spec: DatasetSpec = DatasetSpec()) -> dict[str, int]:
    """Write ``output/images/part-00000.parquet`` and ``output/detections/part-00000.parquet``."""
    rng = np.random.default_rng(spec.seed)
    photos = sample_photographs()
    width, height = spec.size_wh
    image_rows, detection_rows = [], []
    for index in range(spec.num_images):
        image_id = f"img-{index:06d}"
        pixels = photo_view(photos[index % len(photos)], spec.size_wh, rng)
        image_rows.append({schema.IMAGE_ID: image_id,
                           "image": encode_image(pixels, "jpeg", spec.quality),
                           "source": f"skimage:{_SAMPLES[index % len(_SAMPLES)]}",
                           "frame_number": index})
        if rng.random() < spec.no_detections_share:
            continue
        for k in range(int(rng.integers(spec.detections_range[0], spec.detections_range[1] + 1))):
            w = float(rng.uniform(64, min(600, width)))
            h = float(rng.uniform(64, min(600, height)))
            x0 = float(rng.uniform(-0.1 * w, width - 0.9 * w))
            y0 = float(rng.uniform(-0.1 * h, height - 0.9 * h))
            box = (x0, y0, x0 + w, y0 + h)
            centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            row = {schema.IMAGE_ID: image_id, schema.DETECTION_ID: f"{image_id}-det-{k:03d}",
                   "x_min": box[0], "y_min": box[1], "x_max": box[2], "y_max": box[3],
                   "class_name": ("person", "car", "cat", "bicycle")[k % 4], "class_id": k % 4,
                   "confidence": round(float(rng.uniform(0.3, 1.0)), 4),
                   "keypoints": [{"x": centre[0], "y": centre[1], "confidence": 1.0}],
                   "polygon": [[box[0], box[1]], [box[2], box[1]], [centre[0], box[3]]],
                   "mask": None}
            if rng.random() < spec.masked_share:
                mask = np.zeros((height, width), np.uint8)
                cv2.ellipse(mask, (round(centre[0]), round(centre[1])),
                            (max(1, round(w / 2)), max(1, round(h / 2))), 0, 0, 360, 1, -1)
                row["mask"] = encode_rle(mask.astype(bool))
            detection_rows.append(row)
    images = pa.Table.from_pylist(image_rows)
    detections = pa.Table.from_pylist(detection_rows, schema=schema.DETECTIONS_SCHEMA)
    for name, table, group in (("images", images, spec.rows_per_group),
                               ("detections", detections, 65536)):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=group)
        write_atomic(resolve(output).child(name, "part-00000.parquet"), sink.getvalue())
    return {"images": images.num_rows, "detections": detections.num_rows}
