"""Arrow schemas of the tables the job reads and writes, and column checks with clear messages.

Input tables
------------
images      ``image_id: string`` plus one image source:
            ``image: binary`` (encoded JPEG/PNG/WebP bytes), or
            ``image: struct<bytes: binary, path: string>`` (the Hugging Face image column), or
            ``uri: string`` (an object fetched through the storage layer).
            Optionally ``detections: list<struct<...DETECTION_FIELDS...>>`` nested per image.
            Any other column is carried along onto crop and lineage rows (``--keep-columns``).
detections  ``image_id, detection_id: string``, ``x_min, y_min, x_max, y_max: float64`` (pixel
            xyxy in the full image frame), optional ``class_name: string``, ``class_id: int64``,
            ``confidence: float64``, ``mask: struct<size: list<int32>, counts: string>`` (COCO
            RLE, column-major; integer-list counts are accepted too), ``keypoints:
            list<struct<x, y, confidence: float64>>``, ``polygon: list<list<float64>>`` ([x, y]
            pairs).
"""

from __future__ import annotations

import pyarrow as pa

IMAGE_ID = "image_id"
DETECTION_ID = "detection_id"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
KEYPOINT_TYPE = pa.struct([("x", pa.float64()), ("y", pa.float64()), ("confidence", pa.float64())])
KEYPOINTS_TYPE = pa.list_(KEYPOINT_TYPE)
POLYGON_TYPE = pa.list_(pa.list_(pa.float64()))
HF_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

DETECTIONS_SCHEMA = pa.schema(
    [
        (IMAGE_ID, pa.string()),
        (DETECTION_ID, pa.string()),
        ("x_min", pa.float64()),
        ("y_min", pa.float64()),
        ("x_max", pa.float64()),
        ("y_max", pa.float64()),
        ("class_name", pa.string()),
        ("class_id", pa.int64()),
        ("confidence", pa.float64()),
        ("mask", RLE_TYPE),
        ("keypoints", KEYPOINTS_TYPE),
        ("polygon", POLYGON_TYPE),
    ]
)

IMAGES_SCHEMA = pa.schema([(IMAGE_ID, pa.string()), ("image", pa.binary())])
