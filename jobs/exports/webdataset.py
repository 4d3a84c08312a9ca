"""WebDataset tar shards of a committed run's crops: ``OUTPUT/webdataset/shard-NNNNNN.tar``.

Sample layout: each crop is one sample whose key is its ``crop_id``, with two members,
``<crop_id>.<ext>`` (the crop bytes exactly as stored: ``png``, ``jpg`` or ``webp``; for ``npy``
runs the float32 tensor as ``np.save`` bytes) and ``<crop_id>.json``::

    {"crop_id", "image_id", "detection_id", "width", "height", "format",
     "predictions": {x_min, y_min, x_max, y_max, mask, keypoints, polygon,
                     class_name, class_id, confidence},     # in the CROP frame, as in crops/
     "lineage": {...the lineage row...}}                     # timestamps as ISO 8601 strings

Tars are byte-identical across exports of the same run: members sorted by name, zero mtime,
uid and gid, no user or group names, USTAR headers.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from jobs import schema
from jobs.convert import PASSED_THROUGH
from jobs.exports.jsonsafe import jsonable
from jobs.runs import CommittedRun, RunError, open_run, tool_files
from jobs.storage import write_atomic

__all__ = [
    "PREDICTION_COLUMNS",
    "WEBDATASET_FOLDER",
    "export_webdataset",
    "sample_json",
    "tar_bytes",
]

# Every crops column that describes the crop's detection (translated, or passed through)
PREDICTION_COLUMNS = (*schema.BOX_COLUMNS, "mask", "keypoints", "polygon", schema.ORIENTED_BOX,
                      *PASSED_THROUGH)
WEBDATASET_FOLDER = "webdataset"


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar archive of ``(name, data)`` members in sorted name order, with fixed headers so the
    same members always give the same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members, key=lambda member: member[0]):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            # Headers carry no clock, owner or host, so reruns are byte-identical.
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def export_webdataset(output_url: str, samples_per_shard: int | None = None) -> list[str]:
    """Write the run's crops as WebDataset tar shards under ``OUTPUT/webdataset/``.

    Args:
        output_url: a committed run's output folder (local path or URL).
        samples_per_shard: crops per tar; ``None`` writes one tar per crops shard of the run.

    Returns:
        The URLs of the tars written, ``shard-000000.tar`` first; empty when the run has no
        crops. Tars of an earlier export that this one did not rewrite are deleted.
    """
    if samples_per_shard is not None and samples_per_shard < 1:
        raise RunError(f"--samples-per-shard must be a positive integer, got "
                          f"{samples_per_shard}")
    run = open_run(output_url)
    rows = [entry.get("rows") for _, entry in run.files("crops")]
    if any(not isinstance(n, int) for n in rows):
        raise RunError(f"the manifest of {run.output.url} does not give every crops file's "
                       f"rows; expected them")
    tars = (sum(n > 0 for n in rows) if samples_per_shard is None
            else -(-sum(rows) // samples_per_shard))
    names = [f"shard-{index:06d}.tar" for index in range(tars)]
    written = []
    # Replaces and deletes only the tars an earlier export wrote (runs.tool_files).
    with tool_files(run.output, WEBDATASET_FOLDER, names) as folder:
        for name, samples in zip(names, _sample_groups(run, samples_per_shard), strict=True):
            location = folder.child(name)
            write_atomic(location, tar_bytes(m for sample in samples for m in sample))
            written.append(location.url)
    return written


def _sample_groups(run: CommittedRun, samples_per_shard: int | None) -> Iterator[list]:
    """Lists of samples (each a list of tar members), one list per tar to write."""
    pending: list = []
    for samples in _samples_by_shard(run):
        if samples_per_shard is None:
            if samples:
                yield samples
            continue
        pending += samples
        while len(pending) >= samples_per_shard:
            yield pending[:samples_per_shard]
            pending = pending[samples_per_shard:]
    if pending:
        yield pending


def _samples_by_shard(run: CommittedRun) -> Iterator[list]:
    lineage_files = dict(run.files("lineage"))
    for shard, entry in run.files("crops"):
        crops = run.read(entry)
        if crops.num_rows == 0:
            yield []
            continue
        if shard not in lineage_files:
            raise RunError(f"shard {shard} of {run.output.url} lists a crops file but no "
                              f"lineage file; expected both")
        lineage = {row["crop_id"]: row for row in run.read(lineage_files[shard]).to_pylist()}
        payloads = _crop_payloads(crops)
        samples = []
        for row, (extension, data) in zip(crops.drop_columns(["crop"]).to_pylist(), payloads,
                                          strict=True):
            crop_id = row["crop_id"]
            if crop_id not in lineage:
                raise RunError(f"crop {crop_id} of shard {shard} has no lineage row")
            document = sample_json(row, lineage[crop_id], extension)
            samples.append([(f"{crop_id}.{extension}", data), (f"{crop_id}.json", document)])
        # Sorted by key so a sample's members stay adjacent and the order is reproducible.
        samples.sort(key=lambda sample: sample[0][0])
        yield samples


def _crop_payloads(crops: pa.Table) -> list[tuple[str, bytes]]:
    """``(extension, bytes)`` of every crop: encoded images as stored, tensors as ``.npy``."""
    column = crops.column("crop")
    if schema.is_npy_crop_type(column.type):
        tensors = schema.npy_crop_tensors(column)
        payloads = []
        for tensor in tensors:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(tensor), allow_pickle=False)
            payloads.append(("npy", buffer.getvalue()))
        return payloads
    if not schema._is_hf_image(column.type):
        raise RunError(f"expected the crops column 'crop' to be struct<bytes, path> or a "
                          f"float32 [h][w][c] tensor, got {column.type}")
    payloads = []
    for crop_id, value in zip(crops.column("crop_id").to_pylist(), column.to_pylist(),
                              strict=True):
        data = None if value is None else value.get("bytes")
        if not data:
            raise RunError(f"crop {crop_id} has no image bytes in its 'crop' column")
        payloads.append((_image_extension(value.get("path"), data), data))
    return payloads


_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"))


def _image_extension(path: str | None, data: bytes) -> str:
    """The crop's extension from its HF ``path`` (``<crop_id>.png``), else from its magic bytes."""
    if path and "." in path.rsplit("/", 1)[-1]:
        return path.rsplit(".", 1)[-1].lower()
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


def sample_json(crop_row: dict, lineage_row: dict, extension: str) -> bytes:
    """The ``<crop_id>.json`` member: the crop's translated predictions and its lineage row."""
    document = {
        "crop_id": crop_row["crop_id"],
        "image_id": crop_row.get(schema.IMAGE_ID),
        "detection_id": crop_row.get(schema.DETECTION_ID),
        "width": crop_row.get("width"),
        "height": crop_row.get("height"),
        "format": extension,
        "predictions": {name: crop_row[name] for name in PREDICTION_COLUMNS if name in crop_row},
        "lineage": lineage_row,
    }
    return json.dumps(jsonable(document), sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
