"""Planning on the driver: list the input files, check their schemas, cut the work into units.

The driver reads file listings and Parquet footers, nothing else: its memory and time grow with
the number of input files and row groups, never with the number of images or detections. No id
column and no detections table is read here; pairing detections with their images runs on the
engine (``jobs.pairing``).

A unit is one Parquet row group of the images table; the worker that takes it reads the row
group itself and writes one shard per ``rows_per_shard`` images. A detections part is one row
group of a detections file, with the global position of its first row (``first_order``), so
that "the first occurrence wins" has one meaning across files. Units, parts and shards depend
only on the inputs (never on the cluster's size), which makes shard names deterministic: a
retried task rewrites the same files, and a rerun after a crash skips the shards already
committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pyarrow as pa

from jobs import schema
from jobs.storage import Location, StorageError, list_files, open_parquet, redact, resolve

__all__ = ["DetectionPart", "Plan", "Unit", "make_plan"]


@dataclass(frozen=True)
class Unit:
    """One row group of one images file: the unit of work of the crop stage."""

    index: int
    file_url: str
    row_group: int
    first_row: int  # the row group's first row within the file
    num_rows: int
    staged: bool = False  # pairing wrote this unit's detections or skipped rows to the work area


@dataclass(frozen=True)
class DetectionPart:
    """One row group of one detections file."""

    file_url: str
    row_group: int
    first_order: int  # position of its first row among all detection rows, in input order
    num_rows: int
    first_row: int  # position of its first row in its file (error rows' ``source_uri``)


@dataclass(frozen=True)
class Plan:
    layout: schema.ImagesLayout | None
    units: tuple[Unit, ...]
    num_images: int
    detection_parts: tuple[DetectionPart, ...]
    detection_schema: pa.Schema | None  # every detections file's columns, unified and plain
    num_detections: int  # rows in the detections files (nested ones are counted by the workers)
    input_digest: str  # names, sizes and times of every input file, for the run fingerprint
    nested_detections: bool = field(default=False)
    # the detection row groups' uncompressed bytes (Parquet's total_byte_size): sizes pairing's
    # shuffle batches
    detection_bytes: int = 0


def _file_identity(location: Location) -> str:
    """Name, size and modification time: a rewritten input makes a different run."""
    info = location.fs.get_file_info(location.path)
    return f"{location.url}:{info.size}:{info.mtime_ns}"


FOOTER_THREADS = 32  # footers read at once: on an object store each is a request or two


def _footers(files: list[Location]):
    """``(location, ParquetFile, identity)`` of each file, in order; footers and sizes are read
    by a thread pool, since on an object store each read waits on the network."""
    from concurrent.futures import ThreadPoolExecutor

    def read(location: Location):
        return location, open_parquet(location), _file_identity(location)

    if len(files) <= 1:
        yield from map(read, files)
        return
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(files))) as pool:
        yield from pool.map(read, files)


def _input_files(url: str, flag: str) -> list[Location]:
    """The Parquet files of an input; ``StorageError`` when there is none. A folder of ``.pq``
    files or a mistyped glob would otherwise be an empty input: a run of nothing, committed."""
    files = list_files(resolve(url))
    if not files:
        raise StorageError(f"{flag} {redact(url)} holds no Parquet files (names ending in "
                           f".parquet; names starting with '_' or '.' are skipped); an empty "
                           f"input is a Parquet file with no rows")
    return files


def make_plan(images_url: str, detections_url: str | None, *, needs_detections: bool,
              keep_columns: tuple[str, ...] | None, parameter_columns: dict[str, str]) -> Plan:
    """Units of the images table and parts of the detections table, from footers only.
    ``SchemaError`` names a missing or mistyped column before any work."""
    digest: list[str] = []
    units: list[Unit] = []
    layouts: list[tuple[str, schema.ImagesLayout]] = []
    for location, parquet, identity in _footers(_input_files(images_url, "--images")):
        digest.append(identity)
        if parquet.metadata.num_rows == 0:
            continue
        file_layout = schema.images_layout(parquet.schema_arrow, keep_columns, parameter_columns)
        if not layouts or file_layout != layouts[-1][1]:  # files written alike: checked once
            layouts.append((location.url, file_layout))
        first = 0
        for group in range(parquet.metadata.num_row_groups):
            n = parquet.metadata.row_group(group).num_rows
            if n:
                units.append(Unit(len(units), location.url, group, first, n))
                first += n
    layout = schema.merged_images_layout(layouts)
    nested = bool(layout and layout.nested_detections)
    parts: list[DetectionPart] = []
    detection_schema, detection_bytes = None, 0
    if detections_url is not None:
        if nested:
            raise schema.SchemaError("the images table already holds nested 'detections'; "
                                     "do not pass --detections as well")
        schemas = []
        order = 0
        for location, parquet, identity in _footers(_input_files(detections_url,
                                                                 "--detections")):
            digest.append(identity)
            if parquet.metadata.num_rows == 0:
                continue
            file_schema = parquet.schema_arrow
            schema.check_detections_schema(file_schema)
            schemas.append(schema.plain_schema(file_schema, schema.DETECTIONS_SCHEMA))
            first = 0
            for group in range(parquet.metadata.num_row_groups):
                metadata = parquet.metadata.row_group(group)
                n = metadata.num_rows
                if n:
                    parts.append(DetectionPart(location.url, group, order, n, first))
                    order += n
                    first += n
                    detection_bytes += metadata.total_byte_size
        if schemas:
            try:
                detection_schema = pa.unify_schemas(schemas, promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise schema.SchemaError(f"detections files disagree on their schema: "
                                         f"{str(error).splitlines()[0]}") from None
    elif needs_detections and not nested and units:
        raise schema.SchemaError("this step crops detections: pass --detections, or nest a "
                                 "'detections' column on the images table")
    return Plan(
        layout=layout,
        units=tuple(units),
        num_images=sum(u.num_rows for u in units),
        detection_parts=tuple(parts),
        detection_schema=detection_schema,
        num_detections=sum(p.num_rows for p in parts),
        input_digest=hashlib.sha256("\n".join(digest).encode()).hexdigest(),
        nested_detections=nested,
        detection_bytes=detection_bytes,
    )
