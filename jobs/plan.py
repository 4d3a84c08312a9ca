"""Planning on the driver: check every input before any work starts and cut the work into units.

A unit is one Parquet row group of the images table; the worker that takes it reads the row
group itself and writes one shard per ``rows_per_shard`` images. Units and shards depend only on
the inputs (never on the cluster's size), which makes shard names deterministic: a retried task
rewrites the same files, and a rerun after a crash skips the shards already committed.

Detections are broadcast: the driver reads the detections table once, checks it, pairs each
detection with its image by ``image_id`` (reading only the images' id column), sorts it by
(unit, row) and puts it in Ray's object store; each unit gets a ``[start, stop)`` slice. That
suits tables up to a few million detections (the table must fit in the object store); beyond
that, nest the detections on the images table (a ``detections`` list column), which is read
with the images and needs no broadcast.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import schema
from jobs.storage import Location, StorageError, list_files, resolve

__all__ = ["Plan", "Unit", "make_plan"]


@dataclass(frozen=True)
class Unit:
    """One row group of one images file, and its detections' slice of the broadcast table."""

    index: int
    file_url: str
    row_group: int
    first_row: int  # the row group's first row within the file
    num_rows: int
    detection_start: int
    detection_stop: int
    skip_rows: tuple[int, ...] = ()  # rows (within the row group) with a duplicate image id


@dataclass
class Plan:
    layout: schema.ImagesLayout | None
    units: list[Unit]
    num_images: int
    detections: pa.Table | None  # sorted by (unit, row); column "__row" is the row in the unit
    num_detections: int
    errors: pa.Table  # rows rejected on the driver (missing images, duplicate ids...)
    input_digest: str  # names and sizes of every input file, for the run fingerprint
    nested_detections: bool = field(default=False)


def _error_rows(image_ids, detection_ids, stage: str, reason: str, message: str) -> pa.Table:
    n = len(image_ids)
    return pa.table(
        {
            schema.IMAGE_ID: pa.array(image_ids, pa.string()),
            schema.DETECTION_ID: pa.array(detection_ids, pa.string()),
            "stage": pa.array([stage] * n, pa.string()),
            "reason": pa.array([reason] * n, pa.string()),
            "message": pa.array([message] * n, pa.string()),
            "source_uri": pa.nulls(n, pa.string()),
        },
        schema=schema.ERROR_SCHEMA,
    )


def _open_parquet(location: Location) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(location.fs.open_input_file(location.path))
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read Parquet file {location.url}: "
                           f"{str(error).splitlines()[0]}") from None


def _file_identity(location: Location) -> str:
    """Name, size and modification time: a rewritten input makes a different run."""
    info = location.fs.get_file_info(location.path)
    return f"{location.url}:{info.size}:{info.mtime_ns}"


def read_table(url: str, what: str) -> tuple[pa.Table | None, list[str]]:
    """All Parquet files at ``url`` as one table (``None`` when there are none)."""
    files = list_files(resolve(url))
    tables = []
    for location in files:
        table = schema.plain_table(_open_parquet(location).read(), schema.DETECTIONS_SCHEMA)
        if table.num_rows or table.num_columns:
            tables.append(table)
    digest = [_file_identity(f) for f in files]
    if not tables:
        return None, digest
    try:
        return pa.concat_tables(tables, promote_options="permissive"), digest
    except pa.ArrowInvalid as error:
        raise schema.SchemaError(f"{what} files disagree on their schema: {error}") from None


def make_plan(images_url: str, detections_url: str | None, *, needs_detections: bool,
              keep_columns: tuple[str, ...] | None, parameter_columns: dict[str, str]) -> Plan:
    files = list_files(resolve(images_url))
    digest: list[str] = []
    units: list[Unit] = []
    ids: list[pa.Array] = []
    layout = None
    row_units: list[np.ndarray] = []
    row_in_unit: list[np.ndarray] = []
    for location in files:
        parquet = _open_parquet(location)
        digest.append(_file_identity(location))
        if parquet.metadata.num_rows == 0:
            continue
        file_layout = schema.images_layout(parquet.schema_arrow, keep_columns, parameter_columns)
        if layout is None:
            layout = file_layout
        elif file_layout != layout:
            raise schema.SchemaError(f"images file {location.url} differs in its columns from "
                                     f"the first file ({layout} vs {file_layout})")
        file_ids = schema.plain_table(parquet.read(columns=[layout.id_column])).column(0)
        first = 0
        for group in range(parquet.metadata.num_row_groups):
            n = parquet.metadata.row_group(group).num_rows
            if n == 0:
                continue
            unit_index = len(units)
            units.append(Unit(unit_index, location.url, group, first, n, 0, 0))
            row_units.append(np.full(n, unit_index, dtype=np.int64))
            row_in_unit.append(np.arange(n, dtype=np.int64))
            first += n
        ids.append(file_ids)
    num_images = sum(u.num_rows for u in units)
    all_ids = pa.chunked_array(ids, pa.string()).combine_chunks() if ids else pa.array([],
                                                                                     pa.string())
    unit_of_row = np.concatenate(row_units) if row_units else np.empty(0, np.int64)
    local_row = np.concatenate(row_in_unit) if row_in_unit else np.empty(0, np.int64)

    errors = []
    # A repeated image id makes pairing ambiguous: the first row keeps the id, later rows fail.
    first_index = pc.index_in(all_ids, value_set=pc.unique(all_ids)).to_numpy(zero_copy_only=False)
    _, first_of_value = np.unique(first_index, return_index=True) if len(first_index) else ([], [])
    duplicate = np.ones(len(all_ids), dtype=bool)
    duplicate[np.asarray(first_of_value, dtype=np.int64)] = False
    null_ids = pc.is_null(all_ids).to_numpy(zero_copy_only=False) if len(all_ids) else duplicate
    duplicate |= null_ids
    if duplicate.any():
        where = np.flatnonzero(duplicate)
        errors.append(_error_rows(all_ids.take(pa.array(where)).to_pylist(), [None] * len(where),
                                  "plan", "duplicate_image_id",
                                  "image id is null or appears on an earlier row; row skipped"))
        skips: dict[int, list[int]] = {}
        for row in where:
            skips.setdefault(int(unit_of_row[row]), []).append(int(local_row[row]))
        for unit_index, rows in skips.items():
            unit = units[unit_index]
            units[unit_index] = Unit(**{**unit.__dict__, "skip_rows": tuple(rows)})

    detections = None
    num_detections = 0
    nested = bool(layout and layout.nested_detections)
    if detections_url is not None:
        if nested:
            raise schema.SchemaError("the images table already holds nested 'detections'; "
                                     "do not pass --detections as well")
        table, detection_digest = read_table(detections_url, "detections")
        digest += detection_digest
        if table is not None and table.num_rows:
            schema.check_detections_schema(table.schema)
            detections, detection_errors, num_detections = _pair_detections(
                table, all_ids, duplicate, unit_of_row, local_row
            )
            errors += detection_errors
            starts = np.searchsorted(detections["__unit"].to_numpy(), np.arange(len(units) + 1))
            units = [
                Unit(**{**u.__dict__, "detection_start": int(starts[i]),
                        "detection_stop": int(starts[i + 1])})
                for i, u in enumerate(units)
            ]
            detections = detections.drop_columns(["__unit"])
    elif needs_detections and not nested and num_images:
        raise schema.SchemaError("this step crops detections: pass --detections, or nest a "
                                 "'detections' column on the images table")
    error_table = (pa.concat_tables(errors) if errors
                   else schema.ERROR_SCHEMA.empty_table())
    return Plan(
        layout=layout,
        units=units,
        num_images=num_images,
        detections=detections,
        num_detections=num_detections,
        errors=error_table,
        input_digest=hashlib.sha256("\n".join(digest).encode()).hexdigest(),
        nested_detections=nested,
    )


def _pair_detections(table, image_ids, duplicate_image, unit_of_row, local_row):
    """Sort detections by (unit, row in unit, input order); reject the ones that cannot pair."""
    errors = []
    n = table.num_rows
    detection_ids = table.column(schema.DETECTION_ID)
    detection_image = table.column(schema.IMAGE_ID)
    bad_id = pc.or_kleene(pc.is_null(detection_ids), pc.is_null(detection_image))
    bad_id = pc.fill_null(bad_id, True).to_numpy(zero_copy_only=False)
    # Detection ids must be unique across the table: the first occurrence wins.
    codes = pc.index_in(detection_ids, value_set=pc.unique(detection_ids))
    codes = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    repeated = np.ones(n, dtype=bool)
    repeated[first] = False
    repeated &= ~bad_id
    row = pc.index_in(detection_image, value_set=image_ids)
    row = pc.fill_null(row, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    missing = (row < 0) & ~bad_id & ~repeated
    # a detection naming a duplicated image id pairs with the id's first row (index_in finds it)
    for mask, reason, message in (
        (bad_id, "missing_id", "detection has a null image_id or detection_id"),
        (repeated, "duplicate_detection_id", "detection_id appears on an earlier detection row"),
        (missing, "image_missing", "no image in the images table has this image_id"),
    ):
        if mask.any():
            where = pa.array(np.flatnonzero(mask))
            errors.append(_error_rows(detection_image.take(where).to_pylist(),
                                      detection_ids.take(where).to_pylist(), "plan", reason,
                                      message))
    keep = np.flatnonzero(~(bad_id | repeated | missing))
    units = unit_of_row[row[keep]]
    rows = local_row[row[keep]]
    order = keep[np.lexsort((keep, rows, units))]
    paired = table.take(pa.array(order))
    paired = paired.append_column("__unit", pa.array(unit_of_row[row[order]]))
    paired = paired.append_column("__row", pa.array(local_row[row[order]]))
    return paired.combine_chunks(), errors, n
