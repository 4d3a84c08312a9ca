"""Pairing detections with their images, on Ray Data, before any crop.

The rules (unchanged from the driver-side pairing they replace):

- a repeated image id keeps its first row (in input order); later rows, and rows with a null
  id, are skipped (the crop stage writes each as a ``duplicate_image_id`` or, for a null id,
  ``missing_id`` error row, with the row's ``source_uri``, since only it knows the row's file);
- a detection with a null ``image_id`` or ``detection_id`` is a ``missing_id`` row;
- a ``detection_id`` seen on an earlier detection row is a ``duplicate_detection_id`` row;
- a detection whose image id names no image is an ``image_missing`` row;
- every other detection pairs with its image's (first) row.

The work is three hash partitionings of small rows, each followed by one vectorized pass over a
whole partition (Ray Data's keyed ``repartition``: a hash shuffle whose reduce step concatenates
each partition into one block, so every key's rows land in one block; not sorted, since the
passes group by hashing, and a sort of each partition by its string key cost more than a pass)::

    image keys (id, unit, row) ─┐
    detections ── by detection_id: mark repeats ─┴─ by image_id: pair ── by unit: stage

The last pass writes, per unit, one Parquet file of its paired detections and skipped rows under
the output's work area (``_work/<run>/units/unit-<n>.parquet``), which the unit's crop task
reads; and writes the error rows as ordinary committed error shards. Image bytes never move:
only ids and detection rows are shuffled. Small inputs (``SINGLE_TASK_ROWS``) take the same
three passes inside one task, which saves the shuffles' start-up on a laptop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import raycompat, schema
from jobs.plan import Plan
from jobs.sinks import parquet_bytes, write_shard
from jobs.storage import (
    Location,
    StorageError,
    exists,
    open_parquet,
    read_bytes,
    resolve,
    write_atomic,
)

__all__ = [
    "KIND",
    "ORDER",
    "ROW",
    "SINGLE_TASK_ROWS",
    "Pairing",
    "pair",
    "pair_in_process",
    "read_unit_rows",
    "unit_file",
]

ORDER, UNIT, ROW, KIND, REASON = "__order", "__unit", "__row", "__kind", "__reason"
IMAGE, DETECTION, SKIP = 0, 1, 2  # KIND: an image's key, a detection, a skipped image row
CONTROL = pa.schema([(ORDER, pa.int64()), (UNIT, pa.int64()), (ROW, pa.int64()),
                     (KIND, pa.int8()), (REASON, pa.string())])
RESULT = pa.schema([("unit", pa.int64()), ("detections", pa.int64()), ("skips", pa.int64()),
                    ("marker", pa.string())])
MESSAGES = {
    "missing_id": "detection has a null image_id or detection_id",
    "duplicate_detection_id": "detection_id appears on an earlier detection row",
    "image_missing": "no image in the images table has this image_id",
    "duplicate_image_id": "image id appears on an earlier row; row skipped",
}
NULL_IMAGE_ID = "image row has a null image_id; row skipped"  # a missing_id row of the images
# Inputs up to this many rows (images + detections) are paired in one task, no shuffle.
SINGLE_TASK_ROWS = int(os.environ.get("CROPJOB_PAIRING_SINGLE_TASK_ROWS", 500_000))
ROWS_PER_PARTITION = 1_000_000
# Ray Data gathers a shuffle's input into batches of up to 1 GiB a node (its
# shuffle_input_batch_bytes) and partitions each batch in one task. Below 1 GiB a node, that was
# one task on one CPU per stage (5M detections on 2 CPUs: 10 of the 28 s were single-task
# partitioning). Batches of a 1/2 CPU's share of the input keep every CPU partitioning.
SHUFFLE_BATCHES_PER_CPU = 2
MIN_SHUFFLE_BATCH_BYTES = 16 << 20
MAX_SHUFFLE_BATCH_BYTES = 1 << 30
BLOCKS_PER_CPU = 8  # reader blocks per cluster CPU
_ERROR_BUCKET_BITS = 20  # error rows are written in shards of up to 2^20 input positions
PAIRED = "_paired.json"


@dataclass(frozen=True)
class Pairing:
    """What pairing left for the crop stage and the commit."""

    staged_units: frozenset[int]  # units with a work file (detections or skipped rows)
    markers: tuple[dict, ...]  # the committed error shards' markers


def unit_file(work: Location, unit: int) -> Location:
    return work.child("units", f"unit-{unit}.parquet")


def pair(plan: Plan, output: Location, work: Location, fingerprint: str,
         num_cpus: int) -> Pairing:
    """Pair on the cluster (see the module's docstring); resumable: a finished pairing of this
    run is read back from ``_paired.json`` in the work area instead of being done again."""
    import ray.data

    done = _read_paired(work)
    if done is not None:
        return done
    target = paired_schema(plan)
    id_column = plan.layout.id_column if plan.layout else schema.IMAGE_ID
    context = {"target": target, "id_column": id_column, "output_url": output.url,
               "work_url": work.url, "fingerprint": fingerprint}
    units = [{"index": u.index, "file_url": u.file_url, "row_group": u.row_group}
             for u in plan.units]
    parts = [p.__dict__ for p in plan.detection_parts]
    rows = plan.num_images + plan.num_detections
    if rows <= SINGLE_TASK_ROWS:
        job = ray.data.from_items([{"units": json.dumps(units), "parts": json.dumps(parts)}])
        results = raycompat.map_batches(job, _pair_in_one_task, fn_kwargs=context, batch_size=1,
                                        num_cpus=1, retry_errors=(StorageError,),
                                        max_task_retries=3)
    else:
        partitions = max(num_cpus, math.ceil(rows / ROWS_PER_PARTITION))
        blocks = max(1, BLOCKS_PER_CPU * num_cpus)  # blocks, not rows, cost the driver
        keys = _read(ray.data.from_items(units, override_num_blocks=min(len(units), blocks)),
                     _read_image_keys, context)
        if parts:
            detections = _read(ray.data.from_items(parts,
                                                   override_num_blocks=min(len(parts), blocks)),
                               _read_detections, context)
            marked = detections.repartition(partitions, keys=[schema.DETECTION_ID])
            marked = raycompat.map_batches(marked, _mark_repeated_batch, fn_kwargs={},
                                           batch_size=None, num_cpus=1)
            keys = keys.union(marked)
        paired = keys.repartition(partitions, keys=[schema.IMAGE_ID])
        paired = raycompat.map_batches(paired, _pair_batch, fn_kwargs={}, batch_size=None,
                                       num_cpus=1)
        staged = paired.repartition(partitions, keys=[UNIT])
        results = raycompat.map_batches(staged, _stage_batch,
                                        fn_kwargs={"parts": parts, **{k: context[k] for k in
                                                   ("output_url", "work_url", "fingerprint")}},
                                        batch_size=None, num_cpus=1,
                                        retry_errors=(StorageError,), max_task_retries=3)
        results.context.shuffle_input_batch_bytes = shuffle_batch_bytes(plan.detection_bytes,
                                                                        num_cpus)
    tables = results.iter_batches(batch_format="pyarrow", batch_size=None)
    return _record(tables, work, fingerprint)


def shuffle_batch_bytes(data_bytes: int, num_cpus: int) -> int:
    """The shuffle input batch for ``data_bytes`` of detections on ``num_cpus`` CPUs: about
    ``SHUFFLE_BATCHES_PER_CPU`` batches per CPU, within 16 MiB (small batches make many small
    shuffle objects) and Ray Data's default 1 GiB."""
    share = math.ceil(data_bytes / (SHUFFLE_BATCHES_PER_CPU * max(1, num_cpus)))
    return min(MAX_SHUFFLE_BATCH_BYTES, max(MIN_SHUFFLE_BATCH_BYTES, share))


def pair_in_process(plan: Plan, output: Location, work: Location, fingerprint: str) -> Pairing:
    """The same passes in this process, without Ray (tests, benchmarks of the crop UDF)."""
    target = paired_schema(plan)
    id_column = plan.layout.id_column if plan.layout else schema.IMAGE_ID
    units = [{"index": u.index, "file_url": u.file_url, "row_group": u.row_group}
             for u in plan.units]
    result = pair_all(units, [p.__dict__ for p in plan.detection_parts], target, id_column,
                      output, work, fingerprint)
    return _record([result], work, fingerprint)


def _record(results, work: Location, fingerprint: str) -> Pairing:
    """Gather the staging results (one row per unit or error bucket) and write ``_paired.json``,
    which marks the pairing of this run as done."""
    staged_units, markers = set(), []
    for batch in results:
        for row in batch.to_pylist():
            if row["marker"] is not None:
                markers.append(json.loads(row["marker"]))
            elif row["detections"] or row["skips"]:
                staged_units.add(row["unit"])
    pairing = Pairing(frozenset(staged_units),
                      tuple(sorted(markers, key=lambda m: m["shard"])))
    write_atomic(work.child(PAIRED), json.dumps(
        {"staged_units": sorted(pairing.staged_units), "markers": list(pairing.markers)},
        sort_keys=True).encode(), fingerprint[:16])
    return pairing


def _read_paired(work: Location) -> Pairing | None:
    location = work.child(PAIRED)
    if not exists(location):
        return None
    try:
        value = json.loads(read_bytes(location))
        return Pairing(frozenset(value["staged_units"]), tuple(value["markers"]))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: pair again, which rewrites the same files


def _read(dataset, fn, context):
    return raycompat.map_batches(dataset, fn, fn_kwargs={"target": context["target"],
                                                         "id_column": context["id_column"]},
                                 batch_size=1, num_cpus=1, retry_errors=(StorageError,),
                                 max_task_retries=3)


def paired_schema(plan: Plan) -> pa.Schema:
    """The rows that pairing shuffles: every detection column (or just the image id, when the
    detections are nested or absent) and the control columns."""
    if plan.detection_schema is not None:
        base = [f for f in plan.detection_schema if f.name not in CONTROL.names]
    else:
        base = [pa.field(schema.IMAGE_ID, pa.string())]
    return pa.schema(base + list(CONTROL))


def _with_control(columns: dict, target: pa.Schema, n: int) -> pa.Table:
    return pa.table({f.name: columns[f.name] if f.name in columns else pa.nulls(n, f.type)
                     for f in target}, schema=target)


# -- reading ------------------------------------------------------------------------------------
def image_keys(unit: dict, target: pa.Schema, id_column: str) -> pa.Table:
    """The ids of one unit's images, with their unit, row and input order."""
    parquet = open_parquet(resolve(unit["file_url"]))
    try:
        ids = parquet.read_row_group(unit["row_group"], columns=[id_column]).column(0)
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read {unit['file_url']}: {str(error).splitlines()[0]}") \
            from None
    n = len(ids)
    rows = np.arange(n, dtype=np.int64)
    return _with_control({
        schema.IMAGE_ID: pc.cast(ids, pa.string()),
        ORDER: pa.array((np.int64(unit["index"]) << 32) + rows),
        UNIT: pa.array(np.full(n, unit["index"], np.int64)),
        ROW: pa.array(rows),
        KIND: pa.array(np.full(n, IMAGE, np.int8)),
    }, target, n)


def detection_rows(part: dict, target: pa.Schema) -> pa.Table:
    """One detections row group in the paired schema, with its input order; rows with a null
    id are marked ``missing_id`` here."""
    parquet = open_parquet(resolve(part["file_url"]))
    try:
        table = parquet.read_row_group(part["row_group"])
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read {part['file_url']}: {str(error).splitlines()[0]}") \
            from None
    table = schema.plain_table(table, schema.DETECTIONS_SCHEMA)
    n = table.num_rows
    columns = {}
    for field in target:
        if field.name in table.column_names and field.name not in CONTROL.names:
            columns[field.name] = pc.cast(table.column(field.name), field.type)
    missing = pc.or_kleene(pc.is_null(table.column(schema.IMAGE_ID)),
                           pc.is_null(table.column(schema.DETECTION_ID)))
    columns[ORDER] = pa.array(part["first_order"] + np.arange(n, dtype=np.int64))
    columns[KIND] = pa.array(np.full(n, DETECTION, np.int8))
    columns[REASON] = pc.if_else(missing, pa.scalar("missing_id"), pa.scalar(None, pa.string()))
    return _with_control(columns, target, n)


def _read_image_keys(batch: pa.Table, target: pa.Schema, id_column: str) -> pa.Table:
    tables = [image_keys(unit, target, id_column) for unit in batch.to_pylist()]
    return pa.concat_tables(tables) if tables else target.empty_table()


def _read_detections(batch: pa.Table, target: pa.Schema, id_column: str) -> pa.Table:
    tables = [detection_rows(part, target) for part in batch.to_pylist()]
    return pa.concat_tables(tables) if tables else target.empty_table()


# -- the three passes ---------------------------------------------------------------------------
def _first_in_order(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """A boolean mask: the row with the smallest ``order`` of each ``codes`` value."""
    first = np.zeros(len(codes), dtype=bool)
    if len(codes):
        sort = np.lexsort((order, codes))
        head = np.ones(len(sort), dtype=bool)
        head[1:] = codes[sort][1:] != codes[sort][:-1]
        first[sort[head]] = True
    return first


def _codes(values) -> np.ndarray:
    """Dense integer codes of ``values`` (-1 for null)."""
    valid = pc.drop_null(values)
    codes = pc.index_in(values, value_set=pc.unique(valid), skip_nulls=True)
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _ints(column) -> np.ndarray:
    return pc.fill_null(column, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def mark_repeated(table: pa.Table) -> pa.Table:
    """Detections holding every row of each of their ``detection_id`` values: all but the first
    (in input order) of each id become ``duplicate_detection_id``."""
    table = table.combine_chunks()
    reason = table.column(REASON)
    candidates = np.flatnonzero(pc.is_null(reason).to_numpy(zero_copy_only=False))
    if len(candidates) < 2:
        return table
    ids = table.column(schema.DETECTION_ID).take(pa.array(candidates))
    order = table.column(ORDER).to_numpy()[candidates]
    repeated = np.zeros(table.num_rows, dtype=bool)
    repeated[candidates[~_first_in_order(_codes(ids), order)]] = True
    reason = pc.if_else(pa.array(repeated), pa.scalar("duplicate_detection_id"), reason)
    return _replace(table, {REASON: reason})


def pair_rows(table: pa.Table) -> pa.Table:
    """Image keys and detections holding every row of each of their ``image_id`` values: pair
    each detection with its image's first row; skipped image rows become ``SKIP`` rows (their
    error rows are the crop stage's); every detection error is a row whose ``UNIT`` is a
    negative error bucket."""
    table = table.combine_chunks()
    n = table.num_rows
    kind = table.column(KIND).to_numpy()
    order = table.column(ORDER).to_numpy()
    reason = table.column(REASON)
    codes = _codes(table.column(schema.IMAGE_ID))
    is_image, is_detection = kind == IMAGE, kind == DETECTION
    # an image row is kept when its id is not null and it comes first among its id's rows
    images = np.flatnonzero(is_image & (codes >= 0))
    kept = np.zeros(n, dtype=bool)
    kept[images[_first_in_order(codes[images], order[images])]] = True
    duplicate_image = is_image & ~kept
    unit, row = _ints(table.column(UNIT)), _ints(table.column(ROW))
    # each pending detection takes its id's kept image row, if there is one
    keeper_of_code = np.full(max(int(codes.max(initial=-1)) + 1, 1), -1, dtype=np.int64)
    keeper_of_code[codes[kept]] = np.flatnonzero(kept)
    keeper = np.where(codes >= 0, keeper_of_code[np.maximum(codes, 0)], -1)
    pending = is_detection & pc.is_null(reason).to_numpy(zero_copy_only=False)
    paired = pending & (keeper >= 0)
    orphan = pending & (keeper < 0)
    original_unit = unit.copy()
    unit[paired], row[paired] = unit[keeper[paired]], row[keeper[paired]]
    error = is_detection & ~paired
    unit[error] = -1 - (order[error] >> _ERROR_BUCKET_BITS)
    reason = pc.if_else(pa.array(orphan), pa.scalar("image_missing"), reason)
    out = _replace(table, {UNIT: pa.array(unit), REASON: reason,
                           ROW: pa.array(row, mask=~paired)})
    # a skipped image row also goes to its own unit, to be skipped there
    skips = _replace(table.filter(pa.array(duplicate_image)), {
        UNIT: pa.array(original_unit[duplicate_image]),
        KIND: pa.array(np.full(int(duplicate_image.sum()), SKIP, np.int8)),
    })
    return pa.concat_tables([out.filter(pa.array(paired | error)), skips])


def _replace(table: pa.Table, columns: dict) -> pa.Table:
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def stage(table: pa.Table, output: Location, work: Location, fingerprint: str,
          parts: list[dict]) -> pa.Table:
    """Rows holding every row of each of their ``UNIT`` values: write each unit's work file and
    each error bucket's committed error shard; one result row per unit or bucket. ``parts`` are
    the plan's detection parts (as dicts), which name each error row's source."""
    table = table.combine_chunks()
    units = table.column(UNIT).to_numpy()
    results = []
    if not len(units):
        return RESULT.empty_table()
    sort = np.argsort(units, kind="stable")
    values, starts = np.unique(units[sort], return_index=True)
    bounds = np.append(starts, len(sort))
    for value, lo, hi in zip(values.tolist(), bounds[:-1], bounds[1:], strict=True):
        rows = table.take(pa.array(sort[lo:hi]))
        kind = rows.column(KIND).to_numpy()
        if value >= 0:
            rows = rows.take(pa.array(np.lexsort((rows.column(ORDER).to_numpy(),
                                                  rows.column(ROW).to_numpy()))))
            rows = rows.drop_columns([UNIT, REASON])
            write_atomic(unit_file(work, value), parquet_bytes(rows), fingerprint[:16])
            results.append({"unit": value, "detections": int((kind == DETECTION).sum()),
                            "skips": int((kind == SKIP).sum()), "marker": None})
        else:
            rows = rows.take(pa.array(np.argsort(rows.column(ORDER).to_numpy(), kind="stable")))
            errors = error_table(rows, parts)
            name = hashlib.sha256(f"{fingerprint}\npair\n{value}".encode()).hexdigest()[:24]
            counts: dict[str, int] = {}
            for reason in errors.column("reason").to_pylist():
                counts[reason] = counts.get(reason, 0) + 1
            marker = write_shard(output, name, {"errors": errors}, {"errors": counts},
                                 fingerprint)
            results.append({"unit": value, "detections": 0, "skips": 0,
                            "marker": json.dumps(marker, sort_keys=True)})
    return pa.Table.from_pylist(results, schema=RESULT)


def error_table(rows: pa.Table, parts: list[dict]) -> pa.Table:
    """Error rows of refused detections; each ``source_uri`` names the detection's own row
    (``<detections file>#row=N``): the row may have no image, or no id to find it by."""
    reasons = rows.column(REASON)
    return pa.table({
        schema.IMAGE_ID: rows.column(schema.IMAGE_ID),
        schema.DETECTION_ID: rows.column(schema.DETECTION_ID),
        "stage": pa.array(["plan"] * rows.num_rows, pa.string()),
        "reason": reasons,
        "message": pa.array([MESSAGES[r] for r in reasons.to_pylist()], pa.string()),
        "source_uri": detection_source_uris(rows.column(ORDER).to_numpy(), parts),
    }, schema=schema.ERROR_SCHEMA)


def detection_source_uris(order: np.ndarray, parts: list[dict]) -> pa.Array:
    """``<detections file>#row=N`` of the detection rows at input positions ``order``; N counts
    the file's rows from 0, as an images row's ``source_uri`` does."""
    if not len(order):
        return pa.array([], pa.string())
    starts = np.array([part["first_order"] for part in parts], dtype=np.int64)
    first_rows = np.array([part["first_row"] for part in parts], dtype=np.int64)
    index = np.searchsorted(starts, order, side="right") - 1
    rows = first_rows[index] + order - starts[index]
    return pa.array([f"{parts[k]['file_url']}#row={r}"
                     for k, r in zip(index.tolist(), rows.tolist(), strict=True)], pa.string())


def _mark_repeated_batch(batch: pa.Table) -> pa.Table:
    return mark_repeated(batch)


def _pair_batch(batch: pa.Table) -> pa.Table:
    return pair_rows(batch)


def _stage_batch(batch: pa.Table, output_url: str, work_url: str, fingerprint: str,
                 parts: list[dict]) -> pa.Table:
    return stage(batch, resolve(output_url), resolve(work_url), fingerprint, parts)


def _pair_in_one_task(batch: pa.Table, target: pa.Schema, id_column: str, output_url: str,
                      work_url: str, fingerprint: str) -> pa.Table:
    (job,) = batch.to_pylist()
    return pair_all(json.loads(job["units"]), json.loads(job["parts"]), target, id_column,
                    resolve(output_url), resolve(work_url), fingerprint)


def pair_all(units: list[dict], parts: list[dict], target: pa.Schema, id_column: str,
             output: Location, work: Location, fingerprint: str) -> pa.Table:
    """The three passes over the whole input at once (small inputs: no shuffle)."""
    keys = [image_keys(unit, target, id_column) for unit in units]
    detections = [detection_rows(part, target) for part in parts]
    if detections:
        keys.append(mark_repeated(pa.concat_tables(detections)))
    rows = pa.concat_tables(keys) if keys else target.empty_table()
    return stage(pair_rows(rows), output, work, fingerprint, parts)


# -- the crop stage's side -----------------------------------------------------------------------
def read_unit_rows(work: Location, unit: int) -> tuple[pa.Table, set[int]]:
    """A staged unit's paired detections (sorted by row, then input order; ``ROW`` is the row
    in the unit) and the rows to skip."""
    location = unit_file(work, unit)
    parquet = open_parquet(location)
    try:
        table = parquet.read()
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read {location.url}: {str(error).splitlines()[0]}") from None
    kind = table.column(KIND).to_numpy()
    skipped = set(table.column(ROW).filter(pa.array(kind == SKIP)).to_pylist())
    detections = table.filter(pa.array(kind == DETECTION)).drop_columns([KIND, ORDER])
    return detections, skipped
