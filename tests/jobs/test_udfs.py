"""The crop UDF in-process (no Ray): how a shard's columns are built."""

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import steps, udfs
from jobs.pipeline import JobConfig, prepare
from jobs.pipeline import crop_in_process as pair_and_crop
from jobs.storage import StorageError
from tests.jobs.builders import detections_table, images_table, write_parquet

DYNAMIC = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0}


def _crop_in_process(tmp_path, name: str) -> pa.Table:
    """Every planned unit through ``crop_units`` in this process; the crops written."""
    config = JobConfig(images=str(tmp_path / "images.parquet"),
                       detections=str(tmp_path / "detections.parquet"),
                       output=str(tmp_path / name), step=steps.parse_step(DYNAMIC))
    prepared = prepare(config)
    pair_and_crop(prepared)
    return pq.read_table(tmp_path / name / "crops").sort_by("crop_id")


def test_crop_bytes_past_a_binary_array_limit_become_chunks(tmp_path, monkeypatch):
    # pa.binary() holds at most 2 GiB per array; a shard with more crop bytes is split into
    # chunks. A tiny limit exercises the same path: the output must not change.
    write_parquet(images_table(3), tmp_path / "images.parquet")
    write_parquet(detections_table(3, per_image=4), tmp_path / "detections.parquet")
    whole = _crop_in_process(tmp_path, "whole")
    lengths = [len(c["bytes"]) for c in whole.column("crop").to_pylist()]
    assert whole.num_rows == 12 and max(lengths) < sum(lengths) // 3
    built = []
    original = udfs.ShardBuilder._crop_column

    def spy(self):
        column = original(self)
        built.append(column)
        return column

    monkeypatch.setattr(udfs, "_MAX_CHUNK_BYTES", max(lengths))
    monkeypatch.setattr(udfs.ShardBuilder, "_crop_column", spy)
    chunked = _crop_in_process(tmp_path, "chunked")
    assert any(isinstance(c, pa.ChunkedArray) and c.num_chunks > 1 for c in built)
    assert chunked.equals(whole)


def test_prepare_worker_limits_numba_threads_in_every_calling_thread():
    import threading

    import numba

    seen = []

    def task():
        udfs._prepare_worker()
        seen.append(numba.get_num_threads())

    udfs._prepare_worker()  # the process is prepared first; a new thread still gets 1
    thread = threading.Thread(target=task)
    thread.start()
    thread.join()
    assert seen == [1] and numba.get_num_threads() == 1


# --- ShardBuilder on cropcore's batched kernels: polygons for missing masks, unmasked, iscrowd --


def _shard(step_json: dict, images: pa.Table, detections: pa.Table) -> udfs.ShardBuilder:
    """One chunk through a real ShardBuilder (no Ray, no storage): detections get ``__row``."""
    from datetime import UTC, datetime

    from jobs import schema

    step = steps.parse_step(step_json)
    refs = steps.column_refs(step)
    context = udfs.JobContext(
        step=step, step_json=steps.step_to_json(step),
        layout=schema.images_layout(images.schema, None, refs), output_url="",
        image_format="png", quality=None, max_pixels=10**8, max_detections=100,
        rows_per_shard=32, reduced_decode=False, run_id="r", fingerprint="f", code_version="c",
        created_at=datetime(2020, 1, 1, tzinfo=UTC), parameter_columns=refs)
    ids = images.column("image_id").to_pylist()
    rows = [ids.index(i) for i in detections.column("image_id").to_pylist()]
    builder = udfs.ShardBuilder(context, "file:///in/images.parquet", list(range(len(ids))))
    builder.crop_chunk(images, detections.append_column("__row", pa.array(rows, pa.int64())),
                       set())
    return builder


def _decoded_crops(builder: udfs.ShardBuilder) -> list:
    import cv2
    import numpy as np

    return [cv2.imdecode(np.frombuffer(c["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
            for c in builder.tables()["crops"].column("crop").to_pylist()]


SQUARE = [[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]]


def _one_detection(**columns) -> pa.Table:
    return pa.table({"image_id": ["im0"], "detection_id": ["d0"], "x_min": [5.0],
                     "y_min": [5.0], "x_max": [25.0], "y_max": [25.0],
                     **{k: pa.array(v[0], v[1]) for k, v in columns.items()}})


def test_background_removal_rasterizes_a_polygon_when_the_detection_has_no_mask():
    import numpy as np

    from cropcore import polygon_to_mask
    from jobs import schema
    from tests.jobs.builders import image_pixels

    images = images_table(1)
    source = image_pixels(0)[5:25, 5:25]
    for style, kept in ((None, 121), ("roboflow", 121), ("coco", 100)):
        extra = {"polygon_style": ([style], pa.string())} if style else {}
        builder = _shard(DYNAMIC, images,
                         _one_detection(polygon=([SQUARE], schema.POLYGON_TYPE), **extra))
        (crop,) = _decoded_crops(builder)
        inside = polygon_to_mask(np.array(SQUARE), (48, 64), style=style or "roboflow")[5:25, 5:25]
        assert inside.sum() == kept
        np.testing.assert_array_equal(crop[inside], source[inside])
        assert (crop[~inside] == 0).all()
        assert "unmasked" not in builder.counts
        # the crop's own mask column stays the input's (none); its polygon is in the crop frame
        row = builder.tables()["crops"].to_pylist()[0]
        assert row["mask"] is None and row["polygon"][0] == [5.0, 5.0]


def test_background_removal_without_mask_or_polygon_crops_unmasked_and_counts_it():
    import numpy as np

    from tests.jobs.builders import image_pixels

    images = images_table(1)
    builder = _shard(DYNAMIC, images, _one_detection())
    (crop,) = _decoded_crops(builder)
    np.testing.assert_array_equal(crop, image_pixels(0)[5:25, 5:25])
    assert builder.counts["unmasked"] == 1 and builder.counts["crops"] == 1
    kept = _shard({**DYNAMIC, "mask_opacity": 0.0}, images, _one_detection())
    assert "unmasked" not in kept.counts  # nothing was asked: nothing is missing


def test_unmasked_is_in_the_summary_and_its_printout():
    from jobs.cli import format_summary
    from jobs.pipeline import Summary

    assert Summary(run_id="r", output="o").unmasked == 0
    text = format_summary(Summary(run_id="r", output="o", crops=3, unmasked=2))
    assert "unmasked" in text and "2 (background removal asked, no mask or polygon)" in text
    assert "unmasked" not in format_summary(Summary(run_id="r", output="o"))


def test_coco_iscrowd_and_polygon_style_are_imported_and_iscrowd_reaches_the_crops(tmp_path):
    from jobs.importers import import_coco
    from tests.jobs.test_importers import coco_dataset

    annotations = coco_dataset(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10]},
    ])
    import_coco(str(annotations), str(tmp_path / "images"), str(tmp_path / "out"))
    detections = pq.read_table(tmp_path / "out" / "detections")
    assert detections.column("iscrowd").to_pylist() == [True, False, False]
    assert set(detections.column("polygon_style").to_pylist()) == {"coco"}
    images = pq.read_table(tmp_path / "out" / "images").select(["image_id", "image"])
    builder = _shard({"type": "roboflow_core/dynamic_crop@v1"}, images, detections)
    crops = builder.tables()["crops"]
    assert crops.column("iscrowd").to_pylist() == [True, False, False]
    assert crops.schema.field("iscrowd").type == pa.bool_()


def test_detections_without_iscrowd_give_crops_without_the_column():
    builder = _shard(DYNAMIC, images_table(1), _one_detection())
    assert "iscrowd" not in builder.tables()["crops"].column_names


def test_yolo_segmentation_import_then_background_removal_uses_its_polygon(tmp_path):
    import numpy as np

    from cropcore import polygon_to_mask
    from tests.jobs.test_importers import run_yolo, yolo_dataset

    names = yolo_dataset(tmp_path, {"a.txt": "1 0.125 0.125 0.875 0.125 0.5 0.875\n"},
                         {"a.jpg": (16, 16)})
    run_yolo(tmp_path, names)
    detections = pq.read_table(tmp_path / "out" / "detections")
    assert detections.column("polygon_style").to_pylist() == ["roboflow"]
    assert detections.column("mask").to_pylist() == [None]
    images = pq.read_table(tmp_path / "out" / "images").select(["image_id", "image"])
    builder = _shard(DYNAMIC, images, detections)
    (crop,) = _decoded_crops(builder)
    polygon = np.array(detections.column("polygon").to_pylist()[0])
    x0, y0 = 2, 2  # the polygon's extent [2, 14] x [2, 14]
    inside = polygon_to_mask(polygon, (16, 16), style="roboflow")[y0:14, x0:14]
    assert (crop[~inside] == 0).all() and inside.sum() < inside.size
    assert "unmasked" not in builder.counts


def test_crop_and_resize_of_a_box_beyond_float32_is_an_error_row_not_a_failed_task():
    detections = pa.table({"image_id": ["im0", "im0"], "detection_id": ["huge", "ok"],
                           "x_min": [-1e300, 1.0], "y_min": [0.0, 1.0], "x_max": [20.0, 9.0],
                           "y_max": [5.0, 9.0]})
    builder = _shard({"type": "cropcore/crop_and_resize@v1", "crop_size": [4, 4]},
                     images_table(1), detections)
    tables = builder.tables()
    assert tables["crops"].column("detection_id").to_pylist() == ["ok"]
    assert tables["errors"].column("reason").to_pylist() == ["invalid_box"]
    assert builder.counts["errors"] == {"invalid_box": 1}


def test_a_staged_unit_whose_work_file_is_gone_fails_its_task_with_a_retryable_error(tmp_path):
    # the work area is deleted at the commit; a task of an uncommitted run that finds it gone
    # must fail so that it is retried (StorageError), naming the row group
    write_parquet(images_table(2), tmp_path / "images.parquet")
    write_parquet(detections_table(2, per_image=2), tmp_path / "detections.parquet")
    prepared = prepare(JobConfig(images=str(tmp_path / "images.parquet"),
                                 detections=str(tmp_path / "detections.parquet"),
                                 output=str(tmp_path / "out"), step=steps.parse_step(DYNAMIC)))
    context = dataclasses.replace(prepared.context,
                                  work_url=str(tmp_path / "out" / "_work" / "gone"))
    unit = dataclasses.replace(prepared.plan.units[0], staged=True)
    with pytest.raises(StorageError, match=r"work file of row group 0 is missing"):
        udfs._crop_unit(unit, context)


def test_nested_detections_repeating_an_id_within_an_image_are_refused_after_the_first(tmp_path):
    images = images_table(2)
    box = {"x_min": 1.0, "y_min": 1.0, "x_max": 20.0, "y_max": 20.0}
    nested = [[{"detection_id": "a", **box}, {"detection_id": "a", **box},
               {"detection_id": "b", **box}],
              [{"detection_id": "a", **box}]]  # the same id on another image: its own crop
    write_parquet(images.append_column("detections", pa.array(nested)),
                  tmp_path / "images.parquet")
    prepared = prepare(JobConfig(images=str(tmp_path / "images.parquet"),
                                 output=str(tmp_path / "out"), step=steps.parse_step(DYNAMIC)))
    pair_and_crop(prepared)
    crops = pq.read_table(tmp_path / "out" / "crops")
    assert sorted(zip(crops["image_id"].to_pylist(), crops["detection_id"].to_pylist(),
                      strict=True)) == [("im0", "a"), ("im0", "b"), ("im1", "a")]
    errors = pq.read_table(tmp_path / "out" / "errors").to_pylist()
    assert [(e["image_id"], e["detection_id"], e["stage"], e["reason"]) for e in errors] == [
        ("im0", "a", "plan", "duplicate_detection_id")]


def test_crops_that_crop_and_resize_resized_are_not_cropped_again(tmp_path):
    # their pixels are not their root window's: a window in them has no root window
    write_parquet(images_table(2), tmp_path / "images.parquet")
    write_parquet(detections_table(2, per_image=2), tmp_path / "detections.parquet")
    resize = steps.parse_step({"type": "cropcore/crop_and_resize@v1", "crop_size": [40, 30]})
    pair_and_crop(prepare(JobConfig(images=str(tmp_path / "images.parquet"),
                                    detections=str(tmp_path / "detections.parquet"),
                                    output=str(tmp_path / "resized"), step=resize,
                                    image_format="png")))
    static = steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": 15,
                               "y_center": 20, "width": 10, "height": 10})
    pair_and_crop(prepare(JobConfig(images=str(tmp_path / "resized" / "crops"),
                                    output=str(tmp_path / "again"), step=static)))
    assert not (tmp_path / "again" / "crops").exists() or \
        pq.read_table(tmp_path / "again" / "crops").num_rows == 0
    errors = pq.read_table(tmp_path / "again" / "errors").to_pylist()
    assert len(errors) == 4 and {e["reason"] for e in errors} == {"unsupported"}
    assert "resized from its root window" in errors[0]["message"]
