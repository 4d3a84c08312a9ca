"""jobs/stage.py: the crop stage inside a Ray Data pipeline of one's own, and its sink."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from cropcore.codec import decode_image
from jobs import steps
from jobs.pipeline import JobConfig, run
from jobs.sinks import read_shard_index
from jobs.stage import CropSink, crop
from jobs.storage import resolve
from tests.jobs.builders import detections_table, images_table, write_parquet

pytestmark = pytest.mark.slow
DYNAMIC = steps.parse_step({"type": "roboflow_core/dynamic_crop@v1"})


def nested_images(n: int = 4, per_image: int = 3) -> pa.Table:
    images = images_table(n)
    detections = detections_table(n, per_image, masks=False).drop_columns(["mask"])
    nested = [detections.filter(pa.compute.equal(detections["image_id"], i)).drop_columns(
        ["image_id"]).to_pylist() for i in images["image_id"].to_pylist()]
    return images.append_column("detections", pa.array(nested))


def test_crop_rows_then_a_model_then_the_committed_sink(ray_cluster, tmp_path):
    table = nested_images()
    crops = crop(ray.data.from_arrow(table), DYNAMIC, image_format="png")

    def mean_pixel(batch: pa.Table) -> pa.Table:  # stands in for an embedding model
        means = [float(decode_image(c["bytes"]).mean()) if c else None
                 for c in batch.column("crop").to_pylist()]
        return batch.append_column("mean_pixel", pa.array(means, pa.float64()))

    embedded = crops.map_batches(mean_pixel, batch_format="pyarrow").materialize()
    rows = embedded.to_arrow_refs()
    got = pa.concat_tables(ray.get(rows))
    crop_rows = got.filter(pa.compute.is_null(got.column("reason")))
    assert crop_rows.num_rows + got.num_rows - crop_rows.num_rows == 12
    assert {"crop_id", "crop", "window_x_min", "source_sha256", "mean_pixel"} <= set(
        got.column_names)

    # the same crops as the command line's run of the same inputs (same ids, same bytes)
    write_parquet(table.drop_columns(["detections"]), tmp_path / "images.parquet")
    flat = detections_table(4, 3, masks=False).drop_columns(["mask"])
    write_parquet(flat, tmp_path / "detections.parquet")
    run(JobConfig(images=str(tmp_path / "images.parquet"),
                  detections=str(tmp_path / "detections.parquet"),
                  output=str(tmp_path / "cli"), step=DYNAMIC))
    cli = pq.read_table(tmp_path / "cli" / "crops").sort_by("crop_id")
    mine = crop_rows.sort_by("crop_id")
    assert mine["crop_id"].to_pylist() == cli["crop_id"].to_pylist()
    assert mine["crop"].to_pylist() == cli["crop"].to_pylist()

    # written through the sink: a committed run, readable through its index
    crops.write_datasink(CropSink(str(tmp_path / "sink"), run_id="embed-v1"))
    manifest = json.loads((tmp_path / "sink" / "_manifest.json").read_text())
    assert manifest["status"] == "committed" and manifest["counts"]["crops"] == cli.num_rows
    shards = list(read_shard_index(resolve(str(tmp_path / "sink")), manifest))
    written = pa.concat_tables([pq.read_table(tmp_path / "sink" / f["path"])
                                for s in shards for f in s["files"] if f["kind"] == "crops"])
    assert sorted(written["crop_id"].to_pylist()) == cli["crop_id"].to_pylist()
    np.testing.assert_array_equal(
        decode_image(written.sort_by("crop_id")["crop"][0].as_py()["bytes"]),
        decode_image(cli["crop"][0].as_py()["bytes"]))
    # a committed run is final: another run is refused, and so is the same run id, which
    # the sink cannot tell from other rows written under it
    committed = sorted(p.relative_to(tmp_path) for p in (tmp_path / "sink").rglob("*"))
    with pytest.raises(Exception, match=r"belongs to run embed-v1"):
        crops.write_datasink(CropSink(str(tmp_path / "sink"), run_id="other"))
    with pytest.raises(Exception, match=r"already holds run embed-v1, committed"):
        crop(ray.data.from_arrow(table.slice(0, 1)), DYNAMIC).write_datasink(
            CropSink(str(tmp_path / "sink"), run_id="embed-v1"))
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "sink").rglob("*")) == committed


def test_crop_checks_its_arguments_as_the_command_line_does(ray_cluster, tmp_path):
    images = ray.data.from_arrow(nested_images(1))
    for kwargs, message in [({"image_format": "gif"}, r"--format must be one of"),
                            ({"quality": 1000, "image_format": "jpeg"}, r"--quality must be"),
                            ({"max_pixels": 0}, r"max_pixels must be a positive integer"),
                            ({"image_format": "npy"}, r"--format npy needs the crop_and_resize"),
                            ({"allow_uris": "relative/path"}, r"absolute paths or URLs")]:
        with pytest.raises(ValueError, match=message):
            crop(images, DYNAMIC, **kwargs)
    # a step that crops detections, on images with none nested and none given
    with pytest.raises(ValueError, match=r"this step crops detections: pass detections="):
        crop(ray.data.from_arrow(images_table(1)), DYNAMIC)
    # --allow-uris as a string is the flag's comma-separated list, not a list of characters
    folder = tmp_path / "allowed"
    folder.mkdir()
    (tmp_path / "allowed-not").mkdir()
    png = images_table(1)["image"][0].as_py()
    for name in ("allowed/a.png", "allowed-not/b.png"):
        (tmp_path / name).write_bytes(png)
    table = pa.table({"image_id": ["a", "b"], "uri": [str(tmp_path / "allowed/a.png"),
                                                      str(tmp_path / "allowed-not/b.png")]})
    for allow in (f"file://{folder}", (f"file://{folder}",), f"file://{folder}/"):
        got = pa.concat_tables(ray.get(crop(ray.data.from_arrow(table), parse_static(),
                                            allow_uris=allow).to_arrow_refs()))
        outcome = dict(zip(got["image_id"].to_pylist(), got["reason"].to_pylist(), strict=True))
        assert outcome == {"a": None, "b": "fetch_failed"}, (allow, outcome)


def test_an_image_without_an_id_is_an_error_row_not_a_crop(ray_cluster):
    table = nested_images(2)
    table = table.set_column(0, "image_id", pa.array([None, "im1"], pa.string()))
    got = pa.concat_tables(ray.get(crop(ray.data.from_arrow(table), DYNAMIC).to_arrow_refs()))
    nameless = got.filter(pa.compute.is_null(got["image_id"]))
    assert nameless["reason"].to_pylist() == ["missing_id"]
    assert nameless["message"].to_pylist() == ["image row has a null image_id; row skipped"]
    assert set(got.filter(pa.compute.equal(got["image_id"], "im1"))["detection_id"]
               .to_pylist()) == {"im1-d0", "im1-d1", "im1-d2"}


def parse_static():
    return steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": 10,
                             "y_center": 10, "width": 8, "height": 8})


def test_a_separate_detections_dataset_is_joined(ray_cluster, tmp_path):
    images = images_table(3)
    detections = detections_table(3, 2, masks=False).drop_columns(["mask"])
    crops = crop(ray.data.from_arrow(images), DYNAMIC,
                 detections=ray.data.from_arrow(detections), num_partitions=2)
    got = pa.concat_tables(ray.get(crops.to_arrow_refs()))
    assert got.num_rows == 6
    assert sorted(got["detection_id"].to_pylist()) == sorted(
        detections["detection_id"].to_pylist())
    # the write fuses into the join's last step, where Ray Data calls no on_write_start: the
    # sink still claims the output, and refuses it once committed
    crops.write_datasink(CropSink(str(tmp_path / "sink"), run_id="joined"))
    assert (tmp_path / "sink" / "_claim.json").is_file()
    assert (tmp_path / "sink" / "_manifest.json").is_file()
    with pytest.raises(Exception, match=r"already holds run joined, committed"):
        crops.write_datasink(CropSink(str(tmp_path / "sink"), run_id="joined"))
