"""The crop stage as Ray Data building blocks, for pipelines of your own.

``crop`` turns a Dataset of images (with nested detections, or a separate detections Dataset)
into a Dataset of crop rows: the crops table's columns and the lineage columns, one row per
crop; images or detections that give no crop come out as rows with ``reason`` set and no
``crop``, so nothing is dropped silently. ``CropSink`` writes such rows as a committed run: the
output is claimed first, each block becomes a shard (crops, lineage, errors and the shard's
marker, each written atomically), and ``on_write_complete`` writes the Parquet shard index and
``_manifest.json`` last, exactly as the command line's run does (``jobs.sinks``)::

    import ray
    from jobs.stage import CropSink, crop
    from jobs.steps import parse_step

    images = ray.data.read_parquet("s3://bucket/images/")        # image_id, image, detections
    crops = crop(images, parse_step({"type": "roboflow_core/dynamic_crop@v1"}))
    embedded = crops.map_batches(Embedder, batch_format="pyarrow",  # your model, on GPUs
                                 compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1)
    embedded.write_datasink(CropSink("s3://bucket/crops-v1/", run_id="crops-v1"))

The crop semantics are the job's (``jobs.udfs.ShardBuilder`` calling cropcore). What differs
from ``python -m jobs run``: rows arrive in whatever blocks Ray Data makes, so a repeated image
id is not detected here, and a separate detections Dataset is joined to the images by
``Dataset.join``, which shuffles image bytes too (the command line stages detections per row
group instead and never moves image bytes). ``crop_id`` depends only on the source bytes, ids,
window, step and format, so a crop has the same id on both roads.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink

from cropcore.codec import DEFAULT_MAX_PIXELS
from jobs import convert, ownership, schema, steps
from jobs.sinks import commit_run, sum_parts, write_index_part, write_shard
from jobs.storage import resolve
from jobs.udfs import JobContext, ShardBuilder, now
from jobs.versions import code_version

__all__ = ["CropSink", "crop"]

REASON, MESSAGE = "reason", "message"
_ROWS_PER_INDEX = 10_000


def crop(images, step: steps.Step, *, detections=None, image_format: str | None = None,
         quality: int | None = None, webp_method: int | None = None,
         max_pixels: int = DEFAULT_MAX_PIXELS, max_detections: int = 10_000,
         allow_uris: tuple[str, ...] | str = (), run_id: str = "ray-data",
         num_partitions: int | None = None):
    """Crop every image of a Ray ``Dataset``; returns a Dataset of crop rows (lazy).

    Args:
        images: rows with ``image_id`` and ``image`` (bytes, or a Hugging Face
            ``struct<bytes, path>``) or ``uri`` (read only under ``allow_uris``), and for a
            dynamic crop a nested ``detections`` list column, unless ``detections`` is given.
        step: a parsed step (``jobs.steps.parse_step``).
        detections: optional rows with ``image_id``, ``detection_id`` and the box columns;
            nested onto the images by a hash join (``num_partitions`` of it).
        image_format, quality, webp_method, max_pixels, max_detections, allow_uris: as on the
            command line (``allow_uris``: prefixes, or one comma-separated string), and
            checked as it checks them: a bad value is a ``ValueError`` here, before any work.
        run_id: recorded in lineage.

    Returns:
        A Dataset whose rows have the crops columns and the lineage columns; rows of inputs
        that gave no crop carry ``reason`` and ``message`` and a null ``crop``.
    """
    # the command line's checks, before any work: format, quality, limits, --allow-uris
    from jobs.pipeline import JobConfig, JobError

    try:
        checked = JobConfig(images="", output="", step=step, image_format=image_format,
                            quality=quality, webp_method=webp_method, max_pixels=max_pixels,
                            max_detections=max_detections, allow_uris=allow_uris)
    except JobError as error:
        raise ValueError(str(error)) from None
    image_format = checked.image_format
    if detections is not None:
        nested = detections.groupby(schema.IMAGE_ID, num_partitions=num_partitions) \
            .map_groups(_nest_detections, batch_format="pyarrow")
        images = images.join(nested, join_type="left_outer", on=(schema.IMAGE_ID,),
                             num_partitions=num_partitions or 8)
    layout = schema.images_layout(images.schema().base_schema, None,
                                  steps.column_refs(step))
    if step.needs_detections and not layout.nested_detections:
        raise ValueError("this step crops detections: pass detections=, or nest a "
                         "'detections' list column on the images")
    context = JobContext(
        step=step, step_json=steps.step_to_json(step), layout=layout, output_url="",
        image_format=image_format, quality=quality, max_pixels=max_pixels,
        max_detections=max_detections, rows_per_shard=1, reduced_decode=False, run_id=run_id,
        fingerprint="", code_version=code_version(), created_at=now(),
        parameter_columns=steps.column_refs(step), allow_uris=checked.allow_uris,
        webp_method=webp_method)
    return images.map_batches(crop_rows, fn_kwargs={"context": context},
                              batch_format="pyarrow", zero_copy_batch=True)


def _nest_detections(group: pa.Table) -> pa.Table:
    """One image's detections as one row: its id and a ``detections`` list (types kept)."""
    group = schema.plain_table(group, schema.DETECTIONS_SCHEMA).combine_chunks()
    fields = group.drop_columns([schema.IMAGE_ID])
    struct = pa.StructArray.from_arrays([fields.column(i).chunk(0) if fields.column(i).num_chunks
                                         else pa.array([], f.type)
                                         for i, f in enumerate(fields.schema)],
                                        fields=list(fields.schema))
    nested = pa.ListArray.from_arrays(pa.array([0, group.num_rows], pa.int32()), struct)
    return pa.table({schema.IMAGE_ID: group.column(schema.IMAGE_ID).slice(0, 1),
                     "detections": nested})


def crop_rows(batch: pa.Table, context: JobContext) -> pa.Table:
    """Ray Data UDF: a batch of images in, crop rows (with lineage) and error rows out."""
    batch = schema.plain_table(batch)
    if "detections" in batch.column_names and batch.column("detections").null_count:
        # images without detections (after a left join) hold an empty list, not a null
        batch = batch.set_column(batch.schema.get_field_index("detections"), "detections",
                                 pa.compute.fill_null(batch.column("detections"),
                                                      pa.scalar([], batch.schema.field(
                                                          "detections").type)))
    shard = ShardBuilder(context, schema.SINK_SOURCE, list(range(batch.num_rows)))
    detections = convert.flatten_nested_detections(batch) \
        if context.layout.nested_detections else None
    # an image without an id is skipped (crop_chunk writes its error row), as the command line's
    # pairing does (repeated ids are not seen here: they may sit in other blocks)
    ids = batch.column(context.layout.id_column)
    skipped = set(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False)).tolist()) \
        if ids.null_count else set()
    shard.crop_chunk(batch, detections, skipped)
    return rows_of(shard.tables())


def rows_of(tables: dict[str, pa.Table]) -> pa.Table:
    """One table of crop rows (crops and lineage side by side) and error rows."""
    crops, lineage = tables["crops"], tables["lineage"]
    extra = [name for name in lineage.column_names if name not in crops.column_names]
    joined = crops
    for name in extra:
        joined = joined.append_column(lineage.schema.field(name), lineage.column(name))
    joined = joined.append_column(REASON, pa.nulls(joined.num_rows, pa.string()))
    joined = joined.append_column(MESSAGE, pa.nulls(joined.num_rows, pa.string()))
    errors = tables.get("errors")
    if errors is None or errors.num_rows == 0:
        return joined
    return pa.concat_tables([joined, errors], promote_options="default")


def split_rows(rows: pa.Table) -> dict[str, pa.Table]:
    """The inverse of ``rows_of``: the crops, lineage and errors tables of a block."""
    is_error = pa.compute.is_valid(rows.column(REASON))
    crops_rows = rows.filter(pa.compute.invert(is_error))
    error_rows = rows.filter(is_error)
    lineage_columns = [c for c in schema.LINEAGE_COLUMNS if c in rows.column_names]
    crop_columns = [c for c in rows.column_names
                    if c not in (REASON, MESSAGE, "stage", "source_uri") and
                    (c not in schema.LINEAGE_COLUMNS or c in schema.CROP_COLUMNS)]
    tables = {"crops": crops_rows.select(crop_columns),
              "lineage": crops_rows.select(lineage_columns)}
    if error_rows.num_rows:
        tables["errors"] = error_rows.select(schema.ERROR_SCHEMA.names).cast(
            schema.ERROR_SCHEMA)
    return tables


class CropSink(Datasink):
    """Write crop rows (from ``crop``) as a committed run under ``output_url``.

    ``on_write_start`` claims the output for this run (refusing an output that holds other
    files or another run, as the command line does); each write task writes its block as one
    shard; ``on_write_complete`` writes the shard index and ``_manifest.json`` last. The run is
    identified by ``run_id`` only (the sink cannot know what the rows were made from): a write
    that failed before its commit can be repeated into the same output, but a committed output
    is refused, even for the same ``run_id``, since other rows would silently replace it.
    """

    def __init__(self, output_url: str, run_id: str = "ray-data",
                 allow_foreign_files: bool = False):
        # absolute: write tasks resolve it again, in their own working directories
        self.output_url, self.run_id = resolve(output_url).url, run_id
        self.allow_foreign_files = allow_foreign_files
        self.fingerprint = hashlib.sha256(f"ray-data\n{run_id}".encode()).hexdigest()
        self.manifest: dict | None = None

    def on_write_start(self, schema_=None) -> None:
        self._claim()

    def _claim(self) -> None:
        output = resolve(self.output_url)
        state = ownership.inspect_output(output)
        ownership.check_output(output, state, run_id=self.run_id, fingerprint=self.fingerprint,
                               settings={"run_id": self.run_id},
                               allow_foreign=self.allow_foreign_files)
        if state.manifest is not None:
            raise ownership.OutputRefused(
                f"{output.url} already holds run {self.run_id}, committed; CropSink commits a "
                f"run once (other rows under the same run id would replace it): write to a new "
                f"output (nothing was changed)")
        ownership.claim_output(output, run_id=self.run_id, fingerprint=self.fingerprint,
                               settings={"run_id": self.run_id})

    def write(self, blocks, ctx) -> list[dict]:
        # Ray Data 2.60 does not call on_write_start when it fuses the write into the last step
        # of a shuffle (crop's detections= join), so every write task claims (or joins the
        # claim of this run) and runs the same checks first.
        self._claim()
        output = resolve(self.output_url)
        markers = []
        for block in blocks:
            rows = pa.table(block)
            if rows.num_rows == 0:
                continue
            tables = split_rows(rows)
            keys = "\n".join(tables["crops"].column("crop_id").to_pylist()) + "\n" + json.dumps(
                tables["errors"].select([schema.IMAGE_ID, schema.DETECTION_ID, "reason"])
                .to_pylist() if "errors" in tables else [])
            name = hashlib.sha256(f"{self.fingerprint}\n{keys}".encode()).hexdigest()[:24]
            errors: dict[str, int] = {}
            for reason in (tables["errors"].column("reason").to_pylist()
                           if "errors" in tables else []):
                errors[reason] = errors.get(reason, 0) + 1
            counts = {"crops": tables["crops"].num_rows, "errors": errors}
            markers.append(write_shard(output, name, tables, counts, self.fingerprint))
        return markers

    def on_write_complete(self, write_result) -> None:
        output = resolve(self.output_url)
        markers = [m for result in write_result.write_returns for m in result]
        parts = [write_index_part(output, self.fingerprint, markers[i:i + _ROWS_PER_INDEX])
                 for i in range(0, len(markers), _ROWS_PER_INDEX)]
        counts, shards = sum_parts(parts)
        ownership.remove_own_leftovers(output, self.fingerprint)
        self.manifest = commit_run(output, self.fingerprint, {
            "run_id": self.run_id, "status": "committed", "fingerprint": self.fingerprint,
            "counts": counts | shards, "source": "ray-data"}, parts)

