"""COCO, YOLO and Roboflow importers, on files laid out as each format really lays them out."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from jobs import importers
from jobs.importers import (
    IMPORTED_IMAGES_SCHEMA,
    ImportSummary,
    import_coco,
    import_roboflow,
    import_yolo,
)
from jobs.schema import IMAGES_SCHEMA, IMPORTED_DETECTIONS_SCHEMA

BOX_KEYS = ("x_min", "y_min", "x_max", "y_max")


def encode_image(height: int, width: int, suffix: str = ".jpg", seed: int = 0) -> bytes:
    """A small real image, encoded with OpenCV."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(suffix, pixels)
    assert ok
    return encoded.tobytes()


def write_bytes(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def read_output(output: Path) -> tuple[list[dict], list[dict]]:
    """(image rows, detection rows), after checking both tables' schemas."""
    images = pq.read_table(output / "images")
    detections = pq.read_table(output / "detections" / "part-00000.parquet")
    assert images.schema.equals(IMPORTED_IMAGES_SCHEMA)
    assert detections.schema.equals(IMPORTED_DETECTIONS_SCHEMA)
    return images.to_pylist(), detections.to_pylist()


def box(row: dict) -> list[float]:
    return [row[k] for k in BOX_KEYS]


def test_public_names():
    assert set(importers.__all__) >= {"import_coco", "import_yolo", "import_roboflow"}
    for name in importers.__all__:
        assert hasattr(importers, name)


def test_images_schema_extends_the_job_schema():
    assert IMPORTED_IMAGES_SCHEMA.names[: len(IMAGES_SCHEMA)] == IMAGES_SCHEMA.names
    assert IMPORTED_IMAGES_SCHEMA.names[len(IMAGES_SCHEMA) :] == ["file_name", "width", "height"]


# --------------------------------------------------------------------------------------------
# COCO


def coco_dataset(root: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    """A COCO layout: ``annotations/instances.json`` and ``images/*.jpg``."""
    if images is None:
        images = [{"id": 1, "file_name": "street.jpg", "width": 60, "height": 40}]
    for image in images:
        height, width = image.get("height", 40), image.get("width", 60)
        write_bytes(root / "images" / image["file_name"], encode_image(height, width))
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    return write_bytes(root / "annotations" / "instances.json", json.dumps(document, indent=1))


def test_convention_coco_bbox_is_top_left_xywh(tmp_path):
    annotations = coco_dataset(
        tmp_path, [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [10.5, 5, 20, 8.25]}]
    )

    summary = import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    images, detections = read_output(tmp_path / "out")
    assert summary == ImportSummary(
        images=1,
        detections=1,
        image_files=(f"file://{tmp_path}/out/images/part-00000.parquet",),
        detections_file=f"file://{tmp_path}/out/detections/part-00000.parquet",
    )
    assert detections == [
        {
            "image_id": "1",
            "detection_id": "7",
            "x_min": 10.5,
            "y_min": 5.0,
            "x_max": 30.5,
            "y_max": 13.25,
            "class_name": "car",
            "class_id": 3,
            "confidence": None,
            "mask": None,
            "keypoints": None,
            "polygon": None,
            "xyxyxyxy": None,
            "iscrowd": False,
            "polygon_style": "coco",
        }
    ]
    assert images == [
        {
            "image_id": "1",
            "image": (tmp_path / "images" / "street.jpg").read_bytes(),
            "file_name": "street.jpg",
            "width": 60,
            "height": 40,
        }
    ]


def test_coco_polygon_fills_mask_and_polygon(tmp_path):
    square = [2, 2, 8, 2, 8, 6, 2, 6]
    annotations = coco_dataset(
        tmp_path,
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [2, 2, 6, 4],
                "segmentation": [square],
            }
        ],
    )

    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    (detection,) = read_output(tmp_path / "out")[1]
    expected = mask_utils.frPyObjects([square], 40, 60)[0]
    assert detection["mask"] == {"size": [40, 60], "counts": expected["counts"].decode()}
    assert detection["polygon"] == [[2, 2], [8, 2], [8, 6], [2, 6]]


# pycocotools' decode trips NumPy 2's copy-keyword deprecation; harmless here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_multi_polygon_merges_all_parts_and_keeps_the_largest(tmp_path):
    small = [0, 0, 3, 0, 3, 3, 0, 3]
    large = [10, 10, 30, 10, 30, 30, 10, 30]
    sliver = [40, 40, 41, 41]  # two points: no area, dropped
    annotations = coco_dataset(
        tmp_path,
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 30, 30],
                "segmentation": [small, large, sliver],
            }
        ],
    )

    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    (detection,) = read_output(tmp_path / "out")[1]
    mask = detection["mask"]
    decoded = mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode()})
    separate = mask_utils.decode(mask_utils.frPyObjects([small, large], 40, 60))
    np.testing.assert_array_equal(decoded, separate.max(axis=2))
    assert detection["polygon"] == [[10, 10], [30, 10], [30, 30], [10, 30]]


def test_coco_rle_uncompressed_is_compressed_and_compressed_is_kept(tmp_path):
    bitmap = np.zeros((40, 60), dtype=np.uint8, order="F")
    bitmap[5:9, 3:7] = 1
    compressed = mask_utils.encode(bitmap)["counts"].decode()
    column_major = bitmap.flatten(order="F")
    # Uncompressed RLE: alternating run lengths, column-major, starting with a run of zeros.
    runs = [len(list(group)) for _, group in itertools.groupby(column_major)]
    if column_major[0]:
        runs.insert(0, 0)
    annotations = coco_dataset(
        tmp_path,
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "bbox": [3, 5, 4, 4],
                "segmentation": {"size": [40, 60], "counts": runs},
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [3, 5, 4, 4],
                "segmentation": {"size": [40, 60], "counts": compressed},
            },
        ],
    )

    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    detections = read_output(tmp_path / "out")[1]
    assert [d["mask"] for d in detections] == [{"size": [40, 60], "counts": compressed}] * 2
    assert [d["polygon"] for d in detections] == [None, None]


def test_coco_keypoints_keep_visibility_as_confidence(tmp_path):
    annotations = coco_dataset(
        tmp_path,
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "keypoints": [1, 2, 2, 0, 0, 0, 5.5, 6, 1],
                "num_keypoints": 2,
            }
        ],
    )

    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    (detection,) = read_output(tmp_path / "out")[1]
    assert detection["keypoints"] == [
        {"x": 1.0, "y": 2.0, "confidence": 2.0},
        {"x": 0.0, "y": 0.0, "confidence": 0.0},
        {"x": 5.5, "y": 6.0, "confidence": 1.0},
    ]


def test_coco_results_scores_and_missing_ids(tmp_path):
    images = [
        {"id": "a", "file_name": "a.jpg", "width": 60, "height": 40},
        {"id": "b", "file_name": "b.jpg", "width": 60, "height": 40},
    ]
    annotations = coco_dataset(
        tmp_path,
        [
            {"image_id": "b", "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.75},
            {"image_id": "a", "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.5},
            {"image_id": "b", "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.25},
        ],
        images,
    )

    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    detections = read_output(tmp_path / "out")[1]
    # Ordered by image, then by their order in the file.
    assert [(d["detection_id"], d["confidence"]) for d in detections] == [
        ("a:0", 0.5),
        ("b:0", 0.75),
        ("b:1", 0.25),
    ]


def test_coco_without_image_size_decodes_the_image(tmp_path):
    write_bytes(tmp_path / "images" / "sub" / "x.png", encode_image(24, 32, ".png"))
    bitmap = np.zeros((24, 32), dtype=np.uint8, order="F")
    bitmap[5:9, 3:7] = 1
    rle = {"size": [24, 32], "counts": mask_utils.encode(bitmap)["counts"].decode()}
    document = {
        "images": [{"id": 5, "file_name": "sub/x.png"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]},
            {"id": 2, "image_id": 5, "category_id": 1, "segmentation": rle},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    annotations = write_bytes(tmp_path / "a.json", json.dumps(document))

    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    images, detections = read_output(tmp_path / "out")
    assert (images[0]["file_name"], images[0]["width"], images[0]["height"]) == (
        "sub/x.png",
        32,
        24,
    )
    assert detections[0]["mask"]["size"] == [24, 32]
    # No bbox: the box is the polygon's extent (exact, where the mask's is whole pixels).
    assert box(detections[0]) == [0.0, 0.0, 4.0, 4.0]
    # ...and for an RLE, the mask's box.
    assert box(detections[1]) == [3.0, 5.0, 7.0, 9.0]


def test_coco_empty_dataset_writes_empty_tables(tmp_path):
    annotations = coco_dataset(tmp_path, [], images=[])

    summary = import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    assert (summary.images, summary.detections, len(summary.image_files)) == (0, 0, 1)
    assert read_output(tmp_path / "out") == ([], [])


def test_images_are_split_into_files_of_bounded_size(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "width": 30, "height": 20} for i in range(5)]
    annotations = coco_dataset(tmp_path, [], images)
    sizes = [(tmp_path / "images" / f"{i}.png").stat().st_size for i in range(5)]

    summary = import_coco(
        str(annotations),
        str(tmp_path / "images"),
        str(tmp_path / "out"),
        max_file_bytes=2 * max(sizes),
    )

    assert len(summary.image_files) == 3
    parts = [pq.read_table(url.removeprefix("file://")) for url in summary.image_files]
    assert [p.num_rows for p in parts] == [2, 2, 1]
    assert all(sum(len(b) for b in p["image"].to_pylist()) <= 2 * max(sizes) for p in parts)
    assert [r["image_id"] for r in read_output(tmp_path / "out")[0]] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        # an unknown category names the file, the record and the known ids
        (
            {"id": 9, "image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1]},
            r"instances\.json: annotations\[0\] \(id 9\): category_id 99 is not in 'categories' "
            r"\(known ids: \[1, 3\]\)",
        ),
        # an annotation for an image the file does not list
        (
            {"id": 9, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]},
            r"annotations\[0\] \(id 9\): image_id 2 is not in 'images'",
        ),
        # a bbox that is not four numbers
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]},
            r"bbox: expected a list of 4 numbers, got \[0, 0, 1\]",
        ),
        # a negative size
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1]},
            r"bbox width and height must be >= 0, got -1.0 and 1.0",
        ),
        # neither a bbox nor a segmentation
        ({"id": 9, "image_id": 1, "category_id": 1}, r"expected a 'bbox'"),
        # a polygon with an odd number of coordinates
        (
            {"id": 9, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 1, 1, 2]]},
            r"segmentation\[0\] has an odd number of coordinates \(5\)",
        ),
        # an RLE for another image size
        (
            {
                "id": 9,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": [10, 10], "counts": [100]},
            },
            r"RLE size \[10, 10\] does not match the image's \[height, width\] \[40, 60\]",
        ),
        # uncompressed RLE counts that do not cover the image
        (
            {
                "id": 9,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": [40, 60], "counts": [5, 5]},
            },
            r"summing to height \* width = 2400, got a sum of 10",
        ),
        # keypoints that are not triples
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "keypoints": [1, 2]},
            r"expected keypoints as \[x, y, v\] triples, got 2 numbers",
        ),
        # compressed RLE counts that are not COCO's alphabet, or do not cover the image
        (
            {"id": 9, "image_id": 1, "category_id": 1,
             "segmentation": {"size": [40, 60], "counts": "!!!!garbage"}},
            r"segmentation: compressed RLE counts must use characters",
        ),
        (
            {"id": 9, "image_id": 1, "category_id": 1,
             "segmentation": {"size": [40, 60], "counts": "PPYo0"}},
            r"segmentation: RLE run lengths must sum to h \* w",
        ),
        # an RLE size that is not two integers
        (
            {"id": 9, "image_id": 1, "category_id": 1,
             "segmentation": {"size": [None, 60], "counts": "0"}},
            r"segmentation size: expected an integer within int64, got None",
        ),
        (
            {"id": 9, "image_id": 1, "category_id": 1,
             "segmentation": {"size": [40.7, 60.2], "counts": "0"}},
            r"segmentation size: expected an integer within int64, got 40\.7",
        ),
        # a box that ends beyond the float range, a crowd flag that is not 0 or 1
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1e308, 0, 1e308, 1]},
            r"ends beyond the float range",
        ),
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": "no"},
            r"iscrowd must be 0 or 1, got 'no'",
        ),
        # a category id beyond int64
        (
            {"id": 9, "image_id": 1, "category_id": 2**70, "bbox": [0, 0, 1, 1]},
            r"category_id: expected an integer within int64",
        ),
        # a vertex far outside: pycocotools took GBs at 1e8 and gave an empty mask at 5e8
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 10],
             "segmentation": [[0, 0, 5e8, 0, 0, 10]]},
            r"segmentation\[0\] has a vertex more than 240 pixels outside the 60x40 image "
            r"\(500000000\.0\); a polygon must lie near its image",
        ),
        (
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 10],
             "segmentation": [[0, 0, 10, 0, 0, -281]]},
            r"more than 240 pixels outside the 60x40 image \(-281\.0\)",
        ),
    ],
)
def test_coco_invalid_annotations(tmp_path, annotation, message):
    annotations = coco_dataset(tmp_path, [annotation])

    with pytest.raises(ValueError, match=message):
        import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_coco_polygon_within_reach_outside_the_image_is_rasterized_like_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils

    polygon = [-240, -100, 300, 0, 0, 280]  # every vertex within 4 x 60 pixels of the image
    annotations = coco_dataset(tmp_path, [{"id": 9, "image_id": 1, "category_id": 1,
                                           "bbox": [0, 0, 60, 40], "segmentation": [polygon]}])
    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))
    (row,) = read_output(tmp_path / "out")[1]
    expected = mask_utils.merge(mask_utils.frPyObjects([polygon], 40, 60))
    assert row["mask"]["counts"] == expected["counts"].decode()


def test_coco_duplicate_annotation_ids(tmp_path):
    annotation = {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}
    annotations = coco_dataset(tmp_path, [annotation, annotation])

    with pytest.raises(ValueError, match=r"instances\.json: duplicate detection_id '4'"):
        import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))


def test_coco_malformed_json_names_the_line(tmp_path):
    path = write_bytes(tmp_path / "bad.json", '{\n "images": [],\n "annotations": [,]\n}')

    with pytest.raises(ValueError, match=r"bad\.json:3: malformed JSON"):
        import_coco(str(path), str(tmp_path), str(tmp_path / "out"))


def test_coco_not_an_object(tmp_path):
    path = write_bytes(tmp_path / "string.json", '"images"')

    with pytest.raises(
        ValueError, match=r"string\.json: expected a COCO JSON object .* got a JSON str"
    ):
        import_coco(str(path), str(tmp_path), str(tmp_path / "out"))


def test_coco_results_list_says_what_to_do(tmp_path):
    results = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9}]
    path = write_bytes(tmp_path / "results.json", json.dumps(results))

    with pytest.raises(ValueError, match=r"^.*results\.json: a JSON list, like a COCO results "
                                         r"file, names no image files or categories: put its "
                                         r"detections in the 'annotations'"):
        import_coco(str(path), str(tmp_path), str(tmp_path / "out"))


def test_missing_annotation_file(tmp_path):
    with pytest.raises(ValueError, match=r"nothere\.json: file not found"):
        import_coco(str(tmp_path / "nothere.json"), str(tmp_path), str(tmp_path / "out"))


def test_missing_image_file_removes_partial_output(tmp_path):
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 60, "height": 40},
        {"id": 2, "file_name": "b.jpg", "width": 60, "height": 40},
    ]
    annotations = coco_dataset(tmp_path, [], images)
    (tmp_path / "images" / "b.jpg").unlink()

    with pytest.raises(ValueError, match=r"images/b\.jpg: file not found"):
        import_coco(
            str(annotations), str(tmp_path / "images"), str(tmp_path / "out"), max_file_bytes=1
        )
    # a.jpg's part file had been written before b.jpg failed.
    assert list((tmp_path / "out").rglob("*.parquet")) == []


def test_output_that_already_holds_tables_is_refused(tmp_path):
    annotations = coco_dataset(tmp_path, [])
    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))

    with pytest.raises(ValueError,
                       match=r"out already holds files \(in images/\); import into a new"):
        import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))


@pytest.mark.parametrize("max_file_bytes", [0, -1, 2**31, 1.5, True])
def test_max_file_bytes_must_fit_arrow_binary(tmp_path, max_file_bytes):
    with pytest.raises(ValueError, match=r"max_file_bytes must be a positive int below 2 GiB"):
        import_coco("a.json", "images", str(tmp_path / "out"), max_file_bytes=max_file_bytes)


# --------------------------------------------------------------------------------------------
# YOLO


def yolo_dataset(root: Path, labels: dict[str, str], images: dict[str, tuple[int, int]]) -> Path:
    """An Ultralytics layout: ``images/NAME.jpg``, ``labels/NAME.txt`` and ``data.yaml``."""
    for name, (height, width) in images.items():
        write_bytes(root / "images" / name, encode_image(height, width))
    for name, text in labels.items():
        write_bytes(root / "labels" / name, text)
    return write_bytes(root / "data.yaml", "path: .\ntrain: images\nnames:\n  - person\n  - car\n")


def run_yolo(root: Path, names: Path) -> tuple[list[dict], list[dict]]:
    import_yolo(str(root / "labels"), str(root / "images"), str(names), str(root / "out"))
    return read_output(root / "out")


def test_convention_yolo_box_is_normalized_centre_and_size(tmp_path):
    names = yolo_dataset(
        tmp_path,
        {"street.txt": "1 0.5 0.25 0.25 0.5\n0 0.125 0.75 0.25 0.5\n"},
        {"street.jpg": (40, 80)},
    )

    images, detections = run_yolo(tmp_path, names)

    assert [box(d) for d in detections] == [[30.0, 0.0, 50.0, 20.0], [0.0, 20.0, 20.0, 40.0]]
    assert [(d["detection_id"], d["class_name"], d["class_id"]) for d in detections] == [
        ("street:0", "car", 1),
        ("street:1", "person", 0),
    ]
    assert [d["confidence"] for d in detections] == [None, None]
    assert images == [
        {
            "image_id": "street",
            "image": (tmp_path / "images" / "street.jpg").read_bytes(),
            "file_name": "street.jpg",
            "width": 80,
            "height": 40,
        }
    ]


def test_yolo_segmentation_line_gives_polygon_and_its_extent(tmp_path):
    names = yolo_dataset(
        tmp_path,
        {"a.txt": "0 0.25 0.25 0.75 0.25 0.5 0.75\n1 0.25 0.25 0.75 0.25 0.5 0.75 0.5\n"},
        {"a.jpg": (40, 80)},
    )

    detections = run_yolo(tmp_path, names)[1]

    assert [d["polygon"] for d in detections] == [[[20.0, 10.0], [60.0, 10.0], [40.0, 30.0]]] * 2
    assert [box(d) for d in detections] == [[20.0, 10.0, 60.0, 30.0]] * 2
    assert [d["confidence"] for d in detections] == [None, 0.5]


def test_yolo_trailing_confidence_and_blank_lines(tmp_path):
    names = yolo_dataset(
        tmp_path, {"a.txt": "0 0.5 0.5 0.5 0.5 0.875\n\n1 0.5 0.5 1 1\n"}, {"a.jpg": (8, 8)}
    )

    detections = run_yolo(tmp_path, names)[1]

    # Ids count every line, blank ones too, so they point at the source line.
    assert [d["detection_id"] for d in detections] == ["a:0", "a:2"]
    assert [d["confidence"] for d in detections] == [0.875, None]
    assert [box(d) for d in detections] == [[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 8.0, 8.0]]


def test_convention_yolo_obb_corners_become_xyxyxyxy_in_pixels(tmp_path):
    names = yolo_dataset(
        tmp_path,
        # a diamond and a rotated box with a trailing confidence, on an 80 x 40 (W x H) image
        {"a.txt": "1 0.5 0.25 0.75 0.5 0.5 0.75 0.25 0.5\n"
                  "0 0.1 0.1 0.3 0.2 0.2 0.4 0.0 0.3 0.625\n"},
        {"a.jpg": (40, 80)},
    )
    import_yolo(str(tmp_path / "labels"), str(tmp_path / "images"), str(names),
                str(tmp_path / "out"), obb=True)

    detections = read_output(tmp_path / "out")[1]

    assert [d["xyxyxyxy"] for d in detections] == [
        [[40.0, 10.0], [60.0, 20.0], [40.0, 30.0], [20.0, 20.0]],
        [[8.0, 4.0], [24.0, 8.0], [16.0, 16.0], [0.0, 12.0]],
    ]
    assert [box(d) for d in detections] == [[20.0, 10.0, 60.0, 30.0], [0.0, 4.0, 24.0, 16.0]]
    assert [d["polygon"] for d in detections] == [None, None]
    assert [d["confidence"] for d in detections] == [None, 0.625]
    assert [d["class_name"] for d in detections] == ["car", "person"]


def test_yolo_without_obb_reads_eight_numbers_as_a_polygon_and_leaves_xyxyxyxy_null(tmp_path):
    names = yolo_dataset(
        tmp_path, {"a.txt": "1 0.5 0.25 0.75 0.5 0.5 0.75 0.25 0.5\n"}, {"a.jpg": (40, 80)}
    )

    (detection,) = run_yolo(tmp_path, names)[1]

    assert detection["xyxyxyxy"] is None
    assert detection["polygon"] == [[40.0, 10.0], [60.0, 20.0], [40.0, 30.0], [20.0, 20.0]]


def test_yolo_obb_then_dynamic_crop_puts_the_corners_in_the_crop_frame(tmp_path):
    from cropcore import Detections, dynamic_crop

    names = yolo_dataset(
        tmp_path, {"a.txt": "1 0.5 0.25 0.75 0.5 0.5 0.75 0.25 0.5\n"}, {"a.jpg": (40, 80)}
    )
    import_yolo(str(tmp_path / "labels"), str(tmp_path / "images"), str(names),
                str(tmp_path / "out"), obb=True)
    (row,) = read_output(tmp_path / "out")[1]
    detections = Detections(xyxy=[box(row)], detection_id=[row["detection_id"]],
                            data={"xyxyxyxy": [row["xyxyxyxy"]]})

    (crop,) = dynamic_crop(np.zeros((40, 80, 3), np.uint8), detections)

    assert crop.window == (20, 10, 60, 30)
    np.testing.assert_array_equal(crop.detections.xyxyxyxy,
                                  [[[20, 0], [40, 10], [20, 20], [0, 10]]])


def test_yolo_obb_import_then_the_crop_job_writes_corners_in_the_crop_frame(tmp_path):
    # End to end without Ray: the importer's tables, planned and cropped by the job's own UDF.
    from jobs import steps
    from jobs.pipeline import JobConfig, prepare
    from jobs.pipeline import crop_in_process as pair_and_crop

    names = yolo_dataset(
        tmp_path,
        {"a.txt": "1 0.5 0.25 0.75 0.5 0.5 0.75 0.25 0.5\n"
                  "0 0.0 0.5 0.25 0.5 0.25 1.0 0.0 1.0\n"},
        {"a.jpg": (40, 80)},
    )
    out = tmp_path / "out"
    import_yolo(str(tmp_path / "labels"), str(tmp_path / "images"), str(names), str(out),
                obb=True)
    config = JobConfig(images=str(out / "images"), detections=str(out / "detections"),
                       output=str(tmp_path / "crops"),
                       step=steps.parse_step({"type": "roboflow_core/dynamic_crop@v1"}))
    prepared = prepare(config)
    pair_and_crop(prepared)
    crops = pq.read_table(tmp_path / "crops" / "crops").sort_by("detection_id").to_pylist()

    assert [c["detection_id"] for c in crops] == ["a:0", "a:1"]
    # a:0: window (20, 10, 60, 30); its corners move by (-20, -10)
    assert (crops[0]["width"], crops[0]["height"]) == (40, 20)
    assert crops[0]["xyxyxyxy"] == [[20.0, 0.0], [40.0, 10.0], [20.0, 20.0], [0.0, 10.0]]
    # a:1: window (0, 20, 20, 40); corners move by (0, -20)
    assert crops[1]["xyxyxyxy"] == [[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]]
    assert [c["polygon"] for c in crops] == [None, None]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("0 0.5 0.5 0.2 0.2\n", r"expected an oriented box 'class x1 y1 x2 y2 x3 y3 x4 y4', "
                                r"optionally a confidence; got 5 numbers"),
        ("0 0.1 0.1 0.3 0.2 0.2 0.4 0.0 0.3 0.6 0.7\n",
         r"expected an oriented box .*got 11 numbers"),
    ],
)
def test_yolo_obb_invalid_lines(tmp_path, label, message):
    names = yolo_dataset(tmp_path, {"a.txt": label}, {"a.jpg": (8, 8)})
    with pytest.raises(ValueError, match=r"a\.txt:1: " + message):
        import_yolo(str(tmp_path / "labels"), str(tmp_path / "images"), str(names),
                    str(tmp_path / "out"), obb=True)


def test_yolo_images_without_labels_are_kept(tmp_path):
    names = yolo_dataset(
        tmp_path, {"a.txt": "0 0.5 0.5 0.5 0.5\n"}, {"a.jpg": (8, 8), "b.jpg": (8, 16)}
    )

    images, detections = run_yolo(tmp_path, names)

    assert [(i["image_id"], i["width"]) for i in images] == [("a", 8), ("b", 16)]
    assert [d["image_id"] for d in detections] == ["a"]


def test_yolo_names_text_file_inside_labels_is_not_a_label(tmp_path):
    yolo_dataset(tmp_path, {"a.txt": "2 0.5 0.5 0.5 0.5\n"}, {"a.jpg": (8, 8)})
    names = write_bytes(tmp_path / "labels" / "classes.txt", "person\ncar\ndog\n\n")

    detections = run_yolo(tmp_path, names)[1]

    assert [(d["class_id"], d["class_name"]) for d in detections] == [(2, "dog")]


def test_yolo_names_yaml_map_and_pose_keypoints(tmp_path):
    yolo_dataset(
        tmp_path, {"p.txt": "0 0.5 0.5 0.5 0.5 0.25 0.25 2 0.75 0.75 0 0.9\n"}, {"p.jpg": (40, 80)}
    )
    names = write_bytes(tmp_path / "pose.yaml", "kpt_shape: [2, 3]\nnames:\n  0: person\n")

    (detection,) = run_yolo(tmp_path, names)[1]

    assert detection["keypoints"] == [
        {"x": 20.0, "y": 10.0, "confidence": 2.0},
        {"x": 60.0, "y": 30.0, "confidence": 0.0},
    ]
    assert detection["confidence"] == 0.9
    assert box(detection) == [20.0, 10.0, 60.0, 30.0]


def test_yolo_nested_directories(tmp_path):
    names = yolo_dataset(
        tmp_path,
        {"train/a.txt": "0 0.5 0.5 0.5 0.5\n"},
        {"train/a.jpg": (8, 8), "val/a.jpg": (8, 8)},
    )

    images, detections = run_yolo(tmp_path, names)

    assert [(i["image_id"], i["file_name"]) for i in images] == [
        ("train/a", "train/a.jpg"),
        ("val/a", "val/a.jpg"),
    ]
    assert [d["detection_id"] for d in detections] == ["train/a:0"]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        # a class id beyond the names file
        (
            "0 0.5 0.5 0.5 0.5\n5 0.5 0.5 0.5 0.5\n",
            r"a\.txt:2: class 5 is not a class id of .*data\.yaml \(0\.\.1\)",
        ),
        # a word among the numbers
        (
            "0 0.5 0.5 0.5 0.5\n\n0 0.5 abc 0.5 0.5\n",
            r"a\.txt:3: expected numbers, got '0 0\.5 abc 0\.5 0\.5'",
        ),
        # too few numbers
        ("0 0.5 0.5 0.5\n", r"a\.txt:1: expected 'class cx cy w h' .* got 4 numbers"),
        # a non-finite coordinate
        ("0 0.5 nan 0.5 0.5\n", r"a\.txt:1: expected finite numbers"),
        # a negative size
        ("0 0.5 0.5 -0.5 0.5\n", r"a\.txt:1: box width and height must be >= 0"),
        # box, confidence and a track id: not a 3-point polygon (7.0 is no coordinate)
        ("0 0.5 0.5 0.2 0.2 0.9 7\n",
         r"^.*a\.txt:1: coordinates must be normalized to 0\.\.1, got \[7\.0\] in "
         r"'0 0\.5 0\.5 0\.2 0\.2 0\.9 7'$"),
        ("0 1.5 0.5 0.2 0.2\n",
         r"a\.txt:1: coordinates must be normalized to 0\.\.1, got \[1\.5\]"),
        ("0 0.1 0.1 0.9 0.1 0.5 -0.25\n", r"a\.txt:1: .* got \[-0\.25\]"),
    ],
)
def test_yolo_invalid_label_lines(tmp_path, label, message):
    names = yolo_dataset(tmp_path, {"a.txt": label}, {"a.jpg": (8, 8)})

    with pytest.raises(ValueError, match=message):
        run_yolo(tmp_path, names)
    assert list((tmp_path / "out").rglob("*.parquet")) == []


def test_yolo_label_suffix_in_capitals_is_a_label(tmp_path):
    names = yolo_dataset(tmp_path, {"x.TXT": "0 0.5 0.5 0.5 0.5\n"}, {"x.JPG": (8, 8)})
    images, detections = run_yolo(tmp_path, names)
    assert [d["image_id"] for d in detections] == ["x"]


def test_images_are_written_in_row_groups_of_bounded_count(tmp_path):
    from jobs.importers import IMAGES_PER_ROW_GROUP

    count = IMAGES_PER_ROW_GROUP * 2 + 1
    names = yolo_dataset(tmp_path, {"000.txt": ""}, {f"{i:03}.jpg": (4, 4) for i in range(count)})
    run_yolo(tmp_path, names)
    (part,) = (tmp_path / "out" / "images").glob("*.parquet")
    metadata = pq.ParquetFile(part).metadata
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == \
        [IMAGES_PER_ROW_GROUP, IMAGES_PER_ROW_GROUP, 1]


def test_yolo_label_without_image(tmp_path):
    names = yolo_dataset(
        tmp_path, {"a.txt": "", "orphan.txt": "0 0.5 0.5 0.5 0.5\n"}, {"a.jpg": (8, 8)}
    )

    with pytest.raises(ValueError, match=r"labels/orphan\.txt: no image for this label file"):
        run_yolo(tmp_path, names)


def test_yolo_two_images_with_one_stem(tmp_path):
    names = yolo_dataset(tmp_path, {}, {"a.jpg": (8, 8), "a.png": (8, 8)})

    with pytest.raises(ValueError, match=r"two images for a: a\.jpg and a\.png"):
        run_yolo(tmp_path, names)


@pytest.mark.parametrize(
    ("file_name", "text", "message"),
    [
        # a blank line inside a names file would shift every later class id
        ("names.txt", "person\n\ncar\n", r"names\.txt:2: blank class name"),
        ("names.txt", "\n", r"names\.txt: no class names"),
        ("data.yaml", "train: images\n", r"data\.yaml: expected a YAML mapping with a 'names'"),
        ("data.yaml", "names: {0: a, 2: b}\n", r"expected 'names' ids 0\.\.1, got \[0, 2\]"),
        ("data.yaml", "names: [a]\nkpt_shape: [17, 4]\n", r"expected 'kpt_shape' as \[K, 2\]"),
    ],
)
def test_yolo_invalid_names(tmp_path, file_name, text, message):
    yolo_dataset(tmp_path, {}, {"a.jpg": (8, 8)})
    names = write_bytes(tmp_path / file_name, text)

    with pytest.raises(ValueError, match=message):
        run_yolo(tmp_path, names)


# --------------------------------------------------------------------------------------------
# Roboflow


def roboflow_result(**fields) -> dict:
    """A Roboflow inference response (instance segmentation) for a 40x80 image."""
    return {
        "inference_id": "6c0e1f0a-7b1b-4d0e-9a59-9d3f6a0a2f01",
        "time": 0.05,
        "image": {"width": 80, "height": 40},
        "predictions": [
            {
                "x": 30.0,
                "y": 20.5,
                "width": 20.0,
                "height": 9.0,
                "confidence": 0.91,
                "class": "car",
                "class_id": 3,
                "detection_id": "d-1",
                "points": [{"x": 20.0, "y": 16.0}, {"x": 40.0, "y": 16.0}, {"x": 30.0, "y": 25.0}],
            },
            {"x": 5, "y": 5, "width": 2, "height": 4, "confidence": 0.5, "class": "person"},
        ],
        **fields,
    }


def write_images(root: Path, *names: str) -> Path:
    for name in names:
        write_bytes(root / "images" / name, encode_image(40, 80))
    return root / "images"


def test_roboflow_rle_predictions_keep_their_mask(tmp_path):
    from cropcore import decode_rle, encode_rle

    images = write_images(tmp_path, "a.jpg")
    object_mask = np.zeros((40, 80), bool)
    object_mask[10:30, 20:40] = True
    rle = encode_rle(object_mask)
    result = roboflow_result(image_path="a.jpg")
    result["predictions"][0].pop("points", None)
    result["predictions"][0].update(rle=rle, mask_format="rle")
    predictions = write_bytes(tmp_path / "p.json", json.dumps(result))
    import_roboflow(str(predictions), str(images), str(tmp_path / "out"))
    row, without = read_output(tmp_path / "out")[1]
    assert without["mask"] is None
    assert row["mask"] == rle  # it used to be dropped (mask null, so crops kept a background)
    np.testing.assert_array_equal(decode_rle(row["mask"]), object_mask)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ([1, 2], r"predictions\[0\] rle: expected a COCO RLE object \{size, counts\}, got list"),
        ({"size": [40], "counts": "0"}, r"rle: expected size \[height, width\], got \[40\]"),
        ({"size": [40, 80], "counts": [3200]}, r"rle: expected compressed RLE counts"),
        ({"size": [40, 80], "counts": "1"}, r"predictions\[0\] rle: "),  # runs do not sum up
    ],
)
def test_roboflow_invalid_rle(tmp_path, rle, message):
    images = write_images(tmp_path, "a.jpg")
    result = roboflow_result(image_path="a.jpg")
    result["predictions"][0]["rle"] = rle
    predictions = write_bytes(tmp_path / "p.json", json.dumps(result))
    with pytest.raises(ValueError, match=message):
        import_roboflow(str(predictions), str(images), str(tmp_path / "out"))


def test_convention_roboflow_box_is_pixel_centre_and_size(tmp_path):
    images = write_images(tmp_path, "cars.jpg")
    predictions = write_bytes(
        tmp_path / "predictions.json", json.dumps(roboflow_result(image_path="cars.jpg"))
    )

    import_roboflow(str(predictions), str(images), str(tmp_path / "out"))

    image_rows, detections = read_output(tmp_path / "out")
    assert detections[0] == {
        "image_id": "cars",
        "detection_id": "d-1",
        "x_min": 20.0,
        "y_min": 16.0,
        "x_max": 40.0,
        "y_max": 25.0,
        "class_name": "car",
        "class_id": 3,
        "confidence": 0.91,
        "mask": None,
        "keypoints": None,
        "polygon": [[20.0, 16.0], [40.0, 16.0], [30.0, 25.0]],
        "xyxyxyxy": None,
        "iscrowd": None,
        "polygon_style": "roboflow",
    }
    # No detection_id: the image id and the prediction's index.
    assert detections[1]["detection_id"] == "cars:1"
    assert box(detections[1]) == [4.0, 3.0, 6.0, 7.0]
    assert detections[1]["class_id"] is None
    assert [(i["image_id"], i["file_name"], i["width"], i["height"]) for i in image_rows] == [
        ("cars", "cars.jpg", 80, 40)
    ]


def test_roboflow_list_matched_by_image_id(tmp_path):
    images = write_images(tmp_path, "a.jpg", "b.png", "unused.jpg")
    second = roboflow_result(image_id="b")
    for prediction in second["predictions"]:
        prediction.pop("detection_id", None)
    predictions = write_bytes(
        tmp_path / "predictions.json", json.dumps([roboflow_result(image_id="a"), second])
    )

    import_roboflow(str(predictions), str(images), str(tmp_path / "out"))

    image_rows, detections = read_output(tmp_path / "out")
    # Only images with a result are imported.
    assert [(i["image_id"], i["file_name"]) for i in image_rows] == [("a", "a.jpg"), ("b", "b.png")]
    assert [d["detection_id"] for d in detections] == ["d-1", "a:1", "b:0", "b:1"]


def test_roboflow_jsonl_and_keypoints(tmp_path):
    images = write_images(tmp_path, "a.jpg", "b.jpg")
    pose = roboflow_result(file_name="b.jpg")
    pose["predictions"] = [
        {
            "x": 10,
            "y": 10,
            "width": 4,
            "height": 4,
            "class": "person",
            "class_id": 0,
            "confidence": 0.8,
            "detection_id": "k-1",
            "keypoints": [
                {"x": 9, "y": 9, "confidence": 0.7, "class": "nose", "class_id": 0},
                {"x": 11, "y": 12, "confidence": 0.2, "class": "eye", "class_id": 1},
            ],
        }
    ]
    lines = [json.dumps(roboflow_result(image_path="a.jpg")), "", json.dumps(pose)]
    predictions = write_bytes(tmp_path / "predictions.jsonl", "\n".join(lines) + "\n")

    import_roboflow(str(predictions), str(images), str(tmp_path / "out"))

    detections = read_output(tmp_path / "out")[1]
    assert [d["image_id"] for d in detections] == ["a", "a", "b"]
    assert detections[2]["keypoints"] == [
        {"x": 9.0, "y": 9.0, "confidence": 0.7},
        {"x": 11.0, "y": 12.0, "confidence": 0.2},
    ]


def test_roboflow_directory_of_results_matched_by_file_name(tmp_path):
    images = write_images(tmp_path, "a.jpg", "b.jpg")
    no_size = roboflow_result()
    del no_size["image"]
    no_size["predictions"][0]["detection_id"] = "d-2"
    write_bytes(tmp_path / "results" / "a.json", json.dumps(roboflow_result()))
    write_bytes(tmp_path / "results" / "b.json", json.dumps(no_size))

    import_roboflow(str(tmp_path / "results"), str(images), str(tmp_path / "out"))

    image_rows, detections = read_output(tmp_path / "out")
    # b's size comes from decoding the image.
    assert [(i["image_id"], i["width"], i["height"]) for i in image_rows] == [
        ("a", 80, 40),
        ("b", 80, 40),
    ]
    assert len(detections) == 4


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        # a broken line in a JSON-lines file names its line
        (
            json.dumps(roboflow_result(image_path="a.jpg")) + "\n{oops\n",
            ".jsonl",
            r"p\.jsonl:2: malformed JSON line",
        ),
        # two results in one file and nothing naming their images
        (
            json.dumps([roboflow_result(), roboflow_result()]),
            ".json",
            r"p\.json: \[0\]: cannot tell",
        ),
        # a result for an image that is not there
        (
            json.dumps(roboflow_result(image_id="zzz")),
            ".json",
            r"p\.json: no image zzz with one of",
        ),
        # a prediction without its centre
        (
            json.dumps(roboflow_result(image_path="a.jpg", predictions=[{"y": 1}])),
            ".json",
            r"p\.json predictions\[0\]: missing required field 'x'",
        ),
        # a non-numeric size
        (
            json.dumps(
                roboflow_result(
                    image_path="a.jpg", predictions=[{"x": 1, "y": 1, "width": "2", "height": 2}]
                )
            ),
            ".json",
            r"predictions\[0\] width: expected a finite number, got '2'",
        ),
        # the same image twice
        (
            json.dumps([roboflow_result(image_path="a.jpg"), roboflow_result(image_id="a")]),
            ".json",
            r"p\.json: \[1\]: a second result for image a \(the first is .*p\.json: \[0\]\)",
        ),
        # the same image, once as "./a.jpg": one file, one id
        (
            json.dumps([roboflow_result(image_path="a.jpg"),
                        roboflow_result(image_path="./a.jpg")]),
            ".json",
            r"p\.json: \[1\]: a second result for image a \(",
        ),
        # not a detection result
        (
            json.dumps({"image_path": "a.jpg", "top": "cat"}),
            ".json",
            r"expected 'predictions' to be a list",
        ),
    ],
)
def test_roboflow_invalid_results(tmp_path, content, suffix, message):
    images = write_images(tmp_path, "a.jpg")
    predictions = write_bytes(tmp_path / f"p{suffix}", content)

    with pytest.raises(ValueError, match=message):
        import_roboflow(str(predictions), str(images), str(tmp_path / "out"))


def test_roboflow_image_path_that_does_not_exist(tmp_path):
    images = write_images(tmp_path, "a.jpg")
    predictions = write_bytes(tmp_path / "p.json", json.dumps(roboflow_result(image_path="b.jpg")))

    with pytest.raises(ValueError, match=r"images/b\.jpg: file not found"):
        import_roboflow(str(predictions), str(images), str(tmp_path / "out"))


def test_yolo_unreadable_image(tmp_path):
    names = yolo_dataset(tmp_path, {"a.txt": ""}, {"a.jpg": (8, 8)})
    write_bytes(tmp_path / "images" / "b.png", b"not a png")

    with pytest.raises(ValueError, match=r"images/b\.png: cannot read the image size"):
        run_yolo(tmp_path, names)


# --------------------------------------------------------------------------------------------
# The command line


def test_command_imports_and_reports(tmp_path, capsys):
    from jobs import cli

    names = yolo_dataset(tmp_path, {"a.txt": "0 0.5 0.5 0.5 0.5\n"}, {"a.jpg": (8, 8)})
    argv = ["import", "yolo", "--labels", str(tmp_path / "labels"), "--images"]
    argv += [str(tmp_path / "images"), "--names", str(names), "--output", str(tmp_path / "out")]

    assert cli.main(argv) == 0

    assert capsys.readouterr().out.split() == [
        "images", "1", "in", "1", "files", "detections", "1", "output", str(tmp_path / "out"),
    ]  # fmt: skip
    assert len(read_output(tmp_path / "out")[1]) == 1


def test_command_obb_flag_reads_oriented_boxes(tmp_path, capsys):
    from jobs import cli

    names = yolo_dataset(
        tmp_path, {"a.txt": "1 0.5 0.25 0.75 0.5 0.5 0.75 0.25 0.5 0.75\n"}, {"a.jpg": (40, 80)}
    )
    argv = ["import", "yolo", "--obb", "--labels", str(tmp_path / "labels"), "--images"]
    argv += [str(tmp_path / "images"), "--names", str(names), "--output", str(tmp_path / "out")]

    assert cli.main(argv) == 0

    assert "detections 1" in capsys.readouterr().out
    (detection,) = read_output(tmp_path / "out")[1]
    assert detection["xyxyxyxy"] == [[40.0, 10.0], [60.0, 20.0], [40.0, 30.0], [20.0, 20.0]]
    assert box(detection) == [20.0, 10.0, 60.0, 30.0]
    assert detection["polygon"] is None
    assert (detection["class_name"], detection["confidence"]) == ("car", 0.75)
    # the same labels without the flag are read as polygons, as the Python API does
    argv[argv.index("--output") + 1] = str(tmp_path / "plain")
    argv.remove("--obb")
    assert cli.main(argv) == 0
    (plain,) = read_output(tmp_path / "plain")[1]
    assert plain["xyxyxyxy"] is None and plain["polygon"] == detection["xyxyxyxy"]


def test_command_reports_invalid_input_in_one_line(tmp_path, capsys):
    from jobs import cli

    argv = ["import", "coco", "--annotations", str(tmp_path / "missing.json"), "--images"]
    argv += [str(tmp_path), "--output", str(tmp_path / "out")]

    assert cli.main(argv) == 2

    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.json'}: file not found\n"


# --------------------------------------------------------------------------------------------
# Object storage


@pytest.mark.slow
def test_import_coco_from_and_to_s3(s3_server, s3_bucket, tmp_path):
    import fsspec

    annotations = coco_dataset(
        tmp_path, [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 8]}]
    )
    # Through s3fs configured by the environment alone, as a user's job would be.
    remote = fsspec.filesystem("s3")
    remote.put(str(tmp_path / "images"), f"{s3_bucket}/coco/images", recursive=True)
    remote.put(str(annotations), f"{s3_bucket}/coco/instances.json")

    summary = import_coco(
        f"s3://{s3_bucket}/coco/instances.json",
        f"s3://{s3_bucket}/coco/images",
        f"s3://{s3_bucket}/imported",
    )

    assert summary.detections_file == f"s3://{s3_bucket}/imported/detections/part-00000.parquet"
    filesystem = s3_server.pyarrow_fs()
    detections = pq.read_table(f"{s3_bucket}/imported/detections", filesystem=filesystem)
    images = pq.read_table(f"{s3_bucket}/imported/images", filesystem=filesystem)
    assert box(detections.to_pylist()[0]) == [10.0, 5.0, 30.0, 13.0]
    assert images["image"].to_pylist() == [(tmp_path / "images" / "street.jpg").read_bytes()]


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt", "a\x00.jpg"])
def test_image_names_that_leave_the_images_folder_are_refused_never_read(tmp_path, name):
    # names in annotation files are data: with width and height given, nothing else stops them
    write_bytes(tmp_path / "secret.txt", "AWS_SECRET_ACCESS_KEY=hunter2\n")
    (tmp_path / "coco").mkdir()
    coco = coco_dataset(tmp_path / "coco", [])
    document = json.loads(coco.read_text())
    document["images"] = [{"id": 1, "file_name": name, "width": 60, "height": 40}]
    coco.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"leaves the images folder"):
        import_coco(str(coco), str(tmp_path / "coco" / "images"), str(tmp_path / "out-coco"))
    images = write_images(tmp_path, "a.jpg")
    predictions = write_bytes(tmp_path / "p.json", json.dumps(roboflow_result(image_path=name)))
    with pytest.raises(ValueError, match=r"leaves the images folder"):
        import_roboflow(str(predictions), str(images), str(tmp_path / "out-roboflow"))
    assert not (tmp_path / "out-coco").exists() and not (tmp_path / "out-roboflow").exists()


def test_of_two_imports_into_one_output_one_writes_and_the_other_is_refused(tmp_path):
    import threading

    coco = coco_dataset(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1,
                                    "bbox": [1, 2, 10, 20]}])
    images, out = str(tmp_path / "images"), tmp_path / "out"
    # an import in flight (or killed) holds the output's claim: a second one does not enter
    out.mkdir()
    (out / importers.IMPORT_CLAIM).write_text("{}")
    with pytest.raises(ValueError, match=r"_import\.json exists: another import is writing"):
        import_coco(str(coco), images, str(out))
    assert sorted(p.name for p in out.iterdir()) == [importers.IMPORT_CLAIM]
    (out / importers.IMPORT_CLAIM).unlink()
    # two started together: exactly one succeeds, and the output is exactly its tables
    results: list = []

    def run():
        try:
            results.append(import_coco(str(coco), images, str(out)))
        except ValueError as error:
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(r, ValueError) for r in results) == 1
    rows, detections = read_output(out)
    assert len(rows) == 1 and len(detections) == 1
    # a failed import removes its claim with its files: the output can be imported into again
    other = tmp_path / "out2"
    with pytest.raises(ValueError):
        import_coco(str(coco), str(tmp_path / "nowhere"), str(other))
    assert not other.exists() or not any(other.rglob("*.*"))


def test_coco_image_sides_beyond_int32_are_refused_in_one_line(tmp_path, capsys):
    from jobs.cli import main

    annotations = coco_dataset(tmp_path, [], images=[
        {"id": 1, "file_name": "street.jpg", "width": 60, "height": 40}])
    document = json.loads(annotations.read_text())
    document["images"][0]["width"] = 1e20
    annotations.write_text(json.dumps(document))
    assert main(["import", "coco", "--annotations", str(annotations), "--images",
                 str(tmp_path / "images"), "--output", str(tmp_path / "out")]) == 2
    assert "images[0] width: expected an integer within int64, got 1e+20" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    document["images"][0]["width"] = 3_000_000_000
    annotations.write_text(json.dumps(document))
    assert main(["import", "coco", "--annotations", str(annotations), "--images",
                 str(tmp_path / "images"), "--output", str(tmp_path / "out")]) == 2
    assert "expected a positive integer below 2**31" in capsys.readouterr().err


@pytest.mark.parametrize("megabytes", [0, 2048, -1])
def test_max_file_mb_out_of_range_is_named_in_megabytes(tmp_path, capsys, megabytes):
    from jobs.cli import main

    names = yolo_dataset(tmp_path, {"a.txt": ""}, {"a.jpg": (8, 8)})
    code = main(["import", "yolo", "--labels", str(tmp_path / "labels"), "--images",
                 str(tmp_path / "images"), "--names", str(names), "--output",
                 str(tmp_path / "out"), "--max-file-mb", str(megabytes)])
    assert code == 2
    assert capsys.readouterr().err == (f"error: --max-file-mb must be within 1..2047 (Arrow's "
                                       f"2 GiB per column chunk), got {megabytes}\n")
    assert not (tmp_path / "out").exists()


def exif_turned_jpeg(orientation: int) -> tuple[bytes, np.ndarray]:
    """A 40 x 60 stored JPEG whose EXIF says to show it turned, and its pixels as shown (the
    left half of the stored grid is red)."""
    import io

    from PIL import Image

    stored = np.full((40, 60, 3), 255, np.uint8)
    stored[:, :30] = (255, 0, 0)  # RGB red
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    data = buffer.getvalue()
    return data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_yolo_labels_of_an_exif_turned_image_are_scaled_by_its_shown_size(tmp_path):
    from cropcore import Detections, decode_image, dynamic_crop

    data, shown = exif_turned_jpeg(6)  # shown 40 wide, 60 high; red on top
    assert shown.shape[:2] == (60, 40)
    write_bytes(tmp_path / "images" / "a.jpg", data)
    # Ultralytics reads the image turned: the red half is the top half
    write_bytes(tmp_path / "labels" / "a.txt", "0 0.5 0.25 0.5 0.3\n")
    names = write_bytes(tmp_path / "data.yaml", "names:\n  - thing\n")
    images, (detection,) = run_yolo(tmp_path, names)
    assert (images[0]["width"], images[0]["height"]) == (40, 60)
    assert box(detection) == pytest.approx([10, 6, 30, 24])
    (crop,) = dynamic_crop(decode_image(images[0]["image"]),
                           Detections(xyxy=[box(detection)], detection_id=["d"]))
    assert np.abs(crop.image.astype(int) - (0, 0, 255)).max() < 40  # red (BGR), not white


@pytest.mark.parametrize(("json_wh", "turned"), [((60, 40), True), ((41, 60), False)])
def test_coco_size_that_disagrees_with_the_image_is_refused(tmp_path, json_wh, turned):
    data, _ = exif_turned_jpeg(6)
    write_bytes(tmp_path / "images" / "a.jpg", data)
    document = {"images": [{"id": 1, "file_name": "a.jpg", "width": json_wh[0],
                            "height": json_wh[1]}],
                "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    annotations = write_bytes(tmp_path / "instances.json", json.dumps(document))
    hint = r" \(its EXIF orientation turns it\)" if turned else ""
    with pytest.raises(ValueError, match=rf"a\.jpg: the image is 40x60 as shown{hint}, but "
                                         rf".*instances\.json says {json_wh[0]}x{json_wh[1]} "
                                         rf"for image 1"):
        import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize("file_name",
                         ["%2e%2e/secret.jpg", "..%2fsecret.jpg", "a/%252e%252e/x.jpg"])
def test_coco_names_that_climb_out_once_decoded_are_refused(tmp_path, file_name):
    annotations = coco_dataset(tmp_path, [])
    document = json.loads(annotations.read_text())
    document["images"][0]["file_name"] = file_name
    annotations.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"leaves the images folder"):
        import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_http_image_names_with_path_parameters_are_refused():
    # servers such as Tomcat read "..;/" as ".."; '?' and '#' end the path
    for name in ("..;/secret.jpg", "a.jpg?x=1", "a.jpg#b"):
        with pytest.raises(ValueError, match=r"leaves the images folder"):
            importers._join("http://127.0.0.1:9/images", name)
    assert importers._join("/data/images", "a;b.jpg") == "/data/images/a;b.jpg"


def test_coco_image_symlinked_out_of_the_images_folder_is_refused(tmp_path):
    annotations = coco_dataset(tmp_path, [])
    private = write_bytes(tmp_path / "private" / "me.jpg", encode_image(40, 60))
    (tmp_path / "images" / "street.jpg").unlink()
    (tmp_path / "images" / "street.jpg").symlink_to(private)
    with pytest.raises(ValueError, match=r"street\.jpg: reached through a symlink that leads "
                                         r"out of the images folder"):
        import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))
    # a link to a file inside the folder is that file
    (tmp_path / "images" / "street.jpg").unlink()
    write_bytes(tmp_path / "images" / "real.jpg", encode_image(40, 60))
    (tmp_path / "images" / "street.jpg").symlink_to(tmp_path / "images" / "real.jpg")
    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))


def test_yolo_images_folder_with_a_symlinked_folder_is_refused(tmp_path):
    names = yolo_dataset(tmp_path, {"a.txt": "0 0.5 0.5 0.2 0.2\n"}, {"a.jpg": (40, 60)})
    (tmp_path / "images" / "loop").symlink_to(tmp_path)  # images/loop/images/loop/...
    with pytest.raises(ValueError, match=r"through a symlinked folder"):
        run_yolo(tmp_path, names)
    (tmp_path / "images" / "loop").unlink()
    (tmp_path / "images" / "b.jpg").symlink_to(write_bytes(tmp_path / "outside.jpg",
                                                            encode_image(40, 60)))
    with pytest.raises(ValueError, match=r"b\.jpg: reached through a symlink"):
        run_yolo(tmp_path, names)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, r"deep\.json: malformed JSON: nested too deeply"),
    ('{"images": [{"id": ' + "9" * 5000 + "}]}", r"deep\.json: malformed JSON: .*digits"),
])
def test_coco_json_python_cannot_parse_names_the_file(tmp_path, text, message):
    path = write_bytes(tmp_path / "deep.json", text)
    with pytest.raises(ValueError, match=message):
        import_coco(str(path), str(tmp_path), str(tmp_path / "out"))
