"""End-to-end: the real job on a real local Ray cluster, local folders and a real S3 server."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cropcore import Detections, absolute_static_crop, crop_and_resize, dynamic_crop
from cropcore.masks import decode_rle
from jobs import schema, steps
from jobs.pipeline import JobConfig, JobError, run
from jobs.sinks import read_shard_index
from jobs.storage import resolve
from tests.jobs.builders import detections_table, image_pixels, images_table, write_parquet

pytestmark = pytest.mark.slow

DYNAMIC = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0,
           "background_color": "#102030"}


def read_output(output, kind: str) -> pa.Table:
    import pathlib

    files = sorted(pathlib.Path(output, kind).glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("crop_id" if kind != "errors"
                                                                      else "detection_id")


def write_inputs(tmp_path, n_images=5, per_image=4, row_group_size=2):
    images = images_table(n_images)
    detections = detections_table(n_images, per_image)
    write_parquet(images, tmp_path / "images.parquet", row_group_size=row_group_size)
    (tmp_path / "detections").mkdir()
    write_parquet(detections, tmp_path / "detections" / "part-0.parquet")
    return images, detections


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_dynamic_crop_job_matches_the_kernel(ray_cluster, tmp_path):
    images, detections = write_inputs(tmp_path)
    config = JobConfig(images=str(tmp_path / "images.parquet"),
                       detections=str(tmp_path / "detections"), output=str(tmp_path / "out"),
                       step=steps.parse_step(DYNAMIC), rows_per_shard=1)
    summary = run(config)
    assert summary.images == 5 and summary.detections == 20
    crops = read_output(tmp_path / "out", "crops")
    errors = read_output(tmp_path / "out", "errors")
    n_errors = 0 if errors is None else errors.num_rows
    assert summary.crops == crops.num_rows and crops.num_rows + n_errors == 20
    assert summary.error_count == n_errors
    by_id = {row["detection_id"]: row for row in crops.to_pylist()}
    for i in range(5):
        table = detections.filter(pa.compute.equal(detections["image_id"], f"im{i}"))
        masks = np.stack([decode_rle(m) if m else np.zeros((48, 64), bool)
                          for m in table["mask"].to_pylist()])
        has_mask = np.array([m is not None for m in table["mask"].to_pylist()])
        boxes = np.stack([table[c].to_numpy() for c in ("x_min", "y_min", "x_max", "y_max")], 1)
        expected = dynamic_crop(
            image_pixels(i), Detections(xyxy=boxes, detection_id=table["detection_id"].to_pylist(),
                                        mask=masks), 1.0, "#102030")
        # no mask: the polygon stands in for it, rasterized as Roboflow does (crop-semantics.md)
        polygons = [np.array(p or [], dtype=np.float64).reshape(-1, 2)
                    for p in table["polygon"].to_pylist()]
        from_polygons = dynamic_crop(image_pixels(i), Detections(
            xyxy=boxes, detection_id=table["detection_id"].to_pylist(), polygons=polygons),
            1.0, "#102030")
        for k, detection_id in enumerate(table["detection_id"].to_pylist()):
            reference = expected[k] if has_mask[k] else from_polygons[k]
            if reference is None:
                assert errors is not None and detection_id in errors["detection_id"].to_pylist()
                continue
            row = by_id[detection_id]
            np.testing.assert_array_equal(decode(row["crop"]["bytes"]), reference.image)
            assert row["crop"]["path"] == f"{row['crop_id']}.png"
            assert (row["width"], row["height"]) == reference.size
            np.testing.assert_allclose(
                [row["x_min"], row["y_min"], row["x_max"], row["y_max"]],
                reference.detections.xyxy[0])
            assert row["keypoints"][0]["x"] == pytest.approx(reference.detections.xyxy[0][0] + 1)
            if has_mask[k]:
                np.testing.assert_array_equal(decode_rle(row["mask"]), reference.detections.mask[0])
            assert row["frame_number"] == i and row["video_id"] == "clip-a"  # carried along
    lineage = read_output(tmp_path / "out", "lineage")
    assert lineage["crop_id"].to_pylist() == crops["crop_id"].to_pylist()
    first = lineage.to_pylist()[0]
    assert first["source_uri"].endswith(f"images.parquet#row={first['image_id'][2:]}")
    assert first["step_type"] == "roboflow_core/dynamic_crop@v1"
    assert json.loads(first["step_params"])["mask_opacity"] == 1.0
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["status"] == "committed"
    assert manifest["counts"]["crops"] == crops.num_rows
    shards = read_shard_index(resolve(str(tmp_path / "out")), manifest)
    listed = {f["path"] for s in shards for f in s["files"]}
    on_disk = {str(p.relative_to(tmp_path / "out")) for kind in ("crops", "lineage", "errors")
               for p in (tmp_path / "out" / kind).glob("*.parquet")}
    assert listed == on_disk


def test_static_crops_with_per_image_parameters(ray_cluster, tmp_path):
    images = images_table(4, cx=[10, 20, 30, 200])
    write_parquet(images, tmp_path / "images.parquet")
    step = steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1",
                             "x_center": "$inputs.cx", "y_center": 20, "width": 11, "height": 9})
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "o"),
                            step=step))
    assert summary.crops == 3 and summary.errors == {"empty_window": 1}
    crops = read_output(tmp_path / "o", "crops")
    for row in crops.to_pylist():
        i = int(row["image_id"][2:])
        expected = absolute_static_crop(image_pixels(i), [10, 20, 30][i], 20, 11, 9)
        np.testing.assert_array_equal(decode(row["crop"]["bytes"]), expected.image)
        assert row["detection_id"] is None
    errors = read_output(tmp_path / "o", "errors")
    assert errors.to_pylist()[0]["image_id"] == "im3"


def test_relative_static_crop(ray_cluster, tmp_path):
    write_parquet(images_table(2), tmp_path / "images.parquet")
    step = steps.parse_step({"type": "roboflow_core/relative_statoic_crop@v1", "x_center": 0.5,
                             "y_center": 0.5, "width": 0.5, "height": 0.5})
    run(JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "o"), step=step))
    crops = read_output(tmp_path / "o", "crops")
    assert crops.num_rows == 2
    assert {(r["width"], r["height"]) for r in crops.to_pylist()} == {(32, 24)}
    # 64 x 48 image: centre (round(32), round(24)), size (32, 24) -> x_min 16, y_min 12
    lineage = {r["crop_id"]: r for r in read_output(tmp_path / "o", "lineage").to_pylist()}
    for row in crops.to_pylist():
        window = lineage[row["crop_id"]]
        assert (window["window_x_min"], window["window_y_min"], window["window_x_max"],
                window["window_y_max"]) == (16, 12, 48, 36)
        i = int(row["image_id"][2:])
        np.testing.assert_array_equal(decode(row["crop"]["bytes"]), image_pixels(i)[12:36, 16:48])


def test_crop_and_resize_npy_matches_the_kernel(ray_cluster, tmp_path):
    images, detections = write_inputs(tmp_path, n_images=2, per_image=3)
    step = steps.parse_step({"type": "cropcore/crop_and_resize@v1", "crop_size": [8, 6]})
    run(JobConfig(images=str(tmp_path / "images.parquet"),
                  detections=str(tmp_path / "detections"), output=str(tmp_path / "o"), step=step))
    crops = read_output(tmp_path / "o", "crops")
    assert crops.num_rows == 6
    assert crops["crop"].type == schema.npy_crop_type((8, 6, 3))  # float32 [h][w][c] lists
    tensors = schema.npy_crop_tensors(crops["crop"])
    assert tensors.shape == (6, 8, 6, 3) and tensors.dtype == np.float32
    rows = detections.to_pylist()
    for tensor, row in zip(tensors, crops.to_pylist(), strict=True):
        d = next(r for r in rows if r["detection_id"] == row["detection_id"])
        box = np.array([[d["y_min"] / 47, d["x_min"] / 63, d["y_max"] / 47, d["x_max"] / 63]],
                       np.float32)
        i = int(d["image_id"][2:])
        expected = crop_and_resize(image_pixels(i)[None], box, [0], (8, 6))[0]
        np.testing.assert_array_equal(tensor, expected)


def test_empty_inputs(ray_cluster, tmp_path):
    write_parquet(images_table(0).cast(images_table(1).schema), tmp_path / "images.parquet")
    (tmp_path / "detections").mkdir()
    write_parquet(detections_table(0), tmp_path / "detections" / "d.parquet")
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"),
                            detections=str(tmp_path / "detections"), output=str(tmp_path / "o"),
                            step=steps.parse_step(DYNAMIC)))
    assert (summary.images, summary.crops, summary.error_count) == (0, 0, 0)
    assert json.loads((tmp_path / "o" / "_manifest.json").read_text())["status"] == "committed"


def test_a_local_output_a_node_does_not_see_is_refused_before_the_claim(ray_cluster, tmp_path,
                                                                        monkeypatch):
    # On a cluster of machines with their own disks, workers wrote shards on theirs while the
    # manifest went to the driver's. This cluster has one node: a second one that sees nothing
    # is what ``nodes_missing`` reports for it.
    from jobs import raycompat

    write_inputs(tmp_path)
    seen = []

    def nodes_missing(paths):
        seen.extend(paths)
        return [("10.0.0.2", path) for path in paths]

    monkeypatch.setattr(raycompat, "nodes_missing", nodes_missing)
    config = JobConfig(images=str(tmp_path / "images.parquet"),
                       detections=str(tmp_path / "detections"), output=str(tmp_path / "o"),
                       step=steps.parse_step(DYNAMIC))
    with pytest.raises(JobError, match=r"^--images .*images.parquet is on a local filesystem "
                                       r"that node 10.0.0.2 does not see: on a cluster of "
                                       r"several machines, use s3:// or gs:// URLs"):
        run(config)
    assert any("/o/_probe-" in path for path in seen)  # the output, through a probe file
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # no claim


@pytest.mark.parametrize("flag", ["images", "detections", "output"])
def test_dot_segments_in_object_store_urls_are_refused(tmp_path, flag):
    # s3://b/zz/../in is the key "zz/../in": an overlap check resolving ".." compared another
    # place than the one written (and the server's error was an unclear ACCESS_DENIED)
    urls = {"images": str(tmp_path / "images.parquet"), "detections": str(tmp_path / "d"),
            "output": str(tmp_path / "o")}
    urls[flag] = "s3://bucket/zz/../in/x"
    config = JobConfig(images=urls["images"], detections=urls["detections"],
                       output=urls["output"], step=steps.parse_step(DYNAMIC))
    with pytest.raises(JobError, match=rf"^--{flag} s3://bucket/zz/../in/x has a '.' or '..' "
                                       r"segment, which an object store takes as part of a key"):
        run(config)


def test_relative_paths_are_refused_in_rays_copy_of_the_working_dir(tmp_path, monkeypatch):
    copy = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    config = JobConfig(images=str(tmp_path / "images.parquet"), detections=None,
                       output="crops", step=steps.parse_step(DYNAMIC))
    with pytest.raises(JobError, match=r"^--output crops is a relative path, and this job runs "
                                       r"in Ray's temporary copy of --working-dir"):
        run(config)


def test_rerun_gives_identical_crops_and_refuses_other_settings(ray_cluster, tmp_path):
    write_inputs(tmp_path)
    common = {"images": str(tmp_path / "images.parquet"),
              "detections": str(tmp_path / "detections"), "step": steps.parse_step(DYNAMIC)}
    run(JobConfig(output=str(tmp_path / "a"), **common))
    run(JobConfig(output=str(tmp_path / "b"), **common))
    a, b = read_output(tmp_path / "a", "crops"), read_output(tmp_path / "b", "crops")
    assert a.equals(b)  # same ids, same bytes
    la, lb = (read_output(tmp_path / k, "lineage").drop_columns(["created_at"]) for k in "ab")
    assert la.equals(lb)
    # the same run into the same output is a no-op; other settings are refused
    again = run(JobConfig(output=str(tmp_path / "a"), **common))
    assert again.crops == a.num_rows
    assert read_output(tmp_path / "a", "crops").equals(a)
    with pytest.raises(JobError, match=r"belongs to run run-\w+, committed, with other step;"):
        run(JobConfig(output=str(tmp_path / "a"), **common | {
            "step": steps.parse_step(DYNAMIC | {"mask_opacity": 0.5})}))


def test_nested_crops_compose_root_windows(ray_cluster, tmp_path):
    write_parquet(images_table(2, size_wh=(64, 48)), tmp_path / "images.parquet")
    first = steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": 30,
                              "y_center": 20, "width": 40, "height": 30})
    run(JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "one"),
                  step=first))
    second = steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": 10,
                               "y_center": 10, "width": 8, "height": 6})
    run(JobConfig(images=str(tmp_path / "one" / "crops"), output=str(tmp_path / "two"),
                  step=second))
    lineage = read_output(tmp_path / "two", "lineage").to_pylist()
    assert len(lineage) == 2
    for row in lineage:
        # first window (10, 5, 50, 35); second (6, 7, 14, 13) inside it
        assert (row["window_x_min"], row["window_y_min"]) == (6, 7)
        assert (row["root_window_x_min"], row["root_window_y_min"],
                row["root_window_x_max"], row["root_window_y_max"]) == (16, 12, 24, 18)
        assert row["root_image_id"] in ("im0", "im1") and row["root_width"] == 64
        crops = read_output(tmp_path / "two", "crops").to_pylist()
        crop = next(c for c in crops if c["crop_id"] == row["crop_id"])
        i = int(row["root_image_id"][2:])
        np.testing.assert_array_equal(decode(crop["crop"]["bytes"]),
                                      image_pixels(i)[12:18, 16:24])


def test_hugging_face_image_column_and_nested_detections(ray_cluster, tmp_path):
    images = images_table(3)
    detections = detections_table(3, 2)
    hf = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in
                   enumerate(images["image"].to_pylist())],
                  pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    nested = [detections.filter(pa.compute.equal(detections["image_id"], f"im{i}"))
              .drop_columns(["image_id"]).to_pylist() for i in range(3)]
    table = images.set_column(1, "image", hf).append_column(
        "detections", pa.array(nested, pa.list_(pa.struct(
            [f for f in detections.schema if f.name != "image_id"]))))
    write_parquet(table, tmp_path / "images.parquet")
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "o"),
                            step=steps.parse_step({"type": "roboflow_core/dynamic_crop@v1"})))
    assert summary.detections == 6 and summary.crops + summary.error_count == 6
    # every detection whose rounded, clamped box keeps a pixel is a crop (not an error), and
    # its pixels are that window of its own image
    expected = {}
    for row in detections.to_pylist():
        x0, y0 = (min(max(round(row[k]), 0), n) for k, n in (("x_min", 64), ("y_min", 48)))
        x1, y1 = (min(max(round(row[k]), 0), n) for k, n in (("x_max", 64), ("y_max", 48)))
        if x1 > x0 and y1 > y0:
            expected[row["detection_id"]] = image_pixels(int(row["image_id"][2:]))[y0:y1, x0:x1]
    assert len(expected) >= 4  # the fixture's boxes: most keep pixels
    assert summary.crops == len(expected)
    assert set(summary.errors) <= {"empty_window"}
    crops = read_output(tmp_path / "o", "crops").to_pylist()
    assert {row["detection_id"] for row in crops} == set(expected)
    for row in crops:
        np.testing.assert_array_equal(decode(row["crop"]["bytes"]), expected[row["detection_id"]])


def test_uri_column(ray_cluster, tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), image_pixels(i))
        paths.append(str(path))
    write_parquet(pa.table({"image_id": ["im0", "im1"], "uri": paths}), tmp_path / "images.parquet")
    step = steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": 5,
                             "y_center": 5, "width": 4, "height": 4})
    run(JobConfig(images=str(tmp_path / "images.parquet"), output=str(tmp_path / "o"), step=step,
                  allow_uris=(str(tmp_path),)))
    crops = read_output(tmp_path / "o", "crops").sort_by("image_id").to_pylist()
    np.testing.assert_array_equal(decode(crops[1]["crop"]["bytes"]), image_pixels(1)[3:7, 3:7])


def test_s3_inputs_and_outputs(ray_cluster, s3_server, s3_bucket, tmp_path):
    images = images_table(3)
    detections = detections_table(3, 3)
    fs = s3_server.pyarrow_fs()
    write_parquet(images, f"{s3_bucket}/in/images/part-0.parquet", filesystem=fs)
    write_parquet(detections, f"{s3_bucket}/in/detections/part-0.parquet", filesystem=fs)
    summary = run(JobConfig(images=f"s3://{s3_bucket}/in/images/",
                            detections=f"s3://{s3_bucket}/in/detections",
                            output=f"s3://{s3_bucket}/out", step=steps.parse_step(DYNAMIC)))
    assert summary.crops + summary.error_count == 9
    manifest = json.loads(fs.open_input_stream(f"{s3_bucket}/out/_manifest.json").read())
    assert manifest["counts"]["crops"] == summary.crops
    crops = [f for f in fs.get_file_info(pa.fs.FileSelector(f"{s3_bucket}/out/crops"))]
    assert sum(pq.read_table(f.path, filesystem=fs).num_rows for f in crops) == summary.crops
    # identical to a local run of the same inputs
    write_parquet(images, tmp_path / "images.parquet")
    (tmp_path / "d").mkdir()
    write_parquet(detections, tmp_path / "d" / "part-0.parquet")
    run(JobConfig(images=str(tmp_path / "images.parquet"), detections=str(tmp_path / "d"),
                  output=str(tmp_path / "o"), step=steps.parse_step(DYNAMIC)))
    local = read_output(tmp_path / "o", "crops")
    remote = pa.concat_tables([pq.read_table(f.path, filesystem=fs) for f in crops])
    assert sorted(local["crop_sha256"].to_pylist() if "crop_sha256" in local.column_names
                  else [c["bytes"] for c in local["crop"].to_pylist()]) == sorted(
        c["bytes"] for c in remote["crop"].to_pylist())


def test_reduced_decode_stays_close_to_the_exact_path(ray_cluster, tmp_path):
    from skimage import data as samples

    photo = cv2.cvtColor(samples.astronaut(), cv2.COLOR_RGB2BGR)  # 512 x 512
    ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    write_parquet(pa.table({"image_id": ["a"], "image": [jpeg.tobytes()]}),
                  tmp_path / "images.parquet")
    boxes = [(0, 0, 511, 511), (100, 50, 400, 300), (10, 10, 60, 60)]  # shrink 16x, 10x, 1.6x
    write_parquet(pa.Table.from_pylist([
        {"image_id": "a", "detection_id": f"d{k}", "x_min": float(x0), "y_min": float(y0),
         "x_max": float(x1), "y_max": float(y1)} for k, (x0, y0, x1, y1) in enumerate(boxes)
    ]), tmp_path / "detections.parquet")
    step = steps.parse_step({"type": "cropcore/crop_and_resize@v1", "crop_size": [32, 32]})
    common = {"images": str(tmp_path / "images.parquet"),
              "detections": str(tmp_path / "detections.parquet"), "step": step}
    run(JobConfig(output=str(tmp_path / "exact"), **common))
    run(JobConfig(output=str(tmp_path / "reduced"), reduced_decode=True, **common))
    exact = read_output(tmp_path / "exact", "crops").sort_by("detection_id")
    reduced = read_output(tmp_path / "reduced", "crops").sort_by("detection_id")
    a = schema.npy_crop_tensors(exact["crop"])
    b = schema.npy_crop_tensors(reduced["crop"])
    # the smallest box shrinks less than 2x, so its image is decoded at full size: all of these
    # crops come from the same 1/1 decode (decode granularity is per image, the smallest box
    # decides) and are identical to the exact path
    np.testing.assert_array_equal(a, b)
    write_parquet(pa.Table.from_pylist([
        {"image_id": "a", "detection_id": f"d{k}", "x_min": float(x0), "y_min": float(y0),
         "x_max": float(x1), "y_max": float(y1)} for k, (x0, y0, x1, y1) in enumerate(boxes[:2])
    ]), tmp_path / "detections.parquet")
    run(JobConfig(output=str(tmp_path / "exact2"), **common))
    run(JobConfig(output=str(tmp_path / "reduced2"), reduced_decode=True, **common))
    a = read_output(tmp_path / "exact2", "crops").sort_by("detection_id")["crop"]
    b = read_output(tmp_path / "reduced2", "crops").sort_by("detection_id")["crop"]
    a, b = (schema.npy_crop_tensors(c) for c in (a, b))
    difference = np.abs(a - b)
    # decoded at 1/8 (area-averaged) against bilinear point samples of the full image: close,
    # not equal; the README promises "about 8 grey levels" on this detailed photograph
    assert 6 <= difference.mean() <= 10, difference.mean()
    with pytest.raises(JobError, match="--reduced-decode applies to the crop_and_resize step"):
        JobConfig(output="x", images="y", step=steps.parse_step(DYNAMIC), reduced_decode=True)


def test_every_translated_prediction_is_the_input_minus_the_window_origin(ray_cluster, tmp_path):
    """Box, keypoint x and y, polygon and mask of every crop, each computed here from the input
    row and the lineage window's origin alone (no cropcore kernel is called)."""
    images, detections = write_inputs(tmp_path, n_images=3, per_image=4)
    run(JobConfig(images=str(tmp_path / "images.parquet"),
                  detections=str(tmp_path / "detections"), output=str(tmp_path / "out"),
                  step=steps.parse_step({"type": "roboflow_core/dynamic_crop@v1"})))
    crops = {r["crop_id"]: r for r in read_output(tmp_path / "out", "crops").to_pylist()}
    lineage = read_output(tmp_path / "out", "lineage").to_pylist()
    inputs = {r["detection_id"]: r for r in detections.to_pylist()}
    assert len(lineage) == len(crops) >= 8
    checked = {"mask": 0, "keypoint": 0, "polygon": 0}
    for line in lineage:
        crop, given = crops[line["crop_id"]], inputs[line["detection_id"]]
        x0, y0 = line["window_x_min"], line["window_y_min"]
        # the window is the input box rounded half to even and clamped to the 64 x 48 image
        assert (x0, y0, line["window_x_max"], line["window_y_max"]) == (
            min(max(round(given["x_min"]), 0), 64), min(max(round(given["y_min"]), 0), 48),
            min(max(round(given["x_max"]), 0), 64), min(max(round(given["y_max"]), 0), 48))
        for name, origin in (("x_min", x0), ("y_min", y0), ("x_max", x0), ("y_max", y0)):
            assert crop[name] == pytest.approx(given[name] - origin, abs=1e-9), name
        (point,) = crop["keypoints"]
        assert point["x"] == pytest.approx(given["keypoints"][0]["x"] - x0, abs=1e-9)
        assert point["y"] == pytest.approx(given["keypoints"][0]["y"] - y0, abs=1e-9)
        assert point["confidence"] == given["keypoints"][0]["confidence"]
        checked["keypoint"] += 1
        assert len(crop["polygon"]) == len(given["polygon"])
        for (x, y), (gx, gy) in zip(crop["polygon"], given["polygon"], strict=True):
            assert (x, y) == (pytest.approx(gx - x0, abs=1e-9), pytest.approx(gy - y0, abs=1e-9))
        checked["polygon"] += 1
        if given["mask"] is None:
            assert crop["mask"] is None
            continue
        width, height = crop["width"], crop["height"]
        assert crop["mask"]["size"] == [height, width]
        window = decode_rle(given["mask"])[y0 : y0 + height, x0 : x0 + width]
        np.testing.assert_array_equal(decode_rle(crop["mask"]), window)
        checked["mask"] += 1
        assert (crop["class_name"], crop["class_id"], crop["confidence"]) == (
            given["class_name"], given["class_id"], given["confidence"])
    assert min(checked.values()) >= 4, checked


def test_an_exif_turned_image_is_cropped_as_shown(ray_cluster, tmp_path):
    # Detectors that read with OpenCV (Roboflow's inference, Ultralytics) see the image turned
    # as its EXIF says, so their boxes are in that frame; the job crops the same pixels.
    import io

    from PIL import Image

    stored = image_pixels(3, (60, 40))[:, :, ::-1]  # 60 wide, 40 high; RGB for Pillow
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buffer, "PNG", exif=exif.tobytes())
    data = buffer.getvalue()
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (60, 40)
    write_parquet(pa.table({"image_id": ["turned"], "image": [data]}), tmp_path / "images.parquet")
    write_parquet(pa.table({"image_id": ["turned"], "detection_id": ["d"], "x_min": [5.0],
                            "y_min": [30.0], "x_max": [35.0], "y_max": [58.0]}),
                  tmp_path / "detections.parquet")
    run(JobConfig(images=str(tmp_path / "images.parquet"),
                  detections=str(tmp_path / "detections.parquet"), output=str(tmp_path / "out"),
                  step=steps.parse_step({"type": "roboflow_core/dynamic_crop@v1"})))
    (crop,) = read_output(tmp_path / "out", "crops").to_pylist()
    np.testing.assert_array_equal(decode(crop["crop"]["bytes"]), shown[30:58, 5:35])
    (lineage,) = read_output(tmp_path / "out", "lineage").to_pylist()
    assert (lineage["parent_width"], lineage["parent_height"]) == (40, 60)


def test_a_malformed_oriented_box_is_an_invalid_box_row(ray_cluster, tmp_path):
    write_parquet(images_table(1), tmp_path / "images.parquet")
    corners = [[[5.0, 5.0], [20.0, 5.0], [20.0, 15.0], [5.0, 15.0]],
               [[5.0, 5.0], [20.0, 5.0], [20.0, 15.0]]]  # three corners: refused, not carried
    write_parquet(pa.table({"image_id": ["im0", "im0"], "detection_id": ["ok", "three"],
                            "x_min": [5.0, 5.0], "y_min": [5.0, 5.0], "x_max": [20.0, 20.0],
                            "y_max": [15.0, 15.0],
                            "xyxyxyxy": pa.array(corners, schema.ORIENTED_BOX_TYPE)}),
                  tmp_path / "detections.parquet")
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"),
                            detections=str(tmp_path / "detections.parquet"),
                            output=str(tmp_path / "out"),
                            step=steps.parse_step({"type": "roboflow_core/dynamic_crop@v1"})))
    assert summary.crops == 1
    (crop,) = read_output(tmp_path / "out", "crops").to_pylist()
    assert crop["detection_id"] == "ok" and crop["xyxyxyxy"][0] == [0.0, 0.0]
    (error,) = read_output(tmp_path / "out", "errors").to_pylist()
    assert (error["detection_id"], error["reason"], error["stage"]) == ("three", "invalid_box",
                                                                       "crop")
    assert error["message"] == ("the oriented box (xyxyxyxy) is not four [x, y] corners of "
                                "finite numbers")


def test_images_files_with_a_null_column_and_wider_ints_make_one_typed_output(ray_cluster,
                                                                               tmp_path):
    import pandas as pd

    from tests.jobs.builders import png

    (tmp_path / "images").mkdir()
    frames = [pd.DataFrame({"image_id": ["a"], "image": [png(image_pixels(0))],
                            "note": [None], "frame": pd.array([1], "int32")}),
              pd.DataFrame({"image_id": ["b"], "image": [png(image_pixels(1))],
                            "note": ["kept"], "frame": pd.array([2], "int64")})]
    for k, frame in enumerate(frames):  # pandas writes the all-None note as Arrow null
        frame.to_parquet(tmp_path / "images" / f"part-{k}.parquet")
    assert pq.read_schema(tmp_path / "images" / "part-0.parquet").field("note").type == pa.null()
    step = {"type": "roboflow_core/absolute_static_crop@v1", "x_center": 5, "y_center": 5,
            "width": 4, "height": 4}
    summary = run(JobConfig(images=str(tmp_path / "images"), detections=None,
                            output=str(tmp_path / "out"), step=steps.parse_step(step),
                            rows_per_shard=1))
    assert summary.crops == 2
    for kind in ("crops", "lineage"):
        shards = list((tmp_path / "out" / kind).glob("*.parquet"))
        assert len(shards) == 2
        (note,) = {pq.read_schema(f).field("note").type for f in shards}  # one type per column
        (frame,) = {pq.read_schema(f).field("frame").type for f in shards}
        assert pa.types.is_string(note) or pa.types.is_large_string(note), kind
        assert frame == pa.int64(), kind
    rows = {r["image_id"]: (r["note"], r["frame"]) for r in
            read_output(tmp_path / "out", "crops").to_pylist()}
    assert rows == {"a": (None, 1), "b": ("kept", 2)}
