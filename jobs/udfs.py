"""The batch UDF: one images row group in, its crop, lineage and error shards written out.

Data takes one road per image: read its bytes once, decode once (and only if a crop needs
pixels), compute all windows of the image at once, cut each crop as a view, blend the
background with the mask decoded only inside the window, encode each crop once.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cropcore import REASONS, CropBatch, box_faults, invalid_boxes, root_windows
from cropcore.codec import ImageDecodeError, decode_image, encode_image, read_image_size
from cropcore.windows import INVERTED, NOT_FINITE
from jobs import convert, pairing, schema, steps
from jobs.exports import with_hf_features
from jobs.fetch import DEFAULT_MAX_IMAGE_BYTES, FetchPolicy, fetch
from jobs.plan import Unit
from jobs.schema import IMAGE_ID, ImagesLayout
from jobs.sinks import read_marker, write_shard
from jobs.storage import MissingObjectError, StorageError, resolve

__all__ = ["JobContext", "ShardBuilder", "crop_units", "now", "shard_name"]

@dataclass(frozen=True)
class JobContext:
    """Everything a worker needs, shipped once per task (small; detections by reference)."""

    step: steps.Step
    step_json: str
    layout: ImagesLayout
    output_url: str
    image_format: str
    quality: int | None
    max_pixels: int
    max_detections: int
    rows_per_shard: int
    reduced_decode: bool
    run_id: str
    fingerprint: str
    code_version: str
    created_at: datetime
    work_url: str = ""  # the run's work area, where pairing staged each unit's detections
    parameter_columns: dict = field(default_factory=dict)
    allow_uris: tuple[str, ...] = ()  # prefixes that `uri`/`path` values may name
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    webp_method: int | None = None  # webp only: libwebp's effort 0..6 (None: OpenCV's encoder)


def shard_name(context: JobContext, file_url: str, row_group: int, start: int, stop: int) -> str:
    key = f"{context.fingerprint}\n{file_url}\n{row_group}\n{start}\n{stop}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def crop_units(batch: pa.Table, context: JobContext) -> pa.Table:
    """Ray Data UDF: each row of ``batch`` is a planned ``Unit`` (Ray Data carries it as a row;
    it is a typed value again here); returns one marker row per shard."""
    _prepare_worker()
    markers = []
    for row in batch.to_pylist():
        markers += _crop_unit(Unit(**row), context)
    return pa.table({"marker": pa.array([json.dumps(m, sort_keys=True) for m in markers],
                                        pa.string())})


def _prepare_worker() -> None:
    """One thread per kernel, and (once per process) a malloc that keeps its memory.

    Ray runs one task per CPU; kernels that thread on their own would oversubscribe it. Numba's
    thread count belongs to the calling thread, so it is set on every call.
    glibc returns large freed blocks (a decoded 1080p image is 6 MB) to the OS and faults fresh
    zeroed pages in for the next one; keeping them cut the 1080p decode time by a third
    (281,000 page faults per 150 images down to 10,000).
    """
    global _WORKER_READY
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    if _WORKER_READY:
        return
    import cv2

    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        pass
    else:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest; heap-allocate below it
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)  # keep up to 256 MB of freed heap
    _WORKER_READY = True


_WORKER_READY = False
_MAX_CHUNK_BYTES = 2**31 - 1  # the most a pa.binary() array (32-bit offsets) can hold
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def _crop_unit(unit: Unit, context: JobContext) -> list[dict]:
    output = resolve(context.output_url)
    location = resolve(unit.file_url)
    n, step = unit.num_rows, context.rows_per_shard
    shards = [(start, min(start + step, n)) for start in range(0, n, step)]
    names = [shard_name(context, unit.file_url, unit.row_group, a, b) for a, b in shards]

    def committed() -> dict:
        # a marker found committed is an earlier attempt's shard: counted as resumed, not redone
        return {name: dict(m, resumed=True) if (m := read_marker(output, name)) else None
                for name in names}

    done = committed()
    if all(done.values()):
        return list(done.values())
    detections, skip = None, set()
    if unit.staged:  # pairing left this unit's detections and skipped rows in the work area
        try:
            detections, skip = pairing.read_unit_rows(resolve(context.work_url), unit.index)
        except MissingObjectError:
            # the same run, started twice, committed meanwhile and removed its work area
            done = committed()
            if all(done.values()):
                return list(done.values())
            raise StorageError(f"the work file of row group {unit.index} is missing; "
                               f"rerun to pair again") from None
        if context.layout.nested_detections or not context.step.needs_detections:
            detections = None
    detection_rows = detections.column(pairing.ROW).to_numpy() if detections is not None \
        else None
    columns = _columns_to_read(context)
    try:
        parquet = pq.ParquetFile(location.fs.open_input_file(location.path))
        rows = schema.plain_table(parquet.read_row_group(unit.row_group, columns=columns))
    except (OSError, pa.ArrowInvalid) as error:
        raise StorageError(f"cannot read {location.url}: {str(error).splitlines()[0]}") from None
    markers = []
    for (start, stop), name in zip(shards, names, strict=True):
        if done[name] is not None:
            markers.append(done[name])
            continue
        chunk = rows.slice(start, stop - start)
        if context.layout.nested_detections:
            chunk_detections = convert.flatten_nested_detections(chunk)
        elif detections is not None:
            lo, hi = np.searchsorted(detection_rows, [start, stop])
            chunk_detections = detections.slice(lo, hi - lo)
            chunk_detections = chunk_detections.set_column(
                chunk_detections.schema.get_field_index(pairing.ROW), pairing.ROW,
                pa.array(detection_rows[lo:hi] - start),
            )
        else:
            chunk_detections = None
        source_rows = [unit.first_row + start + i for i in range(stop - start)]
        skipped = {r - start for r in skip if start <= r < stop}
        shard = ShardBuilder(context, unit.file_url, source_rows)
        shard.crop_chunk(chunk, chunk_detections, skipped)
        markers.append(write_shard(output, name, shard.tables(), shard.counts,
                                   context.fingerprint))
    return markers


def _columns_to_read(context: JobContext) -> list[str]:
    layout = context.layout
    columns = [layout.id_column, layout.image_column, *layout.carried,
               *context.parameter_columns.values()]
    if layout.nested_detections:
        columns.append("detections")
    if layout.has_root:
        columns += list(schema.ROOT_COLUMNS)
    return list(dict.fromkeys(columns))


class ShardBuilder:
    """Accumulates one shard's crop, lineage and error rows."""

    def __init__(self, context: JobContext, file_url: str, source_rows: list[int]):
        self.context = context
        self.file_url = file_url
        self.source_rows = source_rows
        # `uri`/`path` values: only under the allowed prefixes; relative ones from the file's
        # folder
        self.fetch_policy = FetchPolicy(context.allow_uris, file_url.rsplit("/", 1)[0],
                                        context.max_image_bytes)
        # One entry per crop, in crop order; image-level values are kept per chunk row.
        self.crop_rows: list[int] = []
        self.crop_detection_ids: list = []
        self.crop_windows: list[tuple[int, int, int, int]] = []
        self.crop_data: list[bytes] = []
        self.crop_shapes: list[tuple[int, ...]] = []
        self.crop_sha256: list[str] = []
        self.crop_ids: list[str] = []
        self.crop_masks: list[dict | None] = []
        self.row_params: dict[int, dict] = {}  # row: per-image parameter values, as used
        self.image_values: dict[int, tuple[str, tuple[int, int]]] = {}  # row: (sha256, size)
        # crop_id = sha256 of this prefix, then the source, image, detection and window, each
        # part length-prefixed: no choice of ids (newlines included) makes two crops collide.
        self._crop_id_prefix = hashlib.sha256(_length_prefixed(
            context.code_version, context.step_json, context.image_format, str(context.quality),
            str(context.webp_method)))
        self.errors: list[dict] = []
        self.counts = {"images": 0, "images_decoded": 0, "images_without_detections": 0,
                       "detections": 0, "crops": 0, "errors": {}}
        # + "unmasked": crops that kept their background for lack of mask and polygon
        # Emitted detections (positions in the chunk's detections) and their crops' origins:
        # their predictions are moved into the crop frames once per shard, in ``tables``.
        self.chunk_detections: pa.Table | None = None
        self.images: pa.Table | None = None  # the chunk, set by crop_chunk
        self.ids: list = []
        self.roots: list[dict] | None = None
        self.emitted_positions: list[np.ndarray] = []
        self.emitted_offsets: list[np.ndarray] = []

    # -- rows ---------------------------------------------------------------------------
    def error(self, image_id, detection_id, stage, reason, message, row) -> None:
        self.errors.append({IMAGE_ID: image_id, schema.DETECTION_ID: detection_id,
                            "stage": stage, "reason": reason, "message": message,
                            "source_uri": self.source_uri(row)})
        self.counts["errors"][reason] = self.counts["errors"].get(reason, 0) + 1

    def source_uri(self, row: int) -> str:
        return f"{self.file_url}#row={self.source_rows[row]}"

    # -- the chunk ----------------------------------------------------------------------
    def crop_chunk(self, images: pa.Table, detections: pa.Table | None, skipped: set[int]):
        """Crop every row of ``images`` but the ``skipped`` ones, which become error rows:
        ``missing_id`` for a null id, ``duplicate_image_id`` for a repeated one."""
        context, layout = self.context, self.context.layout
        ids = images.column(layout.id_column).to_pylist()
        self.images, self.ids = images, ids
        self.counts["images"] = len(ids) - len(skipped)
        parameters = {
            name: images.column(column).to_pylist() if name == "background_color"
            else pc.cast(images.column(column), pa.float64()).to_numpy(zero_copy_only=False)
            for name, column in context.parameter_columns.items()
        }
        bounds = None
        if context.step.needs_detections:
            if detections is None:
                detections = pa.table({"__row": pa.array([], pa.int64())})
            self.chunk_detections = detections
            # once per chunk: a pass per image cost more than the check (pyarrow call overhead)
            malformed_obb = convert.malformed_oriented_boxes(detections)
            rows = detections.column("__row").to_numpy()
            bounds = np.searchsorted(rows, np.arange(len(ids) + 1))
            self.counts["detections"] = int(np.isin(rows, list(skipped), invert=True).sum())
        self.roots = images.select(list(schema.ROOT_COLUMNS)).to_pylist() if layout.has_root \
            else None
        sources = images.column(layout.image_column)
        for row, image_id in enumerate(ids):
            if row in skipped:  # a null or repeated id: pairing kept another row, or none
                if image_id is None:
                    self.error(None, None, "plan", "missing_id", pairing.NULL_IMAGE_ID, row)
                else:
                    self.error(image_id, None, "plan", "duplicate_image_id",
                               pairing.MESSAGES["duplicate_image_id"], row)
                continue
            values = {k: v[row] for k, v in parameters.items()}
            if values:
                self.row_params[row] = values  # lineage records the values used, per crop
            if bounds is not None:
                lo, hi = int(bounds[row]), int(bounds[row + 1])
                if lo == hi:
                    self.counts["images_without_detections"] += 1
                    continue  # nothing to cut: never fetched or decoded
                self._crop_detections(row, image_id, sources, detections.slice(lo, hi - lo), lo,
                                      malformed_obb[lo:hi], values)
            else:
                self._crop_static(row, image_id, sources, values)

    def _image(self, row: int, image_id, sources, detection_ids, shrink: float = 1.0) -> tuple:
        """Decoded pixels, the encoded bytes' sha256 and the full-size ``(width, height)``, or
        ``None`` after recording errors. With ``--reduced-decode``, a JPEG whose every crop
        shrinks by ``shrink >= 2`` is decoded at 1/2, 1/4 or 1/8 size (DCT scaling)."""
        layout = self.context.layout
        try:
            if layout.image_source == "uri":
                uri = sources[row].as_py()
                data = None if uri is None else fetch(uri, self.fetch_policy)
            elif layout.image_source == "struct":
                value = sources[row].as_py()
                data = None if value is None else value.get("bytes")
                if data is None and value is not None and value.get("path"):
                    data = fetch(value["path"], self.fetch_policy)
            else:
                data = sources[row].as_py()
        except MissingObjectError as error:
            # Only a permanent failure becomes an error row; a transient one fails the task,
            # which is retried, so a brief outage never commits a "fetch_failed" for good.
            for detection_id in detection_ids:
                self.error(image_id, detection_id, "read", "fetch_failed", str(error), row)
            return None
        if not data:
            for detection_id in detection_ids:
                self.error(image_id, detection_id, "read", "no_image_bytes",
                           "the image is null or empty", row)
            return None
        problem = self._resized_crop(row, data)
        if problem is not None:
            for detection_id in detection_ids:
                self.error(image_id, detection_id, "decode", "unsupported", problem, row)
            return None
        reduce = 1
        if self.context.reduced_decode and data[:2] == b"\xff\xd8":  # JPEG only: DCT scaling
            reduce = max([1] + [r for r in (2, 4, 8) if shrink >= r])
        try:
            # Every use of the pixels (crop views, masks, resizes) is encoded or copied before
            # this method runs again, so the thread's reused decode buffer is safe here.
            pixels = decode_image(data, max_pixels=self.context.max_pixels, reduce=reduce,
                                  reuse_buffer=True)
            size_wh = read_image_size(data) if reduce > 1 else (pixels.shape[1], pixels.shape[0])
        except ImageDecodeError as error:
            for detection_id in detection_ids:
                self.error(image_id, detection_id, "decode", error.reason, str(error), row)
            return None
        self.counts["images_decoded"] += 1
        return pixels, hashlib.sha256(data).hexdigest(), size_wh, reduce

    def _resized_crop(self, row: int, data: bytes) -> str | None:
        """Why an earlier run's crop cannot be cropped again: its pixels are not its root
        window's (crop_and_resize resized them), so windows in it do not map to the root by a
        translation. ``None`` for anything else (an undecodable header is the decoder's to
        report)."""
        root = self.roots[row] if self.roots is not None else None
        if root is None or root["root_image_id"] is None:
            return None
        try:
            size_wh = read_image_size(data)
        except ImageDecodeError:
            return None
        window_wh = (root["root_window_x_max"] - root["root_window_x_min"],
                     root["root_window_y_max"] - root["root_window_y_min"])
        if size_wh == window_wh:
            return None
        return (f"the image is a crop resized from its root window ({window_wh[0]}x"
                f"{window_wh[1]} there, {size_wh[0]}x{size_wh[1]} here): its crops would get "
                f"wrong root windows; crop the root images instead")

    def _crop_static(self, row: int, image_id, sources, parameters: dict) -> None:
        """The step's static window of one image (``step.crop``: cropcore's static crop)."""
        step = self.context.step
        values, problem = step.check(parameters)
        if problem is not None:
            self.error(image_id, None, "crop", "invalid_parameter", problem, row)
            return
        decoded = self._image(row, image_id, sources, [None])
        if decoded is None:
            return
        pixels, source_sha, size_wh, _ = decoded
        batch = step.crop(pixels, values)
        self._record(row, image_id, np.array([None], dtype=object), batch, size_wh, source_sha)

    def _crop_detections(self, row: int, image_id, sources, detections: pa.Table,
                         first: int, malformed_obb: np.ndarray,
                         values: dict | None = None) -> None:
        """Crops of one image's ``detections`` (rows ``first ..`` of the chunk's detections):
        the job's checks (ids, ``--max-detections``, ``malformed_obb``: oriented boxes that are
        not four corners), then the step's cropcore operation."""
        context, step = self.context, self.context.step
        detection_ids = detections.column(schema.DETECTION_ID).to_pylist()
        keep = np.ones(len(detection_ids), dtype=bool)
        if any(d is None for d in detection_ids):
            for i, detection_id in enumerate(detection_ids):
                if detection_id is None:
                    keep[i] = False
                    self.error(image_id, None, "plan", "missing_id",
                               "nested detection has a null detection_id", row)
        if context.layout.nested_detections and len(set(detection_ids)) < len(detection_ids):
            # a detections table is checked across images when it is paired; a nested list
            # within its image (crop ids include the image, so they stay unique across images)
            seen = set()
            for i, detection_id in enumerate(detection_ids):
                if detection_id is not None and detection_id in seen:
                    keep[i] = False
                    self.error(image_id, detection_id, "plan", "duplicate_detection_id",
                               "detection_id appears on an earlier detection of this image", row)
                seen.add(detection_id)
        if keep.sum() > context.max_detections:
            for i in np.flatnonzero(keep)[context.max_detections :]:
                keep[i] = False
                self.error(image_id, detection_ids[i], "plan", "too_many_detections",
                           f"the image has more than --max-detections "
                           f"{context.max_detections} detections", row)
        boxes = convert.boxes_xyxy(detections)
        # invalid boxes are known before any pixel is read: reported, never fetched or decoded
        reasons, messages = invalid_boxes(boxes)
        faults = box_faults(boxes)
        for fault in (NOT_FINITE, INVERTED):  # non-finite boxes first, then inverted ones
            for i in np.flatnonzero(keep & (faults == fault)):
                self.error(image_id, detection_ids[i], "crop", reasons[i], messages[i], row)
        keep &= np.equal(reasons, None)
        for i in np.flatnonzero(keep & malformed_obb):
            keep[i] = False
            self.error(image_id, detection_ids[i], "crop", "invalid_box",
                       "the oriented box (xyxyxyxy) is not four [x, y] corners of finite "
                       "numbers", row)
        if not keep.any():
            return
        try:
            resolved = step.resolve(values or {})
        except ValueError as error:
            for i in np.flatnonzero(keep):
                self.error(image_id, detection_ids[i], "crop", "invalid_parameter",
                           str(error), row)
            return
        if values:  # lineage records the values used
            values.update({k: v for k, v in resolved.items() if k in values})
        kept = np.flatnonzero(keep)
        decoded = self._image(row, image_id, sources, [detection_ids[i] for i in kept],
                              step.shrink(boxes[kept]))
        if decoded is None:
            return
        pixels, source_sha, size_wh, reduce = decoded
        image_detections = convert.detections_from_arrow(
            detections if len(kept) == len(keep) else detections.take(pa.array(kept)),
            polygons=step.needs_polygons(resolved))
        batch = step.crop(pixels, image_detections, size_wh, reduce, resolved)
        emitted = self._record(row, image_id, image_detections.detection_id, batch, size_wh,
                               source_sha)
        if batch.unmasked.any():
            self.counts["unmasked"] = self.counts.get("unmasked", 0) + int(batch.unmasked.sum())
        # their predictions move into the crop frames once per shard, in ``tables``
        self.emitted_positions.append(first + kept[emitted])
        self.emitted_offsets.append(batch.offsets[emitted])

    def _record(self, row: int, image_id, detection_ids, batch: CropBatch, size_wh,
                source_sha) -> np.ndarray:
        """Error rows for the batch's reasons (all invalid boxes, then empty windows, then
        invalid masks, each in detection order), every crop emitted; returns the positions
        that became crops."""
        for reason in REASONS:
            for i in np.flatnonzero(np.equal(batch.reasons, reason)):
                self.error(image_id, detection_ids[i], "crop", reason, batch.messages[i], row)
        emitted = np.flatnonzero(batch.cropped)
        for i in emitted.tolist():
            self._emit(row, image_id, detection_ids[i], batch.crops[i],
                       tuple(batch.windows[i].tolist()), size_wh, source_sha, batch.masks[i])
        return emitted

    def _predictions(self) -> pa.Table | None:
        """The emitted detections' predictions in their crops' frames, in crop order."""
        if not self.emitted_positions:
            return None
        return convert.predictions_in_crops(self.chunk_detections,
                                            np.concatenate(self.emitted_positions),
                                            np.concatenate(self.emitted_offsets))

    def _emit(self, row, image_id, detection_id, crop, window, size_wh, source_sha,
              mask: dict | None = None) -> None:
        """Encode one crop (exactly once) and record it; the shard's columns are built from these
        lists in ``tables``."""
        context = self.context
        if context.image_format == "npy":
            data = np.ascontiguousarray(crop).tobytes()
        else:
            if crop.dtype != np.uint8:
                crop = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
            data = encode_image(crop, context.image_format, context.quality,
                                webp_method=context.webp_method)
        x0, y0, x1, y1 = window
        crop_id = self._crop_id_prefix.copy()
        crop_id.update(_length_prefixed(source_sha, image_id, detection_id,
                                        f"{x0},{y0},{x1},{y1}"))
        self.image_values[row] = (source_sha, size_wh)
        self.crop_rows.append(row)
        self.crop_detection_ids.append(detection_id)
        self.crop_windows.append(window)
        self.crop_data.append(data)
        self.crop_shapes.append(crop.shape)
        self.crop_sha256.append(hashlib.sha256(data).hexdigest())
        self.crop_ids.append(crop_id.hexdigest()[:32])
        self.crop_masks.append(mask)
        self.counts["crops"] += 1

    # -- tables -------------------------------------------------------------------------
    def tables(self) -> dict[str, pa.Table]:
        context = self.context
        n = len(self.crop_ids)
        rows = self.crop_rows
        windows = np.array(self.crop_windows, dtype=np.int64).reshape(-1, 4)
        shapes = np.array([shape[:2] for shape in self.crop_shapes], dtype=np.int32).reshape(-1, 2)
        parents = np.array([self.image_values[r][1] for r in rows], dtype=np.int64).reshape(-1, 2)
        image_ids = [self.ids[r] for r in rows] if n else []
        crop_columns = {
            "crop_id": pa.array(self.crop_ids, pa.string()),
            IMAGE_ID: pa.array(image_ids, pa.string()),
            schema.DETECTION_ID: pa.array(self.crop_detection_ids, pa.string()),
            "crop": self._crop_column(),
            "width": shapes[:, 1], "height": shapes[:, 0],
        }
        if context.step.needs_detections:
            predictions = self._predictions()
            for name in schema.BOX_COLUMNS:
                crop_columns[name] = (predictions.column(name) if predictions is not None
                                      else pa.array([], pa.float64()))
            crop_columns["mask"] = pa.array(self.crop_masks, schema.RLE_TYPE)
            for name, kind in (("keypoints", schema.KEYPOINTS_TYPE),
                               ("polygon", schema.POLYGON_TYPE),
                               (schema.ORIENTED_BOX, schema.ORIENTED_BOX_TYPE),
                               ("class_name", pa.string()),
                               ("class_id", pa.int64()), ("confidence", pa.float64())):
                if predictions is not None and name in predictions.column_names:
                    crop_columns[name] = pc.cast(predictions.column(name), kind)
                else:
                    crop_columns[name] = pa.nulls(n, kind)
            if "iscrowd" in self.chunk_detections.column_names:  # COCO's flag, carried as is
                crop_columns["iscrowd"] = (pc.cast(predictions.column("iscrowd"), pa.bool_())
                                           if predictions is not None else pa.nulls(n, pa.bool_()))
        crop_columns.update(self._root_columns(image_ids, windows, parents))
        carried = {}
        if context.layout.carried and self.images is not None:
            taken = self.images.select(list(context.layout.carried)).take(
                pa.array(rows, pa.int64()))
            carried = {name: pc.cast(taken.column(name), kind) for name, kind in
                       zip(context.layout.carried, context.layout.carried_types, strict=True)}
        # Hugging Face datasets' features in the schema: `crop` loads as an Image, no cast.
        crops = with_hf_features(pa.table({**crop_columns, **carried}))
        uris = {r: self.source_uri(r) for r in set(rows)}

        def repeated(value, kind=None):
            return pa.array([value] * n, kind or pa.string())

        lineage = pa.table({
            "crop_id": crop_columns["crop_id"],
            IMAGE_ID: crop_columns[IMAGE_ID],
            schema.DETECTION_ID: crop_columns[schema.DETECTION_ID],
            "source_uri": pa.array([uris[r] for r in rows], pa.string()),
            "source_sha256": pa.array([self.image_values[r][0] for r in rows], pa.string()),
            "window_x_min": windows[:, 0], "window_y_min": windows[:, 1],
            "window_x_max": windows[:, 2], "window_y_max": windows[:, 3],
            "parent_width": parents[:, 0], "parent_height": parents[:, 1],
            "step_type": repeated(context.step.type),
            "step_params": self._step_params(rows),
            "run_id": repeated(context.run_id),
            "code_version": repeated(context.code_version),
            "created_at": repeated(context.created_at, pa.timestamp("us", tz="UTC")),
            "crop_sha256": pa.array(self.crop_sha256, pa.string()),
            **{name: crop_columns[name] for name in schema.ROOT_COLUMNS},
            **carried,
        })
        errors = pa.Table.from_pylist(self.errors, schema=schema.ERROR_SCHEMA)
        return {"crops": crops, "lineage": lineage, "errors": errors}

    def _step_params(self, rows: list[int]) -> pa.Array:
        """Each crop's step JSON with its per-image parameters resolved to the values used."""
        step, canonical = self.context.step, self.context.step_json
        resolved = {r: steps.resolved_json(step, values) for r, values in self.row_params.items()}
        return pa.array([resolved.get(r, canonical) for r in rows], pa.string())

    def _root_columns(self, image_ids: list, windows: np.ndarray, parents: np.ndarray) -> dict:
        """Where each crop lies in its root image: the image itself, or, for an input that is
        an earlier run's crops, that crop's root window moved by this crop's window."""
        root_ids = list(image_ids)
        widths, heights = parents[:, 0].tolist(), parents[:, 1].tolist()
        offsets = np.zeros((len(windows), 2), dtype=np.int64)
        if self.roots is not None:
            for k, row in enumerate(self.crop_rows):
                root = self.roots[row]
                if root["root_image_id"] is not None:
                    offsets[k] = root["root_window_x_min"], root["root_window_y_min"]
                    root_ids[k] = root["root_image_id"]
                    widths[k], heights[k] = root["root_width"], root["root_height"]
        windows_in_root = root_windows(windows, offsets)
        return {"root_image_id": pa.array(root_ids, pa.string()),
                **{name: windows_in_root[:, k]
                   for k, name in enumerate(schema.ROOT_COLUMNS[1:5])},
                "root_width": pa.array(widths, pa.int64()),
                "root_height": pa.array(heights, pa.int64())}

    def _crop_column(self) -> pa.Array:
        data = self.crop_data
        if self.context.image_format != "npy":
            extension = schema.CROP_FORMATS[self.context.image_format]
            paths = pa.array([f"{crop_id}.{extension}" for crop_id in self.crop_ids], pa.string())
            pieces = [pa.StructArray.from_arrays([blobs, paths[start:stop]],
                                                 fields=list(schema.HF_IMAGE_TYPE))
                      for start, stop, blobs in _binary_arrays(data)]
            return pieces[0] if len(pieces) == 1 else pa.chunked_array(pieces)
        # float32 [h][w][c] fixed-size lists (schema.npy_crop_type): Hugging Face datasets,
        # polars and pyarrow read them with their shape (fixed_shape_tensor fails in datasets).
        depth = self.crop_shapes[0][2] if self.crop_shapes else 3
        flat = np.frombuffer(b"".join(data), dtype=np.float32)
        return schema.npy_crop_array(flat, (*self.context.step.crop_size, depth))


def _binary_arrays(blobs: list[bytes]) -> list[tuple[int, int, pa.Array]]:
    """``blobs`` as ``(start, stop, pa.binary() array of blobs[start:stop])`` pieces, each built
    with one copy into one buffer (no per-blob Python objects); a new piece starts before one
    would pass the 2 GiB that pa.binary()'s 32-bit offsets address."""
    bounds, start, size = [], 0, 0
    for k, blob in enumerate(blobs):
        if len(blob) > _MAX_CHUNK_BYTES:
            raise ValueError(f"crop {k} of the shard alone is more than 2 GiB")
        if size + len(blob) > _MAX_CHUNK_BYTES:
            bounds.append((start, k))
            start, size = k, 0
        size += len(blob)
    bounds.append((start, len(blobs)))
    pieces = []
    for start, stop in bounds:
        part = blobs[start:stop]
        offsets = np.zeros(len(part) + 1, dtype=np.int32)
        np.cumsum([len(blob) for blob in part], out=offsets[1:])
        pieces.append((start, stop, pa.Array.from_buffers(
            pa.binary(), len(part), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(part))])))
    return pieces


def _length_prefixed(*parts: str | None) -> bytes:
    """Each part as ``<utf-8 byte length>:<bytes>`` (``None`` as ``-``): an unambiguous encoding
    of the sequence."""
    out = bytearray()
    for part in parts:
        if part is None:
            out += b"-"
            continue
        data = str(part).encode("utf-8", "surrogatepass")
        out += b"%d:" % len(data) + data
    return bytes(out)


def now() -> datetime:
    return datetime.now(UTC)
