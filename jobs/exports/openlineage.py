"""OpenLineage run events of a committed run: ``OUTPUT/openlineage/events.jsonl``, a START and
a COMPLETE RunEvent, one per line."""

from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import json
import os
import re
import uuid

import pyarrow as pa

from jobs.exports.jsonsafe import jsonable
from jobs.runs import CommittedRun, RunError, open_run, tool_files
from jobs.sinks import KINDS
from jobs.storage import StorageError, file_info, list_files, open_parquet, resolve, write_atomic

__all__ = [
    "JOB_NAMESPACE",
    "OPENLINEAGE_FILE",
    "PRODUCER_ENV",
    "RUN_UUID_NAMESPACE",
    "dataset_name",
    "default_producer",
    "openlineage_events",
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
OPENLINEAGE_FILE = "openlineage/events.jsonl"


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
        raise RunError(f"the OpenLineage producer must be a URI such as "
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
        return open_parquet(files[0]).schema_arrow
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
        completed = file_info(run.output.child("_manifest.json")).mtime
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
    lines = [json.dumps(jsonable(event), sort_keys=True, separators=(",", ":"),
                        allow_nan=False) for event in events]
    folder, name = OPENLINEAGE_FILE.split("/")
    with tool_files(resolve(output_url), folder, [name]) as location:
        write_atomic(location.child(name), ("\n".join(lines) + "\n").encode("utf-8"))
    return location.child(name).url
