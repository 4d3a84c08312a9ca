"""The crop UDF in-process (no Ray): how a shard's columns are built."""

from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import steps, udfs
from jobs.pipeline import JobConfig, asdict_shallow, prepare
from tests.jobs.builders import detections_table, images_table, write_parquet

DYNAMIC = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0}


def _crop_in_process(tmp_path, name: str) -> pa.Table:
    """Every planned unit through ``crop_units`` in this process; the crops written."""
    config = JobConfig(images=str(tmp_path / "images.parquet"),
                       detections=str(tmp_path / "detections.parquet"),
                       output=str(tmp_path / name), step=steps.parse_step(DYNAMIC))
    prepared = prepare(config)
    udfs._DETECTIONS_CACHE.clear()
    udfs._DETECTIONS_CACHE[prepared.context.fingerprint] = prepared.plan.detections
    context = udfs.JobContext(**{**asdict_shallow(prepared.context), "detections": "local"})
    for unit in prepared.plan.units:
        udfs.crop_units(pa.Table.from_pylist([asdict(unit) | {"skip_rows": list(unit.skip_rows)}]),
                        context)
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
