"""Export a committed run to other tools: WebDataset tar shards and OpenLineage run events.

``python -m jobs export OUTPUT --webdataset --openlineage`` reads only what the run's
``_manifest.json`` lists (so files of a crashed attempt are never exported) and writes beside it::

    webdataset/shard-000000.tar     one tar per crops shard (or per --samples-per-shard samples)
    openlineage/events.jsonl        a START and a COMPLETE OpenLineage RunEvent, one per line

WebDataset sample layout: each crop is one sample whose key is its ``crop_id``, with two members,
``<crop_id>.<ext>`` (the crop bytes exactly as stored: ``png``, ``jpg`` or ``webp``; for ``npy``
runs the float32 tensor as ``np.save`` bytes) and ``<crop_id>.json``::

    {"crop_id", "image_id", "detection_id", "width", "height", "format",
     "predictions": {x_min, y_min, x_max, y_max, mask, keypoints, polygon,
                     class_name, class_id, confidence},     # in the CROP frame, as in crops/
     "lineage": {...the lineage row...}}                     # timestamps as ISO 8601 strings

Tars are byte-identical across exports of the same run: members sorted by name, zero mtime,
uid and gid, no user or group names, USTAR headers.

``open_run`` is the reader the ``report`` command shares.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import decimal
import importlib.metadata
import io
import json
import math
import os
import re
import sys
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import schema
from jobs.sinks import KINDS, read_manifest
from jobs.storage import (
    Location,
    StorageError,
    delete,
    exists,
    list_files,
    resolve,
    write_atomic,
)

__all__ = [
    "CommittedRun",
    "ExportError",
    "add_arguments",
    "command",
    "dataset_name",
    "export_webdataset",
    "hf_features_metadata",
    "with_hf_features",
    "open_run",
    "default_producer",
    "openlineage_events",
    "sample_json",
    "tar_bytes",
    "write_openlineage",
]

# OpenLineage's "producer": a URI naming the software that wrote the events. The default names
# this package and its version; a deployment sets its own (its repository URL at a tag, say)
# with --producer or CROPCORE_OPENLINEAGE_PRODUCER.
PRODUCER_ENV = "CROPCORE_OPENLINEAGE_PRODUCER"
JOB_NAMESPACE = "cropcore"
RUN_EVENT_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_FACETS = "https://openlineage.io/spec/facets"
FACET_SCHEMA_URLS = {
    "schema": f"{_FACETS}/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
    "outputStatistics": f"{_FACETS}/1-0-2/OutputStatisticsOutputDatasetFacet.json"
                        "#/$defs/OutputStatisticsOutputDatasetFacet",
    "jobType": f"{_FACETS}/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
    "documentation": f"{_FACETS}/1-1-0/DocumentationJobFacet.json#/$defs/DocumentationJobFacet",
    "processing_engine": f"{_FACETS}/1-1-1/ProcessingEngineRunFacet.json"
                         "#/$defs/ProcessingEngineRunFacet",
}
# run ids are names ("run-84efd92d7132"); OpenLineage wants a UUID, the same one on every export.
# A fixed seed (not the producer), so a run's UUID never depends on who exports it.
RUN_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/cropcore/cropcore")

PREDICTION_COLUMNS = (*schema.BOX_COLUMNS, "mask", "keypoints", "polygon", "class_name",
                      "class_id", "confidence")
WEBDATASET_FOLDER = "webdataset"
OPENLINEAGE_FILE = "openlineage/events.jsonl"

EXAMPLE = """example:
  python -m jobs export demo-output/crops-run --webdataset
  python -m jobs export s3://bucket/crops-v1/ --webdataset --samples-per-shard 1000 --openlineage
then read the shards with webdataset:
  wds.WebDataset("demo-output/crops-run/webdataset/shard-{000000..000001}.tar").decode()"""


HF_METADATA_KEY = b"huggingface"


def hf_features_metadata(arrow_schema: pa.Schema) -> dict[bytes, bytes]:
    """Schema metadata that makes Hugging Face ``datasets`` decode the crops with no cast:
    ``{b"huggingface": {"info": {"features": {"crop": {"_type": "Image"}}}}}`` when ``crop`` is
    the ``struct<bytes, path>`` image column. ``datasets`` takes each column's feature from this
    metadata when its Arrow type matches, and derives the others from their Arrow types, so only
    the image column is named. Empty for other crop types.
    """
    if "crop" not in arrow_schema.names or arrow_schema.field("crop").type != schema.HF_IMAGE_TYPE:
        return {}
    features = {"crop": {"_type": "Image"}}
    return {HF_METADATA_KEY: json.dumps({"info": {"features": features}},
                                        separators=(",", ":")).encode()}


def with_hf_features(table: pa.Table) -> pa.Table:
    """``table`` with ``hf_features_metadata`` merged into its schema metadata."""
    extra = hf_features_metadata(table.schema)
    if not extra:
        return table
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})


class ExportError(ValueError):
    """The output folder cannot be exported as asked (one clear line, no traceback)."""


# -- reading a committed run ------------------------------------------------------------------
@dataclass(frozen=True)
class CommittedRun:
    """A committed run's output folder and its manifest; reads only the files the manifest lists.

    ``files(kind)`` gives ``(shard, file entry)`` pairs in shard order, where a file entry is the
    manifest's ``{"kind", "path", "rows", "bytes", "sha256"}``.
    """

    output: Location
    manifest: dict

    def files(self, kind: str) -> list[tuple[str, dict]]:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return [(shard["shard"], entry) for shard in self.manifest.get("shards", [])
                for entry in shard.get("files", []) if entry.get("kind") == kind]

    def location(self, entry: dict) -> Location:
        return self.output.child(entry["path"])

    def read(self, entry: dict, columns: list[str] | None = None, filters=None) -> pa.Table:
        location = self.location(entry)
        try:
            return pq.read_table(location.path, filesystem=location.fs, columns=columns,
                                 filters=filters)
        except (OSError, pa.ArrowInvalid) as error:
            raise StorageError(f"cannot read {location.url}: {str(error).splitlines()[0]}") \
                from None

    def read_schema(self, entry: dict) -> pa.Schema:
        location = self.location(entry)
        try:
            with location.fs.open_input_file(location.path) as handle:
                return pq.read_schema(handle)
        except (OSError, pa.ArrowInvalid) as error:
            raise StorageError(f"cannot read {location.url}: {str(error).splitlines()[0]}") \
                from None

    def read_all(self, kind: str, columns: list[str] | None = None) -> pa.Table | None:
        """Every committed file of ``kind`` concatenated, or ``None`` when there is none."""
        tables = []
        for _, entry in self.files(kind):
            wanted = columns
            if columns is not None:
                names = set(self.read_schema(entry).names)
                wanted = [c for c in columns if c in names]
            tables.append(self.read(entry, wanted))
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")


def open_run(output_url: str) -> CommittedRun:
    """The committed run at ``output_url``; ``ExportError`` when it holds no ``_manifest.json``."""
    output = resolve(output_url)
    manifest = read_manifest(output)
    if manifest is None:
        raise ExportError(f"expected a committed run in {output.url}, but it has no "
                          f"_manifest.json (wrong folder, or the run has not finished)")
    if manifest.get("status") != "committed" or "shards" not in manifest:
        raise ExportError(f"expected a committed manifest in {output.url}, got status "
                          f"{manifest.get('status')!r}")
    return CommittedRun(output, manifest)


# -- WebDataset -------------------------------------------------------------------------------
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
        raise ExportError(f"--samples-per-shard must be a positive integer, got "
                          f"{samples_per_shard}")
    run = open_run(output_url)
    folder = run.output.child(WEBDATASET_FOLDER)
    written = []
    for index, samples in enumerate(_sample_groups(run, samples_per_shard)):
        location = folder.child(f"shard-{index:06d}.tar")
        write_atomic(location, tar_bytes(m for sample in samples for m in sample))
        written.append(location.url)
    _delete_stale_tars(folder, keep={u.rsplit("/", 1)[-1] for u in written})
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
            raise ExportError(f"shard {shard} of {run.output.url} lists a crops file but no "
                              f"lineage file; expected both")
        lineage = {row["crop_id"]: row for row in run.read(lineage_files[shard]).to_pylist()}
        payloads = _crop_payloads(crops)
        samples = []
        for row, (extension, data) in zip(crops.drop_columns(["crop"]).to_pylist(), payloads,
                                          strict=True):
            crop_id = row["crop_id"]
            if crop_id not in lineage:
                raise ExportError(f"crop {crop_id} of shard {shard} has no lineage row")
            document = sample_json(row, lineage[crop_id], extension)
            samples.append([(f"{crop_id}.{extension}", data), (f"{crop_id}.json", document)])
        # Sorted by key so a sample's members stay adjacent and the order is reproducible.
        samples.sort(key=lambda sample: sample[0][0])
        yield samples


def _crop_payloads(crops: pa.Table) -> list[tuple[str, bytes]]:
    """``(extension, bytes)`` of every crop: encoded images as stored, tensors as ``.npy``."""
    column = crops.column("crop")
    if isinstance(column.type, pa.FixedShapeTensorType):
        tensors = column.combine_chunks().to_numpy_ndarray()
        payloads = []
        for tensor in tensors:
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(tensor), allow_pickle=False)
            payloads.append(("npy", buffer.getvalue()))
        return payloads
    if not schema._is_hf_image(column.type):
        raise ExportError(f"expected the crops column 'crop' to be struct<bytes, path> or a "
                          f"fixed_shape_tensor, got {column.type}")
    payloads = []
    for crop_id, value in zip(crops.column("crop_id").to_pylist(), column.to_pylist(),
                              strict=True):
        data = None if value is None else value.get("bytes")
        if not data:
            raise ExportError(f"crop {crop_id} has no image bytes in its 'crop' column")
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
    return json.dumps(_jsonable(document), sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def _jsonable(value):
    """``value`` with Arrow's Python types made JSON-safe: timestamps as ISO 8601, non-finite
    floats as null (strict JSON has no NaN), bytes as hex."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def _delete_stale_tars(folder: Location, keep: set[str]) -> None:
    if not exists(folder):
        return
    for location in list_files(folder, suffix=".tar"):
        name = location.path.rsplit("/", 1)[-1]
        if re.fullmatch(r"shard-\d{6}\.tar", name) and name not in keep:
            delete(location)


# -- OpenLineage ------------------------------------------------------------------------------
def dataset_name(url: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a storage URL, after the spec's naming rules:
    ``s3://bucket/key`` -> ``("s3://bucket", "key")``; a local path -> ``("file", "/abs/path")``;
    any other ``scheme://host/path`` -> ``("scheme://host", "/path")``."""
    url = str(url)
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://([^/]*)(.*)$", url)
    if match is None or match.group(1).lower() in ("file", "local"):
        path = url if match is None else match.group(3) or "/"
        return "file", os.path.abspath(path).rstrip("/") or "/"
    scheme, authority, path = match.group(1).lower(), match.group(2), match.group(3)
    if scheme in ("s3", "s3a", "gs", "gcs", "abfs", "abfss", "wasbs"):
        return f"{scheme}://{authority}", path.strip("/")
    return f"{scheme}://{authority}", path.rstrip("/") or "/"


def default_producer() -> str:
    """``$CROPCORE_OPENLINEAGE_PRODUCER`` if set, else ``urn:cropcore:<package version>``."""
    configured = os.environ.get(PRODUCER_ENV, "").strip()
    if configured:
        return configured
    try:
        version = importlib.metadata.version("cropcore")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"urn:cropcore:{version}"


def _check_producer(producer: str) -> str:
    if not isinstance(producer, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+",
                                                         producer):
        raise ExportError(f"the OpenLineage producer must be a URI such as "
                          f"https://github.com/org/repo/tree/v1.2 or urn:org:tool, got "
                          f"{producer!r}")
    return producer


def _facet(kind: str, producer: str, **fields) -> dict:
    return {"_producer": producer, "_schemaURL": FACET_SCHEMA_URLS[kind], **fields}


def _schema_fields(arrow_schema: pa.Schema | pa.StructType) -> list[dict]:
    """SchemaDatasetFacet fields of an Arrow schema; struct columns list their children."""
    fields = []
    for field in arrow_schema:
        entry = {"name": field.name, "type": str(field.type)}
        if pa.types.is_struct(field.type):
            entry["type"] = "struct"
            entry["fields"] = _schema_fields(field.type)
        fields.append(entry)
    return fields


def _input_schema(url: str) -> pa.Schema | None:
    """The schema of an input's first Parquet file, or ``None`` when it cannot be read now
    (inputs may have moved since the run; the events are still worth writing)."""
    try:
        files = list_files(resolve(url))
        if not files:
            return None
        with files[0].fs.open_input_file(files[0].path) as handle:
            return pq.read_schema(handle)
    except (StorageError, OSError, pa.ArrowInvalid):
        return None


def _dataset(url: str, arrow_schema: pa.Schema | None, producer: str) -> dict:
    namespace, name = dataset_name(url)
    dataset = {"namespace": namespace, "name": name, "facets": {}}
    if arrow_schema is not None:
        dataset["facets"]["schema"] = _facet("schema", producer,
                                             fields=_schema_fields(arrow_schema))
    return dataset


def _event_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _run_times(run: CommittedRun) -> tuple[dt.datetime, dt.datetime]:
    """When the run started (its lineage ``created_at``) and completed (the manifest's commit,
    its modification time); either falls back on the other."""
    completed = None
    try:
        info = run.output.fs.get_file_info(run.output.child("_manifest.json").path)
        completed = info.mtime
    except OSError:
        pass
    if completed is not None and completed.tzinfo is None:
        completed = completed.replace(tzinfo=dt.UTC)
    started = None
    for _, entry in run.files("lineage"):
        if entry.get("rows"):
            values = run.read(entry, ["created_at"]).column("created_at").drop_null()
            started = min(values.to_pylist(), default=None)
            break
    started = started or completed or dt.datetime.fromtimestamp(0, dt.UTC)
    completed = max(completed or started, started)
    return started, completed


def openlineage_events(output_url: str, producer: str | None = None) -> list[dict]:
    """The run's OpenLineage RunEvents: ``[START, COMPLETE]``, written by ``producer`` (default
    ``default_producer()``).

    Both carry the same ``run.runId`` (a UUID5 of the run id, stable across exports), the job
    ``cropcore`` / the step type, the inputs (images, detections) and the outputs (crops,
    lineage, and errors when any) with their schema facets; COMPLETE adds ``outputStatistics``
    (rows, bytes, files) from the manifest.
    """
    producer = _check_producer(producer or default_producer())
    run = open_run(output_url)
    manifest = run.manifest
    step = manifest.get("step") or {}
    step_type = str(step.get("type", "unknown"))
    started, completed = _run_times(run)
    run_object = {
        "runId": str(uuid.uuid5(RUN_UUID_NAMESPACE, str(manifest.get("run_id")))),
        "facets": {"processing_engine": _facet(
            "processing_engine", producer, name="cropcore",
            version=str(manifest.get("code_version")),
            openlineageAdapterVersion=str(manifest.get("code_version")))},
    }
    job = {
        "namespace": JOB_NAMESPACE,
        "name": re.sub(r"[^A-Za-z0-9_.-]+", ".", step_type).strip("."),
        "facets": {
            "jobType": _facet("jobType", producer, processingType="BATCH", integration="CROPCORE",
                              jobType="JOB"),
            "documentation": _facet("documentation", producer, description=(
                f"cropcore crop step {step_type} with parameters "
                f"{json.dumps(step, sort_keys=True)}")),
        },
    }
    inputs = [_dataset(url, _input_schema(url), producer) for key in ("images", "detections")
              if (url := (manifest.get("inputs") or {}).get(key))]
    outputs, statistics = [], []
    for kind in KINDS:
        files = run.files(kind)
        if not files and kind == "errors":
            continue
        arrow_schema = run.read_schema(files[0][1]) if files else None
        outputs.append(_dataset(run.output.child(kind).url, arrow_schema, producer))
        statistics.append(_facet("outputStatistics", producer,
                                 rowCount=sum(int(e.get("rows", 0)) for _, e in files),
                                 size=sum(int(e.get("bytes", 0)) for _, e in files),
                                 fileCount=len(files)))
    events = []
    for event_type, when in (("START", started), ("COMPLETE", completed)):
        event_outputs = copy.deepcopy(outputs)
        if event_type == "COMPLETE":
            for dataset, stats in zip(event_outputs, statistics, strict=True):
                dataset["outputFacets"] = {"outputStatistics": stats}
        events.append({
            "eventType": event_type,
            "eventTime": _event_time(when),
            "run": copy.deepcopy(run_object),
            "job": copy.deepcopy(job),
            "inputs": copy.deepcopy(inputs),
            "outputs": event_outputs,
            "producer": producer,
            "schemaURL": RUN_EVENT_SCHEMA_URL,
        })
    return events


def write_openlineage(output_url: str, producer: str | None = None) -> str:
    """Write ``OUTPUT/openlineage/events.jsonl`` (one RunEvent per line); returns its URL."""
    events = openlineage_events(output_url, producer)
    location = resolve(output_url).child(OPENLINEAGE_FILE)
    lines = [json.dumps(_jsonable(event), sort_keys=True, separators=(",", ":"),
                        allow_nan=False) for event in events]
    write_atomic(location, ("\n".join(lines) + "\n").encode("utf-8"))
    return location.url


# -- the command ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Export a committed run's output: WebDataset tar shards of its crops\n"
                          "(predictions and lineage as JSON beside each crop) and OpenLineage\n"
                          "run events.")
    parser.epilog = EXAMPLE
    parser.add_argument("output", metavar="OUTPUT", help="the run's output folder (path or URL)")
    parser.add_argument("--webdataset", action="store_true",
                        help="write OUTPUT/webdataset/shard-NNNNNN.tar")
    parser.add_argument("--samples-per-shard", type=int, default=None,
                        help="crops per tar (default: one tar per crops shard of the run)")
    parser.add_argument("--openlineage", action="store_true",
                        help="write OUTPUT/openlineage/events.jsonl (START and COMPLETE)")
    parser.add_argument("--producer", default=None,
                        help=f"OpenLineage producer URI (default: ${PRODUCER_ENV}, else "
                             f"urn:cropcore:<version>)")


def command(args: argparse.Namespace) -> int:
    if not (args.webdataset or args.openlineage):
        print("error: nothing to export: expected --webdataset and/or --openlineage",
              file=sys.stderr)
        return 2
    try:
        if args.webdataset:
            tars = export_webdataset(args.output, args.samples_per_shard)
            print(f"webdataset  {len(tars)} tar shards"
                  + "".join(f"\n  {url}" for url in tars[:3])
                  + (f"\n  ... {len(tars) - 3} more" if len(tars) > 3 else ""))
        if args.openlineage:
            print(f"openlineage {write_openlineage(args.output, args.producer)}")
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
