"""Importers: COCO, YOLO and Roboflow annotations -> the two Parquet tables the crop job reads.

Each importer writes::

    OUTPUT/images/part-00000.parquet, part-00001.parquet, ...   (IMPORTED_IMAGES_SCHEMA)
    OUTPUT/detections/part-00000.parquet                (schema.IMPORTED_DETECTIONS_SCHEMA)

Image files are split so that each holds at most ``max_file_bytes`` of encoded images (one image
larger than that gets a file of its own). Every path is a URL that ``jobs.storage`` resolves (a
local path, ``file://``, ``s3://``, or any fsspec protocol), and all reading, listing and writing
goes through ``jobs.storage``; credentials come from the environment as usual for each store.
An importer refuses an output that already holds tables, and removes what it wrote if it fails.

Convention (all formats):
- Boxes are pixel ``x_min, y_min, x_max, y_max`` (float64) in the full image's frame, with
  ``(0, 0)`` the top-left corner of the top-left pixel; the importers never round or clip them.
- Polygons are ``[[x, y], ...]`` in pixels; masks are COCO RLE (column-major) with compressed
  string counts; keypoints are ``{x, y, confidence}`` in pixels.
- Image and detection ids are strings; ``width`` and ``height`` are those of the image as
  annotated, or when the annotations do not say, read from the image header with
  ``cropcore.read_image_size``: the image as shown, EXIF orientation applied, which is the
  frame the crop job decodes (and OpenCV, Ultralytics and Roboflow's inference read). A COCO
  size that disagrees with the image's is refused.
- Detections are ordered by image, then in their order in the source.

Errors in the input (a missing file, malformed JSON or label line, an unknown category or class,
a label without an image) raise ``ValueError`` naming the file and the line or record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import posixpath
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from cropcore import ImageDecodeError, read_image_size
from cropcore.masks import decode_rle
from jobs.fetch import dot_segments
from jobs.schema import IMAGE_ID, IMAGES_SCHEMA, IMPORTED_DETECTIONS_SCHEMA
from jobs.storage import (
    Location,
    MissingObjectError,
    StorageError,
    atomic_output,
    create_exclusive,
    delete,
    file_info,
    list_tree,
    read_bytes,
    redact,
    resolve,
    same_filesystem,
)

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "EXAMPLE",
    "IMAGE_SUFFIXES",
    "IMPORTED_IMAGES_SCHEMA",
    "ImportSummary",
    "import_coco",
    "import_roboflow",
    "import_yolo",
    "add_arguments",
    "command",
]

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024

# The images table: the job's required columns, then the source file name and the size the
# annotations refer to, carried along onto crop rows.
IMPORTED_IMAGES_SCHEMA = pa.schema(
    [
        *IMAGES_SCHEMA,
        pa.field("file_name", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
    ]
)

# The formats the crop job decodes (cropcore.decode_image).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Each images row group is one crop task: small enough to spread a dataset over the cluster's
# CPUs and to bound a task's memory, large enough that per-task costs stay small.
IMAGES_PER_ROW_GROUP = 64


@dataclass(frozen=True)
class ImportSummary:
    """What an importer wrote: row counts and the URLs of the files."""

    images: int
    detections: int
    image_files: tuple[str, ...]
    detections_file: str


# --------------------------------------------------------------------------------------------
# COCO


def import_coco(
    annotations: str, images: str, output: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> ImportSummary:
    """Import a COCO annotation file (instances or keypoints; annotations with a ``score``, as
    detector results carry, keep it as the confidence).

    Args:
        annotations: URL of the COCO JSON: ``{"images": [...], "annotations": [...],
            "categories": [...]}``.
        images: URL prefix the images' ``file_name`` entries are relative to.
        output: URL of the output directory (see the module docstring for the layout).
        max_file_bytes: upper bound on the encoded image bytes per images file.

    Convention:
        - ``image_id = str(image["id"])``; ``detection_id = str(annotation["id"])``, or
          ``f"{image_id}:{k}"`` (k-th annotation of that image, from 0) when there is no ``id``.
        - ``bbox [x, y, w, h]`` (top-left corner and size in pixels) becomes
          ``x_min = x, y_min = y, x_max = x + w, y_max = y + h``. Without a ``bbox``, the box is
          the extent of the polygons, or that of the RLE mask.
        - ``category_id`` becomes ``class_id``, and that category's ``name`` ``class_name``.
        - ``score`` (results files) becomes ``confidence``; ground truth has none (null).
        - ``segmentation`` always becomes ``mask`` (RLE, compressed string counts):
          polygons are rasterized together (all parts of a multi-part object, merged);
          uncompressed RLE (``iscrowd``) is compressed; compressed RLE is kept as it is.
          Polygon segmentations also fill ``polygon`` with one part as ``[[x, y], ...]``: the
          part of largest area (the first of equals), since the column holds a single ring; the
          mask stays the complete shape. Parts of fewer than 3 points have no area and are
          dropped.
        - ``keypoints [x1, y1, v1, ...]`` become ``{x, y, confidence: v}`` in order, all of them,
          with ``v`` kept as it is: 0 not labelled (x = y = 0), 1 labelled but hidden,
          2 visible; in results files, a score.
        - Image ``width``/``height`` come from the JSON, or from the image header without them.

    Returns:
        An :class:`ImportSummary`.
    """
    _check_max_file_bytes(max_file_bytes)
    document = _read_json(annotations)
    if isinstance(document, list):
        raise ValueError(
            f"{annotations}: a JSON list, like a COCO results file, names no image files or "
            f"categories: put its detections in the 'annotations' of the dataset's JSON (with "
            f"'images' and 'categories'), each with an 'id', and import that"
        )
    if not isinstance(document, dict):
        raise ValueError(
            f"{annotations}: expected a COCO JSON object with 'images', 'annotations' and "
            f"'categories', got a JSON {type(document).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise ValueError(
                f"{annotations}: expected '{key}' to be a list, got "
                f"{type(document.get(key)).__name__}"
            )
    categories = _coco_categories(document["categories"], annotations)
    coco_images = _coco_images(document["images"], annotations)
    images_store, images_root = _root(images)

    # Sizes first (decoding only images the JSON gives none for), so that all annotations are
    # converted, and every error found, before any image is copied.
    for record in coco_images.values():
        path = _join(images_root, record.file_name, images_store)  # checked before writes
        if record.size_hw is None:
            record.size_hw = _decoded_size_hw(
                _read_file_bytes(images_store, path), _shown(images_store, path)
            )
    rows_by_image: dict[str, list[dict[str, Any]]] = {image_id: [] for image_id in coco_images}
    for index, annotation in enumerate(document["annotations"]):
        where = f"{annotations}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise ValueError(f"{where}: expected an object, got {type(annotation).__name__}")
        if annotation.get("id") is not None:
            where += f" (id {annotation['id']})"
        image_id = str(_required(annotation, "image_id", where))
        if image_id not in coco_images:
            raise ValueError(f"{where}: image_id {image_id} is not in 'images'")
        rows = rows_by_image[image_id]
        rows.append(
            _coco_detection(
                annotation, where, image_id, len(rows), coco_images[image_id].size_hw, categories
            )
        )
    detection_rows = [row for rows in rows_by_image.values() for row in rows]
    _check_unique((row["detection_id"] for row in detection_rows), "detection_id", annotations)

    def image_rows() -> Iterator[tuple[str, bytes, str, int, int]]:
        for image_id, record in coco_images.items():
            path = _join(images_root, record.file_name, images_store)
            data = _read_file_bytes(images_store, path)
            height, width = record.size_hw
            shown_hw = _decoded_size_hw(data, _shown(images_store, path))
            if shown_hw != (height, width):  # the annotations were made on another frame
                turned = " (its EXIF orientation turns it)" if shown_hw == (width, height) else ""
                raise ValueError(
                    f"{_shown(images_store, path)}: the image is {shown_hw[1]}x{shown_hw[0]} as "
                    f"shown{turned}, but {annotations} says {width}x{height} for image "
                    f"{image_id}: its annotations would be cut from the wrong pixels"
                )
            yield image_id, data, record.file_name, width, height

    return _write_output(output, image_rows(), detection_rows, max_file_bytes)


@dataclass
class _CocoImage:
    file_name: str
    size_hw: tuple[int, int] | None


def _coco_categories(categories: list, url: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for index, category in enumerate(categories):
        where = f"{url}: categories[{index}]"
        if not isinstance(category, dict):
            raise ValueError(f"{where}: expected an object, got {type(category).__name__}")
        category_id = _integer(_required(category, "id", where), f"{where} id")
        if category_id in names:
            raise ValueError(f"{where}: duplicate category id {category_id}")
        names[category_id] = str(_required(category, "name", where))
    return names


def _coco_images(images: list, url: str) -> dict[str, _CocoImage]:
    records: dict[str, _CocoImage] = {}
    for index, image in enumerate(images):
        where = f"{url}: images[{index}]"
        if not isinstance(image, dict):
            raise ValueError(f"{where}: expected an object, got {type(image).__name__}")
        image_id = str(_required(image, "id", where))
        if image_id in records:
            raise ValueError(f"{where}: duplicate image id {image_id}")
        file_name = _required(image, "file_name", where)
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{where}: expected 'file_name' to be a non-empty string")
        size_hw = None
        if image.get("width") is not None and image.get("height") is not None:
            size_hw = (
                _positive_integer(image["height"], f"{where} height"),
                _positive_integer(image["width"], f"{where} width"),
            )
        records[image_id] = _CocoImage(file_name, size_hw)
    return records


def _coco_detection(
    annotation: dict,
    where: str,
    image_id: str,
    index_in_image: int,
    size_hw: tuple[int, int],
    categories: dict[int, str],
) -> dict[str, Any]:
    category_id = _integer(_required(annotation, "category_id", where), f"{where} category_id")
    if category_id not in categories:
        raise ValueError(
            f"{where}: category_id {category_id} is not in 'categories' "
            f"(known ids: {sorted(categories)})"
        )
    mask, polygon, extent = _coco_segmentation(annotation.get("segmentation"), size_hw, where)
    if annotation.get("bbox") is not None:
        x, y, w, h = _numbers(annotation["bbox"], f"{where} bbox", count=4)
        if w < 0 or h < 0:
            raise ValueError(f"{where}: bbox width and height must be >= 0, got {w} and {h}")
    elif extent is not None:
        x, y, w, h = extent
    elif mask is not None:
        from pycocotools import mask as mask_utils

        rle = {"size": mask["size"], "counts": mask["counts"].encode("ascii")}
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    else:
        raise ValueError(f"{where}: expected a 'bbox' (or a 'segmentation' to derive it from)")
    keypoints = None
    if annotation.get("keypoints"):
        values = _numbers(annotation["keypoints"], f"{where} keypoints")
        if len(values) % 3:
            raise ValueError(
                f"{where}: expected keypoints as [x, y, v] triples, got {len(values)} numbers"
            )
        keypoints = [
            {"x": values[i], "y": values[i + 1], "confidence": values[i + 2]}
            for i in range(0, len(values), 3)
        ]
    if not all(math.isfinite(v) for v in (x + w, y + h)):
        raise ValueError(f"{where}: bbox {[x, y, w, h]} ends beyond the float range")
    iscrowd = annotation.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, float):  # True and False are 1 and 0
        raise ValueError(f"{where}: iscrowd must be 0 or 1, got {iscrowd!r}")
    score = annotation.get("score")
    return {
        IMAGE_ID: image_id,
        "detection_id": (
            f"{image_id}:{index_in_image}"
            if annotation.get("id") is None
            else str(annotation["id"])
        ),
        "x_min": x,
        "y_min": y,
        "x_max": x + w,
        "y_max": y + h,
        "class_name": categories[category_id],
        "class_id": category_id,
        "confidence": None if score is None else _number(score, f"{where} score"),
        "mask": mask,
        "keypoints": keypoints,
        "polygon": polygon,
        "iscrowd": bool(iscrowd),  # COCO's crowd flag, carried to crops
        "polygon_style": "coco",  # polygons rasterize as pycocotools does (crop-semantics.md)
    }


def _coco_segmentation(
    segmentation: Any, size_hw: tuple[int, int], where: str
) -> tuple[dict | None, list[list[float]] | None, tuple[float, float, float, float] | None]:
    """COCO ``segmentation`` -> (RLE mask, largest polygon part, all parts' extent as xywh).

    The extent is exact for polygons, where the mask's box would be rounded to whole pixels.
    """
    from pycocotools import mask as mask_utils

    height, width = size_hw
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None, None, None
    if isinstance(segmentation, dict):
        size = _required(segmentation, "size", f"{where} segmentation")
        counts = _required(segmentation, "counts", f"{where} segmentation")
        if not isinstance(size, list) or len(size) != 2 or [
            _integer(v, f"{where} segmentation size") for v in size
        ] != [height, width]:
            raise ValueError(
                f"{where}: RLE size {size} does not match the image's [height, width] "
                f"[{height}, {width}]"
            )
        if isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts}
            try:
                decode_rle(rle, (0, 0, 0, 0))  # checks every run, decodes no pixel
            except ValueError as error:
                raise ValueError(f"{where}: segmentation: {error}") from None
            return rle, None, None
        runs = _numbers(counts, f"{where} segmentation counts")
        if any(run < 0 or run != int(run) for run in runs) or sum(runs) != height * width:
            raise ValueError(
                f"{where}: uncompressed RLE counts must be non-negative integers summing to "
                f"height * width = {height * width}, got a sum of {sum(runs)}"
            )
        rle = mask_utils.frPyObjects(
            {"size": [height, width], "counts": [int(r) for r in runs]}, height, width
        )
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}, None, None
    if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
        raise ValueError(
            f"{where}: expected 'segmentation' as a list of polygons [[x1, y1, x2, y2, ...], ...] "
            f"or an RLE object, got {type(segmentation).__name__}"
        )
    parts = []
    reach = 4 * max(width, height)
    for number, part in enumerate(segmentation):
        values = _numbers(part, f"{where} segmentation[{number}]")
        if len(values) % 2:
            raise ValueError(
                f"{where}: segmentation[{number}] has an odd number of coordinates "
                f"({len(values)}); expected x, y pairs"
            )
        far = [v for v, side in zip(values, (width, height) * (len(values) // 2), strict=True)
               if not -reach <= v <= side + reach]
        if far:  # pycocotools' memory grows with edge length (GBs at 1e8), then overflows
            raise ValueError(
                f"{where}: segmentation[{number}] has a vertex more than {reach} pixels outside "
                f"the {width}x{height} image ({far[0]}); a polygon must lie near its image"
            )
        if len(values) >= 6:
            parts.append(values)
    if not parts:
        return None, None, None
    rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    mask = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    largest = max(parts, key=lambda p: abs(_shoelace_area(p)))
    xs = [v for part in parts for v in part[0::2]]
    ys = [v for part in parts for v in part[1::2]]
    extent = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return mask, [[largest[i], largest[i + 1]] for i in range(0, len(largest), 2)], extent


def _shoelace_area(values: list[float]) -> float:
    xs = np.asarray(values[0::2])
    ys = np.asarray(values[1::2])
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


# --------------------------------------------------------------------------------------------
# YOLO


def import_yolo(
    labels: str,
    images: str,
    names: str,
    output: str,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    obb: bool = False,
) -> ImportSummary:
    """Import a YOLO (Darknet / Ultralytics) dataset: ``labels/*.txt`` beside ``images/*``.

    Args:
        labels: URL of the directory of label files (searched recursively).
        images: URL of the directory of images (searched recursively; suffixes in
            :data:`IMAGE_SUFFIXES`). Images without a label file are kept, with no detections.
        names: URL of the class names: a text file with one name per line (the first is 0),
            or an Ultralytics ``data.yaml`` whose ``names`` is a list or an ``{id: name}`` map
            (and whose ``kpt_shape: [K, D]``, if present, marks the labels as pose labels).
        output: URL of the output directory.
        max_file_bytes: upper bound on the encoded image bytes per images file.
        obb: the labels are Ultralytics oriented boxes (YOLO-OBB). Their lines look like
            4-point polygons, so the reader is told rather than guessing.

    Convention:
        - A label file pairs with the image at the same path relative to its directory, minus
          the suffix (``labels/a/b.txt`` <-> ``images/a/b.jpg``). ``image_id`` is that path
          without suffix: the file stem in the usual flat layout.
        - ``detection_id = f"{image_id}:{line_index}"``, ``line_index`` counting every line of
          the file from 0 (blank lines included), so an id points at its source line.
        - Coordinates are normalized to the image size, read from each image's header.
          ``class cx cy w h [conf]`` (box centre and size) becomes
          ``x_min = (cx - w / 2) * W``, ``x_max = (cx + w / 2) * W`` (y likewise with H).
        - ``class x1 y1 x2 y2 x3 y3 ... [conf]`` (3 or more points: an even count of numbers
          after the class, odd with a trailing confidence) is a segmentation polygon:
          ``polygon`` gets the points in pixels and the box is the points' extent.
        - Pose labels (``kpt_shape: [K, D]``): ``class cx cy w h`` then K points of D values
          (``x y`` or ``x y visibility``), optionally a trailing confidence; the visibility
          becomes the keypoint's ``confidence``.
        - YOLO-OBB labels (``obb=True``): ``class x1 y1 x2 y2 x3 y3 x4 y4 [conf]``, four corners
          normalized to the image size, become ``xyxyxyxy`` (four ``[x, y]`` corners in pixels,
          in the file's order) and the box is the corners' extent; ``polygon`` is null.
        - ``class_name`` comes from ``names``; ``mask`` is null.

    Returns:
        An :class:`ImportSummary`.
    """
    _check_max_file_bytes(max_file_bytes)
    class_names, kpt_shape = _yolo_names(names)
    images_store, images_root = _root(images)
    labels_store, labels_root = _root(labels)
    image_paths = _list_images(images_store, images_root, images)
    # A names file kept among the labels (LabelImg writes classes.txt there) is not a label.
    names_store, names_path = _root(names)
    if not same_filesystem(names_store, labels_store):
        names_path = None
    label_paths: dict[str, str] = {}
    for path in _find_files(labels_store, labels_root, labels):
        if not path.lower().endswith(".txt") or path == names_path:
            continue
        key = _relative_stem(path, labels_root)
        if key not in image_paths:
            raise ValueError(
                f"{_shown(labels_store, path)}: no image for this label file (expected "
                f"{key} with one of {', '.join(IMAGE_SUFFIXES)} under {images})"
            )
        label_paths[key] = path

    detection_rows: list[dict[str, Any]] = []

    def image_rows() -> Iterator[tuple[str, bytes, str, int, int]]:
        for image_id, path in image_paths.items():
            data = _read_file_bytes(images_store, path)
            height, width = _decoded_size_hw(data, _shown(images_store, path))
            if image_id in label_paths:
                label_path = label_paths[image_id]
                detection_rows.extend(
                    _yolo_label_rows(
                        _read_file_text(labels_store, label_path),
                        _shown(labels_store, label_path),
                        image_id,
                        (height, width),
                        class_names,
                        kpt_shape,
                        names,
                        obb=obb,
                    )
                )
            yield image_id, data, _relative_path(path, images_root), width, height

    return _write_output(output, image_rows(), detection_rows, max_file_bytes)


def _yolo_names(url: str) -> tuple[list[str], tuple[int, int] | None]:
    """Class names (index = class id) and the pose ``kpt_shape``, from a names file."""
    text = _read_text(url)
    if not url.lower().endswith((".yaml", ".yml")):
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line:
                raise ValueError(
                    f"{url}:{number}: blank class name (one name per line, the first is class 0)"
                )
        if not lines:
            raise ValueError(f"{url}: no class names")
        return lines, None

    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{url}: malformed YAML: {error}") from None
    except RecursionError:
        raise ValueError(f"{url}: malformed YAML: nested too deeply") from None
    if not isinstance(config, dict) or "names" not in config:
        raise ValueError(f"{url}: expected a YAML mapping with a 'names' list or map")
    raw = config["names"]
    if isinstance(raw, list):
        class_names = [str(name) for name in raw]
    elif isinstance(raw, dict):
        by_id = {_integer(key, f"{url}: names key {key!r}"): str(v) for key, v in raw.items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(
                f"{url}: expected 'names' ids 0..{len(by_id) - 1}, got {sorted(by_id)}"
            )
        class_names = [by_id[i] for i in range(len(by_id))]
    else:
        raise ValueError(f"{url}: expected 'names' to be a list or a map, got {type(raw).__name__}")
    kpt_shape = None
    if config.get("kpt_shape") is not None:
        shape = config["kpt_shape"]
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(v, int) for v in shape)
            or shape[0] < 1
            or shape[1] not in (2, 3)
        ):
            raise ValueError(f"{url}: expected 'kpt_shape' as [K, 2] or [K, 3], got {shape}")
        kpt_shape = (shape[0], shape[1])
    return class_names, kpt_shape


def _yolo_label_rows(
    text: str,
    url: str,
    image_id: str,
    size_hw: tuple[int, int],
    class_names: list[str],
    kpt_shape: tuple[int, int] | None,
    names_url: str,
    *,
    obb: bool = False,
) -> list[dict[str, Any]]:
    if obb and kpt_shape is not None:
        raise ValueError(f"{names_url}: kpt_shape (pose labels) cannot be read as oriented boxes")
    height, width = size_hw
    rows = []
    for line_index, line in enumerate(text.splitlines()):
        where = f"{url}:{line_index + 1}"
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = [float(token) for token in tokens]
        except ValueError:
            raise ValueError(f"{where}: expected numbers, got {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where}: expected finite numbers, got {line.strip()!r}")
        class_id = values[0]
        if class_id != int(class_id) or not 0 <= class_id < len(class_names):
            raise ValueError(
                f"{where}: class {tokens[0]} is not a class id of {names_url} "
                f"(0..{len(class_names) - 1})"
            )
        class_id = int(class_id)
        numbers = values[1:]
        confidence = keypoints = polygon = corners = None
        if obb:
            if len(numbers) not in (8, 9):
                raise ValueError(
                    f"{where}: expected an oriented box 'class x1 y1 x2 y2 x3 y3 x4 y4', "
                    f"optionally a confidence; got {len(values)} numbers"
                )
            if len(numbers) == 9:
                confidence = numbers.pop()
            normalized = numbers
            corners = [[numbers[i] * width, numbers[i + 1] * height] for i in range(0, 8, 2)]
        elif kpt_shape is not None:
            count, dims = kpt_shape
            expected = 4 + count * dims
            if len(numbers) not in (expected, expected + 1):
                raise ValueError(
                    f"{where}: expected class, 4 box numbers and {count}x{dims} keypoint "
                    f"numbers (kpt_shape), optionally a confidence; got {len(values)} numbers"
                )
            if len(numbers) == expected + 1:
                confidence = numbers.pop()
            box, flat = numbers[:4], numbers[4:]
            normalized = box + [v for i in range(0, len(flat), dims) for v in flat[i : i + 2]]
            keypoints = [
                {
                    "x": flat[i] * width,
                    "y": flat[i + 1] * height,
                    "confidence": flat[i + 2] if dims == 3 else None,
                }
                for i in range(0, len(flat), dims)
            ]
        elif len(numbers) in (4, 5):
            box = normalized = numbers[:4]
            confidence = numbers[4] if len(numbers) == 5 else None
        elif len(numbers) >= 6:
            # Polygons have an even count; an odd one carries a trailing confidence.
            if len(numbers) % 2:
                confidence = numbers.pop()
            normalized = numbers
            polygon = [
                [numbers[i] * width, numbers[i + 1] * height] for i in range(0, len(numbers), 2)
            ]
        else:
            raise ValueError(
                f"{where}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...', got "
                f"{len(values)} numbers"
            )
        if corners is not None or polygon is not None:
            points = corners if corners is not None else polygon
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            x_min, x_max, y_min, y_max = min(xs), max(xs), min(ys), max(ys)
        else:
            cx, cy, w, h = box
            if w < 0 or h < 0:
                raise ValueError(f"{where}: box width and height must be >= 0, got {w} and {h}")
            x_min, x_max = (cx - w / 2) * width, (cx + w / 2) * width
            y_min, y_max = (cy - h / 2) * height, (cy + h / 2) * height
        outside = [v for v in normalized if not 0.0 <= v <= 1.0]
        if outside:  # as Ultralytics refuses them: a line of other columns, not coordinates
            raise ValueError(f"{where}: coordinates must be normalized to 0..1, got {outside[:4]} "
                             f"in {line.strip()!r}")
        rows.append(
            {
                IMAGE_ID: image_id,
                "detection_id": f"{image_id}:{line_index}",
                "x_min": x_min,
                "y_min": y_min,
                "x_max": x_max,
                "y_max": y_max,
                "class_name": class_names[class_id],
                "class_id": class_id,
                "confidence": confidence,
                "mask": None,
                "keypoints": keypoints,
                "polygon": polygon,
                "xyxyxyxy": corners,
                "polygon_style": "roboflow",  # prediction polygons: Roboflow's rasterization
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Roboflow


def import_roboflow(
    predictions: str, images: str, output: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> ImportSummary:
    """Import Roboflow inference results (object detection, instance segmentation, keypoints).

    Args:
        predictions: URL of the results, one of:
            a ``.json`` file holding one result object or a list of them;
            a ``.jsonl`` / ``.ndjson`` file with one result object per line;
            a directory of ``.json`` files (searched recursively), each as above.
            A result is ``{"image": {"width", "height"}, "predictions": [...]}``, as the
            inference server and SDK return it, plus a field saying which image it is for.
        images: URL of the directory (or URL prefix) the images are found under.
        output: URL of the output directory.
        max_file_bytes: upper bound on the encoded image bytes per images file.

    Convention:
        - Which image a result is for, first that applies:
          ``image_path`` or ``file_name``: a path relative to ``images``;
          ``image_id``: the image under ``images`` whose relative path minus suffix equals it;
          the result is alone in its file: the image named like that file (``cat.json`` ->
          ``cat.jpg``). Otherwise it is an error; Roboflow's ``inference_id`` is a request id,
          not an image, and is not used.
        - ``image_id`` is the result's ``image_id`` if it has one, otherwise the image's path
          relative to ``images`` minus its suffix. Only images with a result are imported.
        - ``x, y`` are the box CENTRE in pixels: ``x_min = x - width / 2``,
          ``x_max = x + width / 2`` (y likewise with ``height``).
        - ``class`` -> ``class_name``, ``class_id``, ``confidence``, ``detection_id`` (or
          ``f"{image_id}:{k}"``, k the prediction's index, when absent); ``points`` ->
          ``polygon``; ``keypoints`` (``x, y, confidence``) -> ``keypoints``; ``rle`` (the
          RLE instance segmentation form: COCO RLE ``{size, counts}``) -> ``mask``, else null.
        - ``width``/``height`` come from the result's ``image``, or from the image header.
        - No oriented boxes: Roboflow's inference JSON has no oriented-box (OBB) form to read.
          Checked in roboflow/inference: ``inference/core/entities/responses/inference.py``
          (prediction entities: ``x, y, width, height``, ``points``, ``keypoints``, no corners),
          ``inference/models/utils.py`` (no OBB model type in ``ROBOFLOW_MODEL_TYPES``),
          ``inference/core/workflows/core_steps/common/serializers.py`` and
          ``serializers_tensor.py`` (workflows keep corners in ``data["xyxyxyxy"]`` internally
          but do not write them to the JSON); and in roboflow/supervision:
          ``supervision/detection/utils/internal.py`` ``process_roboflow_result`` (what
          ``Detections.from_inference`` reads: box, ``rle``/``rle_mask``, ``points``; it never
          sets ``xyxyxyxy``). Extra fields on a prediction are ignored, as before; oriented
          boxes come in as YOLO-OBB labels through ``import_yolo(..., obb=True)``.

    Returns:
        An :class:`ImportSummary`.
    """
    _check_max_file_bytes(max_file_bytes)
    images_store, images_root = _root(images)
    listed: dict[str, str] | None = None

    def image_by_key(key: str, where: str) -> str:
        nonlocal listed
        if listed is None:
            listed = _list_images(images_store, images_root, images)
        if key not in listed:
            raise ValueError(
                f"{where}: no image {key} with one of {', '.join(IMAGE_SUFFIXES)} under {images}"
            )
        return listed[key]

    plan: dict[str, tuple[str, tuple[int, int] | None]] = {}
    origin: dict[str, str] = {}
    detection_rows: list[dict[str, Any]] = []
    for result, where, alone_in, in_file in _roboflow_results(predictions):
        if not isinstance(result, dict):
            raise ValueError(f"{where}: expected a result object, got {type(result).__name__}")
        if result.get("image_path") or result.get("file_name"):
            name = str(result.get("image_path") or result.get("file_name"))
            path = _join(images_root, name, images_store)
        elif result.get("image_id") is not None:
            path = image_by_key(str(result["image_id"]), where)
        elif alone_in:
            path = image_by_key(posixpath.splitext(posixpath.basename(in_file))[0], where)
        else:
            raise ValueError(
                f"{where}: cannot tell which image this result is for; add an 'image_path' "
                "(relative to the images directory) or an 'image_id' field"
            )
        image_id = (
            str(result["image_id"])
            if result.get("image_id") is not None
            else _relative_stem(path, images_root)
        )
        if image_id in plan:
            raise ValueError(
                f"{where}: a second result for image {image_id} (the first is {origin[image_id]})"
            )
        origin[image_id] = where
        plan[image_id] = (path, _roboflow_size_hw(result, where))
        raw = result.get("predictions")
        if not isinstance(raw, list):
            raise ValueError(
                f"{where}: expected 'predictions' to be a list, got {type(raw).__name__}"
            )
        for index, prediction in enumerate(raw):
            detection_rows.append(
                _roboflow_detection(prediction, f"{where} predictions[{index}]", image_id, index)
            )
    _check_unique((row["detection_id"] for row in detection_rows), "detection_id", predictions)

    def image_rows() -> Iterator[tuple[str, bytes, str, int, int]]:
        for image_id, (path, size_hw) in plan.items():
            data = _read_file_bytes(images_store, path)
            if size_hw is None:
                size_hw = _decoded_size_hw(data, _shown(images_store, path))
            yield image_id, data, _relative_path(path, images_root), size_hw[1], size_hw[0]

    return _write_output(output, image_rows(), detection_rows, max_file_bytes)


def _roboflow_results(url: str) -> Iterator[tuple[Any, str, bool, str]]:
    """Yield (result, where, alone_in_its_file, file URL) for every result under ``url``."""
    store, root = _root(url)
    if _is_dir(store, root):
        files = [p for p in _find_files(store, root, url) if p.lower().endswith(".json")]
        if not files:
            raise ValueError(f"{url}: no .json files in this directory")
    else:
        files = [root]
    for path in files:
        file_url = _shown(store, path) if len(files) > 1 else url
        text = _read_file_text(store, path)
        if path.lower().endswith((".jsonl", ".ndjson")):
            lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
            for number, line in lines:
                try:
                    result = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{file_url}:{number}: malformed JSON line: {error.msg} "
                        f"(column {error.colno})"
                    ) from None
                yield result, f"{file_url}:{number}", len(lines) == 1, path
            continue
        document = _parse_json(text, file_url)
        if isinstance(document, list):
            for index, result in enumerate(document):
                yield result, f"{file_url}: [{index}]", len(document) == 1, path
        else:
            yield document, file_url, True, path


def _roboflow_size_hw(result: dict, where: str) -> tuple[int, int] | None:
    image = result.get("image")
    if not isinstance(image, dict) or image.get("width") is None or image.get("height") is None:
        return None
    return (
        _positive_integer(image["height"], f"{where} image.height"),
        _positive_integer(image["width"], f"{where} image.width"),
    )


def _roboflow_detection(prediction: Any, where: str, image_id: str, index: int) -> dict[str, Any]:
    if not isinstance(prediction, dict):
        raise ValueError(f"{where}: expected an object, got {type(prediction).__name__}")
    x, y, w, h = (
        _number(_required(prediction, key, where), f"{where} {key}")
        for key in ("x", "y", "width", "height")
    )
    if w < 0 or h < 0:
        raise ValueError(f"{where}: width and height must be >= 0, got {w} and {h}")
    polygon = None
    if prediction.get("points"):
        points = _objects(prediction["points"], f"{where} points")
        polygon = [_xy(p, f"{where} points[{i}]") for i, p in enumerate(points)]
    keypoints = None
    if prediction.get("keypoints"):
        keypoints = []
        for i, point in enumerate(_objects(prediction["keypoints"], f"{where} keypoints")):
            x_kp, y_kp = _xy(point, f"{where} keypoints[{i}]")
            score = point.get("confidence")
            if score is not None:
                score = _number(score, f"{where} keypoints[{i}] confidence")
            keypoints.append({"x": x_kp, "y": y_kp, "confidence": score})
    mask = None
    if prediction.get("rle") is not None:  # inference's RLE instance segmentation form
        mask = _roboflow_rle(prediction["rle"], f"{where} rle")
    class_id = prediction.get("class_id")
    confidence = prediction.get("confidence")
    detection_id = prediction.get("detection_id")
    return {
        IMAGE_ID: image_id,
        "detection_id": f"{image_id}:{index}" if detection_id is None else str(detection_id),
        "x_min": x - w / 2,
        "y_min": y - h / 2,
        "x_max": x + w / 2,
        "y_max": y + h / 2,
        "class_name": None if prediction.get("class") is None else str(prediction["class"]),
        "class_id": None if class_id is None else _integer(class_id, f"{where} class_id"),
        "confidence": None if confidence is None else _number(confidence, f"{where} confidence"),
        "mask": mask,
        "keypoints": keypoints,
        "polygon": polygon,
        "polygon_style": "roboflow",  # prediction polygons: Roboflow's rasterization
    }


def _roboflow_rle(value: Any, where: str) -> dict[str, Any]:
    """A prediction's ``rle`` (COCO RLE, compressed counts), checked run by run."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a COCO RLE object {{size, counts}}, got "
                         f"{type(value).__name__}")
    size = _required(value, "size", where)
    if not isinstance(size, list) or len(size) != 2:
        raise ValueError(f"{where}: expected size [height, width], got {size!r}")
    size = [_integer(v, f"{where} size") for v in size]
    counts = _required(value, "counts", where)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise ValueError(f"{where}: expected compressed RLE counts (a string), got "
                         f"{type(counts).__name__}")
    rle = {"size": size, "counts": counts}
    try:
        decode_rle(rle, (0, 0, 0, 0))  # checks every run, decodes no pixel
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return rle


# --------------------------------------------------------------------------------------------
# Output


#: The file an import creates first in its output, exclusively (``create_exclusive``), and
#: keeps: the job's readers skip ``_``-prefixed names.
IMPORT_CLAIM = "_import.json"


def _write_output(
    output: str,
    image_rows: Iterable[tuple[str, bytes, str, int, int]],
    detection_rows: list[dict[str, Any]],
    max_file_bytes: int,
) -> ImportSummary:
    """Write both tables; on any error remove the files written so far and re-raise."""
    store, root = _root(output)
    root = root.rstrip("/")
    images_dir, detections_dir = f"{root}/images", f"{root}/detections"
    for directory in (images_dir, detections_dir):
        if _holds_files(store, directory):
            raise ValueError(
                f"{_shown(store, root)} already holds files (in "
                f"{directory.rsplit('/', 1)[-1]}/); import into a new or empty output directory"
            )
    root_existed = file_info(store.sibling(root)).type != FileType.NotFound
    # One writer per output: of two imports started together, the second is refused here
    # (before, both wrote the same part names and each reported success over mixed tables).
    claim = f"{root}/{IMPORT_CLAIM}"
    if not create_exclusive(store.sibling(claim), json.dumps({"writer": uuid.uuid4().hex,
                                                               "tables": ["images",
                                                                          "detections"]}).encode()):
        raise ValueError(
            f"{_shown(store, claim)} exists: another import is writing this output, or one was "
            "killed while writing it; import into a new or empty output directory (or, if no "
            "import is running, delete the output's files)"
        )
    written: list[str] = []
    try:
        image_ids: set[str] = set()
        batch: list[tuple[str, bytes, str, int, int]] = []
        batch_bytes = 0
        for row in image_rows:
            if row[0] in image_ids:
                raise ValueError(f"duplicate image_id {row[0]!r} (file {row[2]})")
            image_ids.add(row[0])
            if batch and batch_bytes + len(row[1]) > max_file_bytes:
                written.append(f"{images_dir}/part-{len(written):05d}.parquet")
                _write_images_part(store, written[-1], batch)
                batch, batch_bytes = [], 0
            batch.append(row)
            batch_bytes += len(row[1])
        # Always at least one file, so that an empty dataset still has a readable schema.
        if batch or not written:
            written.append(f"{images_dir}/part-{len(written):05d}.parquet")
            _write_images_part(store, written[-1], batch)
        missing = {row[IMAGE_ID] for row in detection_rows} - image_ids
        if missing:
            raise ValueError(
                f"detections refer to images that were not imported: {sorted(missing)[:5]}"
            )
        detections = pa.Table.from_pylist(detection_rows, schema=IMPORTED_DETECTIONS_SCHEMA)
        detections_path = f"{detections_dir}/part-00000.parquet"
        written.append(detections_path)
        with atomic_output(store.sibling(detections_path)) as f:
            pq.write_table(detections, f)
    except BaseException:
        for path in [*written, claim]:  # the claim last: no other import enters meanwhile
            try:
                delete(store.sibling(path))
            except OSError:
                pass
        if store.is_local:  # and the folders it made, when they are empty
            for folder in (images_dir, detections_dir, *([] if root_existed else [root])):
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
        raise
    return ImportSummary(
        images=len(image_ids),
        detections=detections.num_rows,
        image_files=tuple(_url(store, p) for p in written[:-1]),
        detections_file=_url(store, detections_path),
    )


def _write_images_part(
    store: Location, path: str, rows: list[tuple[str, bytes, str, int, int]]
) -> None:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in IMPORTED_IMAGES_SCHEMA]
    table = pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, IMPORTED_IMAGES_SCHEMA, strict=True)],
        schema=IMPORTED_IMAGES_SCHEMA,
    )
    with atomic_output(store.sibling(path)) as f:
        # Encoded images do not compress; skipping it saves CPU on write and on every read.
        compression = {field.name: "SNAPPY" for field in IMPORTED_IMAGES_SCHEMA}
        pq.write_table(table, f, compression={**compression, "image": "NONE"},
                       row_group_size=IMAGES_PER_ROW_GROUP)


# --------------------------------------------------------------------------------------------
# Reading and validation helpers


def _check_max_file_bytes(max_file_bytes: int) -> None:
    # Arrow's binary type has 32-bit offsets: one column chunk cannot exceed 2 GiB.
    if (
        isinstance(max_file_bytes, bool)
        or not isinstance(max_file_bytes, int)
        or not 0 < max_file_bytes < 2**31
    ):
        raise ValueError(
            f"max_file_bytes must be a positive int below 2 GiB (2**31), got {max_file_bytes!r}"
        )


def _join(root: str, relative: str, store: Location | None = None) -> str:
    """``relative`` (a file name from an annotation file) inside the folder ``root``: names are
    data, so one that climbs out (a ``..`` segment, also percent-encoded or behind an encoded
    separator, which an HTTP client or server may decode) or holds a NUL is refused, never
    read; on HTTP also ``;``, ``?`` and ``#``, which servers read as more than a name. ``.`` and
    empty segments are dropped, so ``./a.png`` and ``a.png`` name one file (and one image id).
    With ``store``, a local name must not lead out of ``root`` through a symlink either."""
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    web = root.startswith(("http://", "https://")) or (
        store is not None and store.url.startswith(("http://", "https://")))
    if "\x00" in relative or dot_segments("/".join(parts)) or (
            web and any(ch in relative for ch in ";?#")):
        raise ValueError(f"image file name {relative!r} leaves the images folder (a '..' "
                         f"segment, plain or encoded) or holds a NUL (or on HTTP ';', '?' or "
                         f"'#'): names must stay inside --images")
    path = "/".join([root.rstrip("/"), *parts])
    if store is not None:
        _check_no_link_out(store, root, path)
    return path


def _check_no_link_out(store: Location, root: str, path: str) -> None:
    """On a local disk, refuse a file that a symlink leads out of ``root`` to, or that is
    reached through a symlinked folder (which can also loop: ``images/loop -> ..``)."""
    if not store.is_local:
        return
    real_root = os.path.realpath(root)
    folder = os.path.dirname(path)
    expected = os.path.join(real_root, os.path.relpath(folder, root))
    real = os.path.realpath(path)
    if os.path.realpath(folder) != os.path.normpath(expected) or not (
            real.startswith(real_root.rstrip("/") + "/")):
        raise ValueError(f"{path}: reached through a symlink that leads out of the images "
                         f"folder {root} (or through a symlinked folder); copy the file in, or "
                         f"remove the link")


def _relative_path(path: str, root: str) -> str:
    root = root.rstrip("/")
    return path[len(root) + 1 :] if path.startswith(root + "/") else posixpath.basename(path)


def _relative_stem(path: str, root: str) -> str:
    return posixpath.splitext(_relative_path(path, root))[0]


def _root(url: str) -> tuple[Location, str]:
    """The location of ``url`` and its path: the store that the other paths of one input are
    on (``Location.sibling`` gives each its own location)."""
    try:
        location = resolve(url)
    except StorageError as error:
        raise ValueError(str(error)) from None
    return location, location.path


def _is_dir(store: Location, path: str) -> bool:
    return file_info(store.sibling(path)).type == FileType.Directory


def _holds_files(store: Location, directory: str) -> bool:
    location = store.sibling(directory)
    info = file_info(location)
    return info.type == FileType.File or (info.type == FileType.Directory
                                          and bool(list_tree(location)))


def _url(store: Location, path: str) -> str:
    """The URL of a written file: ``file://`` and the absolute path on a local disk."""
    location = store.sibling(path)
    return f"file://{location.path}" if location.is_local else location.url


def _find_files(store: Location, root: str, url: str) -> list[str]:
    if not _is_dir(store, root):
        raise ValueError(f"{url}: expected a directory, found none")
    base = root.rstrip("/")
    if store.is_local:
        # pyarrow follows symlinked folders (a loop never ends), and names under a linked
        # folder or links to outside files would import what the operator did not name
        files = []
        for folder, folders, names in os.walk(base):
            for name in folders:
                if os.path.islink(os.path.join(folder, name)):
                    _check_no_link_out(store, root, os.path.join(folder, name, "_"))
            files += [os.path.join(folder, name) for name in names]
        for path in files:
            _check_no_link_out(store, root, path)
        return sorted(files)
    return [f"{base}/{relative}" for relative in list_tree(store.sibling(base))]


def _list_images(store: Location, root: str, url: str) -> dict[str, str]:
    """Image files under ``root`` by relative path minus suffix, sorted."""
    images: dict[str, str] = {}
    for path in _find_files(store, root, url):
        if not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        key = _relative_stem(path, root)
        if key in images:
            raise ValueError(
                f"{url}: two images for {key}: {_relative_path(images[key], root)} and "
                f"{_relative_path(path, root)}"
            )
        images[key] = path
    return images


def _shown(store: Location, path: str) -> str:
    """``path`` as a user would write it: a plain local path, or a URL with its protocol."""
    location = store.sibling(path)
    return location.path if location.is_local else location.url


def _read_file_bytes(store: Location, path: str) -> bytes:
    try:
        return read_bytes(store.sibling(path))
    except MissingObjectError:
        raise ValueError(f"{_shown(store, path)}: file not found") from None


def _read_file_text(store: Location, path: str) -> str:
    data = _read_file_bytes(store, path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{_shown(store, path)}: not UTF-8 text ({error})") from None


def _read_text(url: str) -> str:
    store, path = _root(url)
    return _read_file_text(store, path)


def _parse_json(text: str, url: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{url}:{error.lineno}: malformed JSON: {error.msg} (column {error.colno})"
        ) from None
    except RecursionError:
        raise ValueError(f"{url}: malformed JSON: nested too deeply") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise ValueError(f"{url}: malformed JSON: {error}") from None


def _read_json(url: str) -> Any:
    return _parse_json(_read_text(url), url)


def _decoded_size_hw(data: bytes, url: str) -> tuple[int, int]:
    # The header alone: no decode, and the frame the crop job decodes (EXIF orientation applied).
    try:
        width, height = read_image_size(data)
    except ImageDecodeError as error:
        raise ValueError(f"{url}: cannot read the image size ({error})") from None
    return height, width


def _check_unique(ids: Iterable[str], what: str, url: str) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise ValueError(f"{url}: duplicate {what} {value!r}")
        seen.add(value)


def _required(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise ValueError(f"{where}: missing required field '{key}'")
    return mapping[key]


def _objects(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{where}: expected a list of objects, got {type(value).__name__}")
    return value


def _xy(point: dict, where: str) -> list[float]:
    return [_number(_required(point, axis, where), f"{where} {axis}") for axis in ("x", "y")]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str, count: int | None = None) -> list[float]:
    if not isinstance(value, list) or (count is not None and len(value) != count):
        expected = f"a list of {count} numbers" if count is not None else "a list of numbers"
        raise ValueError(f"{where}: expected {expected}, got {value!r}")
    return [_number(v, where) for v in value]


def _integer(value: Any, where: str) -> int:
    """An integer (or an integral float or string) within int64, the tables' integer type."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            pass
    if number is None or not -(2**63) <= number < 2**63:
        raise ValueError(f"{where}: expected an integer within int64, got {value!r}")
    return number


def _positive_integer(value: Any, where: str) -> int:
    number = _integer(value, where)
    if not 0 < number < 2**31:  # image sides: OpenCV and the tables hold them in int32
        raise ValueError(f"{where}: expected a positive integer below 2**31, got {value!r}")
    return number


# --------------------------------------------------------------------------------------------
# The command: ``python -m jobs import FORMAT ...``

EXAMPLE = """examples:
  python -m jobs import coco --annotations coco/annotations/instances_val2017.json \\
      --images coco/val2017/ --output s3://bucket/dataset/
  python -m jobs import yolo --labels data/labels/ --images data/images/ --names data/data.yaml \\
      --output dataset/
  python -m jobs import yolo --obb --labels dota/labels/ --images dota/images/ \\
      --names dota/data.yaml --output dataset/
  python -m jobs import roboflow --predictions predictions.jsonl --images photos/ --output dataset/
then crop:
  python -m jobs run --images dataset/images/ --detections dataset/detections/ ..."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``import`` command's arguments: one sub-command per annotation format."""
    parser.description = (
        "Turn COCO, YOLO or Roboflow annotations into the job's images and detections tables "
        "(OUTPUT/images/*.parquet and OUTPUT/detections/part-00000.parquet)."
    )
    parser.epilog = EXAMPLE
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    coco = formats.add_parser("coco", help="a COCO annotation JSON and its image folder")
    coco.add_argument("--annotations", required=True, help="the COCO JSON (path or URL)")
    yolo = formats.add_parser("yolo", help="YOLO label .txt files beside an image folder")
    yolo.add_argument("--labels", required=True, help="folder of label .txt files")
    yolo.add_argument("--names", required=True, help="class names: a text file or a data.yaml")
    yolo.add_argument(
        "--obb",
        action="store_true",
        help="the labels are Ultralytics oriented boxes (YOLO-OBB): "
        "class x1 y1 x2 y2 x3 y3 x4 y4, normalized; they become xyxyxyxy",
    )
    roboflow = formats.add_parser(
        "roboflow",
        help="Roboflow inference results (JSON or JSONL): boxes, polygons, keypoints "
        "(Roboflow's JSON has no oriented-box form to import)",
    )
    roboflow.add_argument(
        "--predictions", required=True, help="a .json or .jsonl file, or a folder of .json files"
    )
    for sub in (coco, yolo, roboflow):
        sub.add_argument("--images", required=True, help="folder (or URL prefix) of the images")
        sub.add_argument("--output", required=True, help="output folder (path or URL)")
        sub.add_argument(
            "--max-file-mb",
            type=int,
            default=DEFAULT_MAX_FILE_BYTES // (1024 * 1024),
            help="encoded image bytes per images Parquet file, in MiB (default: %(default)s)",
        )


def command(args: argparse.Namespace) -> int:
    """Run ``python -m jobs import``; returns the exit code (2 for invalid input)."""
    max_file_bytes = args.max_file_mb * 1024 * 1024
    if not 0 < max_file_bytes < 2**31:
        print(f"error: --max-file-mb must be within 1..2047 (Arrow's 2 GiB per column chunk), "
              f"got {args.max_file_mb}", file=sys.stderr)
        return 2
    try:
        if args.format == "coco":
            summary = import_coco(
                args.annotations, args.images, args.output, max_file_bytes=max_file_bytes
            )
        elif args.format == "yolo":
            summary = import_yolo(
                args.labels,
                args.images,
                args.names,
                args.output,
                max_file_bytes=max_file_bytes,
                obb=args.obb,
            )
        else:
            summary = import_roboflow(
                args.predictions, args.images, args.output, max_file_bytes=max_file_bytes
            )
    except (ValueError, StorageError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 2
    except (TypeError, OverflowError) as error:  # a value of a kind no check above foresaw
        print(f"error: malformed input ({type(error).__name__}: {redact(str(error))}); "
              f"nothing was imported", file=sys.stderr)
        return 2
    print(
        f"images     {summary.images} in {len(summary.image_files)} files\n"
        f"detections {summary.detections}\n"
        f"output     {redact(args.output)}"
    )
    return 0
