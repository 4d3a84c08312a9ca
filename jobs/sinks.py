"""Output layout and commit protocol.

Under ``--output``::

    crops/part-<shard>.parquet      crop rows
    lineage/part-<shard>.parquet    one lineage row per crop
    errors/part-<shard>.parquet     one row per input that produced no crop (only when any)
    _claim.json                     the run that owns the folder (``jobs.ownership``): first
    _shards/<shard>.json            a shard's commit marker: its files, rows, bytes, sha256
    _manifest.json                  the run's commit: written last, atomically

A shard's files are written first and its marker last, each atomically, so a marker means the
shard is complete. Shard names are hashes of the run fingerprint and the shard's input rows: a
retried task rewrites identical names, and a rerun skips shards whose marker exists. Data files
are never deleted: a retried shard rewrites the same names, so a complete run has a marker for
every data file it wrote. Only the temporary files of its own failed attempts are removed (see
``jobs.ownership``), and readers go through the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.storage import (
    Location,
    StorageError,
    delete,
    exists,
    list_files,
    read_bytes,
    write_atomic,
)

__all__ = ["INDEX_ROWS_PER_PART", "INDEX_SCHEMA", "KINDS", "IndexPart", "add_counts",
           "commit_run", "parquet_bytes", "read_manifest", "read_marker", "read_shard_index",
           "sum_parts", "write_index_part", "write_shard"]

KINDS = ("crops", "lineage", "errors")
MANIFEST = "_manifest.json"
MARKERS = "_shards"
INDEX = "_index"
# One row per committed shard: what its marker says. Counts stay JSON (a nested mapping).
INDEX_SCHEMA = pa.schema([
    ("shard", pa.string()),
    ("files", pa.list_(pa.struct([("kind", pa.string()), ("path", pa.string()),
                                  ("rows", pa.int64()), ("bytes", pa.int64()),
                                  ("sha256", pa.string())]))),
    ("counts", pa.string()),
])
INDEX_ROWS_PER_PART = 10_000  # shards per index file: a million shards make 100 files


@lru_cache(maxsize=64)
def _column_paths(schema: pa.Schema) -> list[str]:
    """Parquet leaf column paths (``crop.bytes``, ``keypoints.list.element.x``...) of a schema."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    """A table as a Parquet file in memory: zstd for metadata columns; encoded images (binary
    leaves) are stored as they are, since compressing, dictionary-encoding or collecting
    statistics on JPEG or PNG bytes costs time and saves nothing. Arrow's own buffer stream,
    not ``io.BytesIO``: through a Python file object a 30 MB shard took 7x longer."""
    paths = _column_paths(table.schema)
    binary = {field.name for field in table.schema if pa.types.is_binary(field.type)}
    blobs = {p for p in paths if p in binary or p.endswith(".bytes")}
    plain = [p for p in paths if p not in blobs]
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, row_group_size=1024,
        compression={p: "none" if p in blobs else "zstd" for p in paths},
        use_dictionary=plain, write_statistics=plain,
    )
    return sink.getvalue()


def write_shard(output: Location, shard: str, tables: dict[str, pa.Table], counts: dict,
                fingerprint: str = "") -> dict:
    """Write a shard's tables, then its marker; returns the marker's content. Temporary files
    carry the run's fingerprint prefix (see ``jobs.storage.write_atomic``)."""
    tag = fingerprint[:16]
    files = []
    for kind in KINDS:
        table = tables.get(kind)
        if table is None or (kind == "errors" and table.num_rows == 0):
            continue
        data = parquet_bytes(table)
        relative = f"{kind}/part-{shard}.parquet"
        write_atomic(output.child(relative), data, tag)
        files.append({"kind": kind, "path": relative, "rows": table.num_rows,
                      "bytes": data.size, "sha256": hashlib.sha256(data).hexdigest()})
    marker = {"shard": shard, "files": files, "counts": counts}
    data = json.dumps(marker, sort_keys=True).encode()
    write_atomic(output.child(MARKERS, f"{shard}.json"), data, tag)
    return marker


def read_marker(output: Location, shard: str) -> dict | None:
    """A committed shard's marker, or ``None`` when the shard has not been committed."""
    location = output.child(MARKERS, f"{shard}.json")
    try:
        if not exists(location):
            return None
        return json.loads(read_bytes(location))
    except (StorageError, json.JSONDecodeError):
        return None  # unreadable marker: redo the shard, which rewrites the same files


def read_manifest(output: Location) -> dict | None:
    location = output.child(MANIFEST)
    if not exists(location):
        return None
    try:
        manifest = json.loads(read_bytes(location))
    except json.JSONDecodeError as error:
        raise StorageError(f"{location.url} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise StorageError(f"{location.url} is not a manifest this job wrote (a JSON "
                           f"{type(manifest).__name__})")
    return manifest


def add_counts(total: dict, counts: dict) -> dict:
    """Sum shard counts into ``total`` (numbers add; the ``errors`` mapping adds per reason)."""
    for key, value in counts.items():
        if isinstance(value, dict):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


@dataclass(frozen=True)
class IndexPart:
    """One written index file: its path (relative to the output) and what its shards hold."""

    path: str
    shards: int
    resumed: int  # shards that an earlier attempt of the run had committed
    counts: dict


def write_index_part(output: Location, fingerprint: str, markers: list[dict]) -> IndexPart:
    """Write markers as one Parquet index file, named after the run and the shards it lists
    (the same shards give the same name, so a retried write replaces its file)."""
    markers = sorted(markers, key=lambda m: m["shard"])
    names = "\n".join(m["shard"] for m in markers)
    digest = hashlib.sha256(f"{fingerprint}\n{names}".encode()).hexdigest()[:24]
    path = f"{INDEX}/{fingerprint[:16]}-{digest}.parquet"
    table = pa.Table.from_pylist(
        [{"shard": m["shard"], "files": m["files"],
          "counts": json.dumps(m["counts"], sort_keys=True)} for m in markers],
        schema=INDEX_SCHEMA)
    write_atomic(output.child(path), parquet_bytes(table), fingerprint[:16])
    counts: dict = {}
    for marker in markers:
        add_counts(counts, marker["counts"])
    return IndexPart(path, len(markers), sum(bool(m.get("resumed")) for m in markers), counts)


def read_shard_index(output: Location, manifest: dict):
    """The committed shards' markers (``shard``, ``files``, ``counts``), read one index file at
    a time from the manifest's ``index`` list; manifests written before the index existed list
    their shards inline."""
    if "shards" in manifest:
        yield from manifest["shards"]
        return
    for path in manifest.get("index", []):
        location = output.child(path)
        try:
            table = pq.read_table(pa.BufferReader(read_bytes(location)))
        except (OSError, pa.ArrowInvalid) as error:
            raise StorageError(f"cannot read {location.url}: {error}") from None
        for row in table.to_pylist():
            yield {"shard": row["shard"], "files": row["files"],
                   "counts": json.loads(row["counts"])}


def commit_run(output: Location, fingerprint: str, manifest: dict, parts: list[IndexPart]) -> dict:
    """Write ``_manifest.json`` (atomically, last) listing the index files and the summed counts.
    Index files of this run's earlier attempts that the commit does not list are deleted first:
    their names carry the run's fingerprint, so nothing else is touched."""
    listed = {part.path for part in parts}
    index = output.child(INDEX)
    if exists(index):
        for location in list_files(index, suffix=".parquet"):
            relative = f"{INDEX}/{location.path.rsplit('/', 1)[-1]}"
            if relative.startswith(f"{INDEX}/{fingerprint[:16]}-") and relative not in listed:
                delete(location)
    manifest = dict(manifest, index=sorted(listed))
    write_atomic(output.child(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def sum_parts(parts: list[IndexPart]) -> tuple[dict, dict]:
    """The summed shard counts of index parts, and ``{"shards", "shards_skipped"}``."""
    counts: dict = {}
    for part in parts:
        add_counts(counts, part.counts)
    return counts, {"shards": sum(p.shards for p in parts),
                    "shards_skipped": sum(p.resumed for p in parts)}
