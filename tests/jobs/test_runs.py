"""jobs.runs: reading a committed run back through its manifest. Fast: the runs are written by
hand here (a manifest listing its shards inline, as manifests before the shard index did), and
by the job's own sinks in tests/jobs/test_exports.py and test_report.py."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import runs, schema


def _committed(tmp_path, shards: dict[str, dict[str, pa.Table]], status: str = "committed"):
    """A run folder whose manifest lists ``{shard: {kind: table}}`` inline."""
    listed = []
    for shard, tables in shards.items():
        files = []
        for kind, table in tables.items():
            path = f"{kind}/{shard}.parquet"
            (tmp_path / kind).mkdir(exist_ok=True)
            pq.write_table(table, tmp_path / path)
            files.append({"kind": kind, "path": path, "rows": table.num_rows,
                          "bytes": (tmp_path / path).stat().st_size, "sha256": "0" * 64})
        listed.append({"shard": shard, "files": files, "counts": {}})
    (tmp_path / "_manifest.json").write_text(json.dumps(
        {"run_id": "run-x", "status": status, "shards": listed}))
    return tmp_path


def test_open_run_reads_only_the_listed_files_in_shard_order(tmp_path):
    output = _committed(tmp_path, {
        "s1": {"crops": pa.table({"crop_id": ["a", "b"], "width": [1, 2]}),
               "lineage": pa.table({"crop_id": ["a", "b"]})},
        "s0": {"crops": pa.table({"crop_id": ["c"], "width": [3]})},
    })
    pq.write_table(pa.table({"crop_id": ["stray"], "width": [9]}), tmp_path / "crops" / "x.parquet")
    run = runs.open_run(str(output))
    assert [shard["shard"] for shard in run.shards] == ["s1", "s0"]
    assert [(s, e["path"]) for s, e in run.files("crops")] == [("s1", "crops/s1.parquet"),
                                                            ("s0", "crops/s0.parquet")]
    assert run.files("errors") == []
    assert run.read_all("crops").column("crop_id").to_pylist() == ["a", "b", "c"]
    assert run.read_all("errors") is None
    # columns a file lacks are left out of that file's read, not an error
    assert run.read_all("crops", ["crop_id", "missing"]).column_names == ["crop_id"]
    entry = run.files("crops")[0][1]
    assert run.read_schema(entry).names == ["crop_id", "width"]
    assert run.read(entry, filters=[("width", ">", 1)]).column("crop_id").to_pylist() == ["b"]
    assert run.location(entry).path == str(tmp_path / "crops" / "s1.parquet")


def test_files_of_an_unknown_kind_is_refused(tmp_path):
    run = runs.open_run(str(_committed(tmp_path, {})))
    with pytest.raises(ValueError, match=r"kind must be one of crops, lineage, errors, got 'x'"):
        run.files("x")


def test_a_folder_without_a_manifest_is_not_a_run(tmp_path):
    with pytest.raises(runs.RunError, match=r"expected a committed run in .* but it has no "
                                            r"_manifest.json"):
        runs.open_run(str(tmp_path))


def test_a_manifest_that_is_not_committed_is_refused(tmp_path):
    with pytest.raises(runs.RunError, match=r"expected a committed manifest in .* got status "
                                            r"'running'"):
        runs.open_run(str(_committed(tmp_path, {}, status="running")))


def test_a_listed_file_that_is_gone_fails_with_its_url(tmp_path):
    output = _committed(tmp_path, {"s0": {"crops": pa.table({"crop_id": ["c"]})}})
    (tmp_path / "crops" / "s0.parquet").unlink()
    run = runs.open_run(str(output))
    with pytest.raises(OSError, match=r"cannot read Parquet file .*crops/s0\.parquet"):
        run.read_all("crops")


def test_hf_features_metadata_names_only_the_image_column():
    image = pa.schema([("crop", schema.HF_IMAGE_TYPE), ("crop_id", pa.string())])
    assert json.loads(runs.hf_features_metadata(image)[runs.HF_METADATA_KEY]) == {
        "info": {"features": {"crop": {"_type": "Image"}}}}
    table = pa.table({"crop": pa.array([None], schema.HF_IMAGE_TYPE)}).replace_schema_metadata(
        {b"other": b"kept"})
    merged = runs.with_hf_features(table).schema.metadata
    assert merged[b"other"] == b"kept" and runs.HF_METADATA_KEY in merged
    plain = pa.table({"crop": pa.array([b"x"])})
    assert runs.with_hf_features(plain) is plain
