"""jobs.exports: the run's crops read by Hugging Face datasets and by webdataset, OpenLineage
events, and the deterministic tar writer.

The slow tests share one real job output (module fixture); the others build a committed output
by hand with ``jobs.sinks`` so they need no Ray.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import exports, schema, steps
from jobs.pipeline import JobConfig, run
from jobs.schema import HF_IMAGE_TYPE
from jobs.sinks import read_shard_index
from jobs.storage import resolve
from tests.jobs.builders import (
    detections_table,
    images_table,
    lineage_rows,
    write_committed_output,
    write_parquet,
)

DYNAMIC = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0,
           "background_color": "#102030"}


def read_kind(output: Path, kind: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted((output / kind).glob("*.parquet"))])


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# -- the real job's output --------------------------------------------------------------------
@pytest.fixture(scope="module")
def job_output(ray_cluster, tmp_path_factory) -> Path:
    """A dynamic-crop run over 4 images in 2 shards (PNG crops, masks on half the boxes)."""
    root = tmp_path_factory.mktemp("exports")
    write_parquet(images_table(4), root / "images.parquet", row_group_size=2)
    (root / "detections").mkdir()
    write_parquet(detections_table(4, 3), root / "detections" / "part-0.parquet")
    run(JobConfig(images=str(root / "images.parquet"), detections=str(root / "detections"),
                  output=str(root / "out"), step=steps.parse_step(DYNAMIC), rows_per_shard=2))
    return root / "out"


@pytest.mark.slow
def test_hugging_face_datasets_reads_the_crop_column_as_images(job_output, tmp_path,
                                                               monkeypatch):
    # Offline, with every cache under tmp: the check must not fetch or write anything elsewhere.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    import datasets
    from PIL import Image as PILImage

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    ds = datasets.load_dataset("parquet", data_files=str(job_output / "crops" / "*.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf" / "cache"))
    assert isinstance(ds.features["crop"], datasets.Image)  # from the schema's metadata, no cast
    crops = read_kind(job_output, "crops")
    assert ds.num_rows == crops.num_rows > 0
    by_id = {row["crop_id"]: row for row in crops.to_pylist()}
    for index in (0, ds.num_rows - 1):
        row = ds[index]
        image = row["crop"]
        assert isinstance(image, PILImage.Image)
        expected = by_id[row["crop_id"]]
        assert image.size == (expected["width"], expected["height"])
        # Convention: the job stores BGR pixels as PNG, so PIL's RGB is the same image.
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")),
                                      decode_png(expected["crop"]["bytes"])[:, :, ::-1])


@pytest.mark.slow
def test_webdataset_shards_read_back_with_the_webdataset_package(job_output):
    import webdataset as wds

    urls = exports.export_webdataset(str(job_output))
    crops = {r["crop_id"]: r for r in read_kind(job_output, "crops").to_pylist()}
    lineage = {r["crop_id"]: r for r in read_kind(job_output, "lineage").to_pylist()}
    assert [Path(u).name for u in urls] == ["shard-000000.tar", "shard-000001.tar"]

    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(crops)
    for sample in samples:
        crop = crops[sample["__key__"]]
        assert set(sample) >= {"__key__", "png", "json"}
        assert sample["png"] == crop["crop"]["bytes"]  # the stored bytes, not re-encoded
        document = json.loads(sample["json"])
        assert document["crop_id"] == crop["crop_id"]
        assert (document["width"], document["height"]) == (crop["width"], crop["height"])
        # Translated predictions, exactly as in crops/ (JSON round-trips float64 exactly),
        # and every crops column is a prediction or one of the sample's own fields.
        assert document["predictions"] == {k: crop[k] for k in exports.PREDICTION_COLUMNS
                                           if k in crop}
        assert set(crop) - set(exports.PREDICTION_COLUMNS) == {
            "crop_id", "image_id", "detection_id", "crop", "width", "height",
            *schema.ROOT_COLUMNS, "video_id", "frame_number"}  # the last two: carried
        expected_lineage = lineage[crop["crop_id"]]
        assert document["lineage"]["source_uri"] == expected_lineage["source_uri"]
        assert document["lineage"]["created_at"] == expected_lineage["created_at"].isoformat()

    decoded = next(iter(wds.WebDataset(urls[0], shardshuffle=False).decode("rgb8")))
    # webdataset decodes to RGB; the stored crop is BGR-encoded PNG like every OpenCV image.
    np.testing.assert_array_equal(decoded["png"],
                                  decode_png(crops[decoded["__key__"]]["crop"]["bytes"])[..., ::-1])
    assert decoded["json"]["crop_id"] == decoded["__key__"]


@pytest.mark.slow
def test_webdataset_export_is_byte_identical_and_resizes_shards(job_output):
    first = [Path(u).read_bytes() for u in exports.export_webdataset(str(job_output))]
    n_crops = read_kind(job_output, "crops").num_rows
    resized = exports.export_webdataset(str(job_output), samples_per_shard=5)
    assert len(resized) == -(-n_crops // 5)
    with tarfile.open(resized[0]) as tar:
        assert len(tar.getnames()) == 10  # 5 samples of 2 members
    again = exports.export_webdataset(str(job_output))
    # the per-shard export replaced the 5-sample tars, and left no stale ones behind
    assert sorted(p.name for p in (job_output / "webdataset").glob("*.tar")) == \
        [Path(u).name for u in again]
    assert [Path(u).read_bytes() for u in again] == first


@pytest.mark.slow
def test_openlineage_events_name_the_run_its_inputs_and_outputs(job_output):
    url = exports.write_openlineage(str(job_output))
    lines = Path(url).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events == exports.openlineage_events(str(job_output))
    manifest = json.loads((job_output / "_manifest.json").read_text())
    start, complete = events
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    for event in events:
        assert {"eventType", "eventTime", "run", "job", "inputs", "outputs", "producer",
                "schemaURL"} <= set(event)
        assert event["producer"] == exports.default_producer()
        assert event["schemaURL"] == \
            "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
        assert event["run"]["runId"] == str(uuid.UUID(event["run"]["runId"]))
        assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
        for facet in event["job"]["facets"].values():
            assert facet["_producer"] and facet["_schemaURL"].startswith("https://openlineage.io/")
    assert start["run"]["runId"] == complete["run"]["runId"] == str(
        uuid.uuid5(exports.RUN_UUID_NAMESPACE, manifest["run_id"]))
    assert start["eventTime"] <= complete["eventTime"]
    assert complete["job"] == start["job"] and complete["inputs"] == start["inputs"]
    assert start["job"]["namespace"] == "cropcore"
    assert start["job"]["name"] == "roboflow_core.dynamic_crop.v1"
    root = str(job_output.parent)
    assert [(d["namespace"], d["name"]) for d in start["inputs"]] == [
        ("file", f"{root}/images.parquet"), ("file", f"{root}/detections")]
    outputs = {d["name"].rsplit("/", 1)[-1]: d for d in complete["outputs"]}
    assert {"crops", "lineage"} <= set(outputs)
    crops = outputs["crops"]
    assert crops["namespace"] == "file" and crops["name"] == f"{job_output}/crops"
    fields = {f["name"]: f for f in crops["facets"]["schema"]["fields"]}
    assert [f["name"] for f in fields["crop"]["fields"]] == ["bytes", "path"]
    statistics = crops["outputFacets"]["outputStatistics"]
    assert statistics["rowCount"] == manifest["counts"]["crops"]
    shards = read_shard_index(resolve(str(job_output)), manifest)
    assert statistics["size"] == sum(f["bytes"] for s in shards for f in s["files"]
                                     if f["kind"] == "crops")
    assert all("outputFacets" not in d for d in start["outputs"])


def upload(local: Path, s3_server, key: str) -> str:
    """Copy a local folder to ``s3://<key>``; returns the URL."""
    import pyarrow.fs as pafs

    pafs.copy_files(str(local), key, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_server.pyarrow_fs())
    return f"s3://{key}"


@pytest.mark.slow
def test_exports_read_and_write_s3(job_output, s3_server, s3_bucket):
    url = upload(job_output, s3_server, f"{s3_bucket}/runs/out")
    tars = exports.export_webdataset(url)
    assert tars == [f"{url}/webdataset/shard-000000.tar", f"{url}/webdataset/shard-000001.tar"]
    fs = s3_server.pyarrow_fs()
    local = [Path(u).read_bytes() for u in exports.export_webdataset(str(job_output))]
    # the same bytes as an export of the same run on a local disk
    assert [fs.open_input_stream(t[len("s3://"):]).read() for t in tars] == local
    events = exports.openlineage_events(url)
    crops = next(d for d in events[1]["outputs"] if d["name"].endswith("/crops"))
    assert (crops["namespace"], crops["name"]) == (f"s3://{s3_bucket}", "runs/out/crops")
    exports.write_openlineage(url)
    assert fs.get_file_info(f"{s3_bucket}/runs/out/openlineage/events.jsonl").size > 0


@pytest.mark.slow
def test_export_command(job_output, capsys):
    parser = argparse.ArgumentParser()
    exports.add_arguments(parser)
    assert "python -m jobs export" in parser.epilog
    args = parser.parse_args([str(job_output), "--webdataset", "--openlineage"])
    assert exports.command(args) == 0
    printed = capsys.readouterr().out
    assert "shard-000000.tar" in printed and "events.jsonl" in printed
    assert exports.command(parser.parse_args([str(job_output)])) == 2
    assert "expected --webdataset and/or --openlineage" in capsys.readouterr().err


# -- without Ray ------------------------------------------------------------------------------
def test_tar_bytes_is_sorted_and_carries_no_clock_or_owner():
    data = exports.tar_bytes([("b.json", b"{}"), ("a.png", b"\x89PNG"), ("a.json", b"[]")])
    assert data == exports.tar_bytes([("a.json", b"[]"), ("b.json", b"{}"), ("a.png", b"\x89PNG")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.json", "a.png", "b.json"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
            (0, 0, 0, "", "", 0o644)}
        assert tar.extractfile("a.png").read() == b"\x89PNG"


def test_tar_bytes_of_nothing_is_an_empty_archive():
    with tarfile.open(fileobj=io.BytesIO(exports.tar_bytes([]))) as tar:
        assert tar.getmembers() == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # an S3 prefix: the bucket is the namespace, the key the name
        ("s3://bucket/runs/crops-v1/", ("s3://bucket", "runs/crops-v1")),
        # Google Cloud Storage follows the same rule
        ("gs://bucket/images", ("gs://bucket", "images")),
        # a local absolute path
        ("/data/images.parquet", ("file", "/data/images.parquet")),
        # a file:// URL is the same local path
        ("file:///data/images/", ("file", "/data/images")),
        # any other filesystem: scheme and host, then the path
        ("memory://scratch/out", ("memory://scratch", "/out")),
    ],
)
def test_dataset_name_follows_the_openlineage_naming_rules(url, expected):
    assert exports.dataset_name(url) == expected


def _legacy_tensor_crops(tensors: np.ndarray) -> pa.Array:
    """How runs before the fixed-size-list crops stored npy crops: arrow.fixed_shape_tensor."""
    storage = pa.FixedSizeListArray.from_arrays(pa.array(tensors.ravel()),
                                                int(np.prod(tensors.shape[1:])))
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), tensors.shape[1:]),
                                          storage)


@pytest.mark.parametrize("build", [lambda t: schema.npy_crop_array(t, t.shape[1:]),
                                   _legacy_tensor_crops], ids=["fixed_size_lists", "legacy"])
def test_npy_crops_export_as_numpy_arrays(tmp_path, build):
    import webdataset as wds

    tensors = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3)
    crop = build(tensors)  # as the job builds it (or built it before)
    ids = ["c0", "c1"]
    crops = pa.table({"crop_id": ids, "image_id": ["im0", "im0"], "detection_id": ["d0", "d1"],
                      "crop": crop, "width": pa.array([3, 3], pa.int32()),
                      "height": pa.array([4, 4], pa.int32())})
    output = write_committed_output(tmp_path / "out", crops, lineage_rows(ids),
                                    image_format="npy")
    urls = exports.export_webdataset(str(output))
    samples = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False).decode()}
    assert sorted(samples) == ids
    for index, crop_id in enumerate(ids):
        np.testing.assert_array_equal(samples[crop_id]["npy"], tensors[index])
        assert samples[crop_id]["json"]["format"] == "npy"
        assert samples[crop_id]["json"]["lineage"]["created_at"] == \
            "2026-01-02T03:04:05.678000+00:00"


def test_a_run_without_crops_exports_no_tars_but_still_its_events(tmp_path):
    empty = pa.table({"crop_id": pa.array([], pa.string()), "image_id": pa.array([], pa.string()),
                      "detection_id": pa.array([], pa.string()),
                      "crop": pa.array([], HF_IMAGE_TYPE), "width": pa.array([], pa.int32()),
                      "height": pa.array([], pa.int32())})
    output = write_committed_output(tmp_path / "out", empty, lineage_rows([]))
    assert exports.export_webdataset(str(output)) == []
    start, complete = exports.openlineage_events(str(output))
    crops = next(d for d in complete["outputs"] if d["name"].endswith("/crops"))
    assert crops["outputFacets"]["outputStatistics"]["rowCount"] == 0
    assert start["inputs"][0]["facets"] == {}  # the images input does not exist: no schema


def test_a_folder_without_a_manifest_is_refused(tmp_path):
    with pytest.raises(exports.ExportError, match="expected a committed run in .* no "
                                                  "_manifest.json"):
        exports.export_webdataset(str(tmp_path))


def test_samples_per_shard_must_be_positive(tmp_path):
    with pytest.raises(exports.ExportError, match="--samples-per-shard must be a positive "
                                                  "integer, got 0"):
        exports.export_webdataset(str(tmp_path), samples_per_shard=0)


def test_sample_json_is_strict_json():
    row = {"crop_id": "c", "image_id": "i", "detection_id": None, "width": 2, "height": 3,
           "confidence": float("nan"), "x_min": 1.5}
    document = json.loads(exports.sample_json(row, {"created_at": datetime(2026, 1, 1,
                                                                           tzinfo=UTC)}, "png"))
    assert document["predictions"] == {"confidence": None, "x_min": 1.5}
    assert document["lineage"]["created_at"] == "2026-01-01T00:00:00+00:00"


def test_sample_json_carries_oriented_boxes_and_the_crowd_flag():
    # both used to be left out of the sample's predictions
    corners = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]]
    row = {"crop_id": "c", "xyxyxyxy": corners, "iscrowd": True, "track": 7}
    document = json.loads(exports.sample_json(row, {}, "png"))
    assert document["predictions"] == {"xyxyxyxy": corners, "iscrowd": True}


def _hf_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    return datasets


def test_job_crops_load_in_datasets_as_images_with_no_cast(tmp_path, monkeypatch):
    """The crop UDF's own shards (in process, no Ray) carry datasets' features metadata."""
    from tests.jobs.test_steps import _job_in_process

    datasets = _hf_offline(monkeypatch, tmp_path)
    out = _job_in_process(tmp_path, images_table(2), DYNAMIC, detections_table(2, 2))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "crops" / "*.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf" / "cache"))
    assert isinstance(ds.features["crop"], datasets.Image)  # no cast_column needed
    assert isinstance(ds.features["x_min"], datasets.Value)  # other columns from Arrow types
    by_id = {row["crop_id"]: row for row in out["crops"].to_pylist()}
    row = ds[0]
    expected = decode_png(by_id[row["crop_id"]]["crop"]["bytes"])
    np.testing.assert_array_equal(np.asarray(row["crop"].convert("RGB")), expected[:, :, ::-1])


@pytest.mark.slow
def test_npy_crops_load_in_datasets_as_float32_arrays(ray_cluster, tmp_path, monkeypatch):
    """The real job's crop_and_resize --format npy crops load with datasets.load_dataset, with
    no cast: a fixed-length [h][w][c] float32 feature, equal to cropcore.crop_and_resize."""
    from cropcore import crop_and_resize
    from tests.jobs.builders import image_pixels

    datasets = _hf_offline(monkeypatch, tmp_path)
    write_parquet(images_table(2), tmp_path / "images.parquet")
    (tmp_path / "detections").mkdir()
    detections = detections_table(2, 3)
    write_parquet(detections, tmp_path / "detections" / "part-0.parquet")
    step = steps.parse_step({"type": "cropcore/crop_and_resize@v1", "crop_size": [8, 6]})
    run(JobConfig(images=str(tmp_path / "images.parquet"), detections=str(tmp_path / "detections"),
                  output=str(tmp_path / "out"), step=step, image_format="npy"))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "crops" / "*.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf" / "cache"))
    feature = ds.features["crop"]  # List(List(List(float32, length=3), length=6), length=8)
    shape = []
    while isinstance(feature, datasets.List):
        shape.append(feature.length)
        feature = feature.feature
    assert shape == [8, 6, 3] and feature == datasets.Value("float32")
    tensors = ds.with_format("numpy")["crop"][:]
    assert ds.num_rows == 6 and tensors.shape == (6, 8, 6, 3) and tensors.dtype == np.float32
    rows = {row["detection_id"]: row for row in detections.to_pylist()}
    for tensor, detection_id in zip(tensors, ds["detection_id"], strict=True):
        d = rows[detection_id]
        box = np.array([[d["y_min"] / 47, d["x_min"] / 63, d["y_max"] / 47, d["x_max"] / 63]],
                       np.float32)
        expected = crop_and_resize(image_pixels(int(d["image_id"][2:]))[None], box, [0], (8, 6))
        np.testing.assert_array_equal(tensor, expected[0])
    # the plain (python) format gives the same values as nested lists
    np.testing.assert_array_equal(np.asarray(ds[0]["crop"], np.float32), tensors[0])


def test_npy_crop_tensors_reads_both_crop_types_and_refuses_others():
    tensors = np.arange(3 * 2 * 2 * 1, dtype=np.float32).reshape(3, 2, 2, 1)
    for array in (schema.npy_crop_array(tensors, (2, 2, 1)), _legacy_tensor_crops(tensors)):
        assert schema.is_npy_crop_type(array.type)
        np.testing.assert_array_equal(schema.npy_crop_tensors(pa.chunked_array([array])), tensors)
        np.testing.assert_array_equal(schema.npy_crop_tensors(array.slice(1)), tensors[1:])
        assert schema.npy_crop_tensors(array.slice(0, 0)).shape == (0, 2, 2, 1)
    assert not schema.is_npy_crop_type(HF_IMAGE_TYPE)
    with pytest.raises(schema.SchemaError, match=r"expected an npy crop column .*got struct"):
        schema.npy_crop_tensors(pa.array([None], HF_IMAGE_TYPE))


def test_hf_features_metadata_names_only_an_image_crop_column():
    image = pa.schema([("crop_id", pa.string()), ("crop", HF_IMAGE_TYPE)])
    meta = exports.hf_features_metadata(image)
    assert json.loads(meta[b"huggingface"]) == {"info": {"features": {"crop": {"_type": "Image"}}}}
    # npy crops need none: datasets derives a fixed-length List from their Arrow type
    tensor = pa.schema([("crop", schema.npy_crop_type((2, 2, 3)))])
    assert exports.hf_features_metadata(tensor) == {}
    table = exports.with_hf_features(pa.table({"crop": pa.array([None], HF_IMAGE_TYPE)})
                                     .replace_schema_metadata({b"other": b"kept"}))
    assert set(table.schema.metadata) == {b"other", b"huggingface"}


def test_openlineage_producer_is_configurable_with_a_sensible_default(tmp_path, monkeypatch):
    empty = pa.table({"crop_id": pa.array([], pa.string()), "image_id": pa.array([], pa.string()),
                      "detection_id": pa.array([], pa.string()),
                      "crop": pa.array([], HF_IMAGE_TYPE), "width": pa.array([], pa.int32()),
                      "height": pa.array([], pa.int32())})
    output = str(write_committed_output(tmp_path / "out", empty, lineage_rows([])))
    monkeypatch.delenv("CROPCORE_OPENLINEAGE_PRODUCER", raising=False)
    from importlib.metadata import version

    default = exports.openlineage_events(output)
    assert {e["producer"] for e in default} == {f"urn:cropcore:{version('cropcore')}"}
    monkeypatch.setenv("CROPCORE_OPENLINEAGE_PRODUCER", "https://git.example.com/ml/crops/v2")
    from_env = exports.openlineage_events(output)
    assert from_env[0]["producer"] == "https://git.example.com/ml/crops/v2"
    assert from_env[0]["job"]["facets"]["jobType"]["_producer"] == \
        "https://git.example.com/ml/crops/v2"
    given = exports.openlineage_events(output, producer="urn:acme:cropper")
    assert {e["producer"] for e in given} == {"urn:acme:cropper"}
    assert given[0]["run"]["runId"] == default[0]["run"]["runId"]  # the run id never moves
    with pytest.raises(exports.ExportError, match="producer must be a URI .* got 'not a uri'"):
        exports.openlineage_events(output, producer="not a uri")


def _two_crop_output(tmp_path: Path) -> Path:
    ids = ["c0", "c1"]
    crop = pa.array([{"bytes": cv2.imencode(".png", np.full((4, 3, 3), i, np.uint8))[1]
                      .tobytes(), "path": None} for i in range(2)], HF_IMAGE_TYPE)
    crops = pa.table({"crop_id": ids, "image_id": ["im0", "im0"], "detection_id": ["d0", "d1"],
                      "crop": crop, "width": pa.array([3, 3], pa.int32()),
                      "height": pa.array([4, 4], pa.int32())})
    return write_committed_output(tmp_path / "out", crops, lineage_rows(ids))


@pytest.mark.parametrize("mine", ["webdataset/shard-000009.tar", "webdataset/notes.txt",
                                  "report/index.html", "openlineage/events.jsonl"])
def test_exports_and_report_never_replace_or_delete_files_they_did_not_write(tmp_path, mine):
    # an output run with --allow-foreign-files may hold a user's files under the tools' names
    from jobs.report import write_report

    output = _two_crop_output(tmp_path)
    (output / mine).parent.mkdir(parents=True, exist_ok=True)
    (output / mine).write_text("mine")
    tool = {"webdataset": lambda: exports.export_webdataset(str(output), samples_per_shard=1),
            "report": lambda: write_report(str(output)),
            "openlineage": lambda: exports.write_openlineage(str(output))}[mine.split("/")[0]]
    with pytest.raises(exports.ExportError, match=r"holds files that no earlier .* recorded"):
        tool()
    assert (output / mine).read_text() == "mine"
    assert sorted(p.name for p in (output / mine).parent.iterdir()) == [Path(mine).name]


def test_a_rewritten_export_replaces_and_deletes_only_its_own_earlier_files(tmp_path):
    output = _two_crop_output(tmp_path)
    assert len(exports.export_webdataset(str(output), samples_per_shard=1)) == 2
    folder = output / "webdataset"
    # an export that crashed after writing a temporary file leaves nothing it cannot clean up
    (folder / f"shard-000001.tar.tmp-{'a' * 32}").write_bytes(b"half")
    (folder / f"_written.json.tmp-{'b' * 32}").write_bytes(b"half")
    assert len(exports.export_webdataset(str(output))) == 1  # one tar per crops shard
    assert sorted(p.name for p in folder.iterdir()) == ["_written.json", "shard-000000.tar"]
    assert json.loads((folder / "_written.json").read_text()) == {"files": ["shard-000000.tar"]}


def test_two_exports_at_once_leave_a_folder_the_next_export_accepts(tmp_path):
    from jobs.runs import tool_files
    from jobs.storage import resolve

    output = resolve(str(_two_crop_output(tmp_path)))
    ten = [f"shard-{i:06d}.tar" for i in range(10)]
    with tool_files(output, "webdataset", ten[:5]) as first:
        with tool_files(output, "webdataset", ten) as second:  # started later, done first
            for name in ten:
                (Path(second.path) / name).write_bytes(b"second")
        for name in ten[:5]:
            (Path(first.path) / name).write_bytes(b"first")
    assert len(exports.export_webdataset(str(output.path))) == 1  # accepted, and tidied
    assert sorted(p.name for p in Path(output.path, "webdataset").iterdir()) == [
        "_written.json", "shard-000000.tar"]
