"""A visual report of a committed run: a contact sheet PNG and a self-contained HTML page.

``python -m jobs report OUTPUT`` writes::

    report/contact_sheet.png    for a few parent images (at most --max-parents, chosen by a hash
                                of their source, so the same run always shows the same ones): the
                                parent with every crop window drawn (one colour per class), and
                                beside it its crops as thumbnails with their masks outlined
    report/index.html           run id, step, code version, the manifest's counts, errors by
                                reason and a sample of error rows, crop width and height
                                histograms (inline SVG), and the contact sheet as a data URI;
                                no script and no external resource

Parents are found through lineage: ``source_uri`` is ``<images parquet url>#row=N``; the row is
read with the same layout rules as the job (binary ``image``, Hugging Face ``image`` struct,
``uri``, or the ``crop``/``crop_id`` columns of an earlier run's crops). A parent that cannot be
read now (moved, changed since the run, undecodable) is skipped and listed in the HTML.
Pixels are BGR throughout (OpenCV order), and so are the colours below.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import sys
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cropcore.codec import ImageDecodeError, decode_image, read_image_size
from cropcore.masks import decode_rle
from jobs import schema
from jobs.fetch import DEFAULT_MAX_IMAGE_BYTES, FetchPolicy, fetch, parse_allow_list
from jobs.ownership import lies_within
from jobs.runs import CommittedRun, RunError, open_run, tool_files
from jobs.storage import Location, StorageError, open_parquet, resolve, write_atomic

__all__ = [
    "CropThumb",
    "ParentPanel",
    "ParentUnreadable",
    "Report",
    "add_arguments",
    "class_colours",
    "command",
    "read_parent_image",
    "render_contact_sheet",
    "render_html",
    "svg_histogram",
    "write_report",
]

EXAMPLE = """example:
  python -m jobs report demo-output/crops-run
  python -m jobs report s3://bucket/crops-v1/ --max-parents 4
then open demo-output/crops-run/report/index.html in a browser."""

# Layout of the contact sheet, in pixels.
MARGIN = 16
PARENT_MAX_WH = (480, 360)
THUMB = 104  # the square a thumbnail is fitted into
CELL_WH = (118, THUMB + 34)  # thumbnail plus two label lines
THUMB_COLUMNS = 8
MAX_THUMB_ROWS = 3
STRIP_X = 2 * MARGIN + PARENT_MAX_WH[0]
SHEET_WIDTH = STRIP_X + THUMB_COLUMNS * CELL_WH[0] + MARGIN
ROW_TITLE_H = 24
MAX_READ_ATTEMPTS_PER_PARENT = 3  # unreadable candidates tried before giving up

FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND = (34, 30, 28)
PANEL = (52, 47, 44)
TEXT = (240, 240, 240)
TEXT_DIM = (170, 165, 160)
NO_CLASS = (160, 160, 160)
KEYPOINT_COLOUR = (0, 255, 255)  # BGR yellow, ringed in near-black
OBB_COLOUR = (255, 255, 255)  # oriented boxes in white, corner 0 marked
OBB_COLUMN = "xyxyxyxy"  # supervision's and Roboflow's key for oriented-box corners
# A qualitative palette bright enough to read on the dark sheet (BGR).
PALETTE = (
    (255, 170, 60), (60, 160, 255), (90, 215, 90), (90, 90, 240), (220, 130, 200),
    (60, 220, 230), (200, 200, 70), (150, 120, 255), (130, 200, 255), (255, 120, 160),
)


class ParentUnreadable(Exception):
    """A parent image that cannot be read or trusted now; the message says why."""


@dataclass(frozen=True)
class CropThumb:
    """One crop as the sheet shows it. ``window`` is ``(x_min, y_min, x_max, y_max)`` in parent
    pixels, half-open; ``pixels`` uint8 BGR ``[h, w, 3]``; ``mask`` bool ``[h, w]`` in the crop
    frame, or ``None``. ``polygon`` ``[n, 2]``, ``keypoints`` ``[k, 3]`` (x, y, confidence; NaN
    confidence when unknown) and ``obb`` (an oriented box's ``[4, 2]`` corners) are float pixel
    coordinates in the crop frame, or ``None``."""

    crop_id: str
    detection_id: str | None
    class_name: str | None
    window: tuple[int, int, int, int]
    pixels: np.ndarray
    mask: np.ndarray | None = None
    polygon: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    obb: np.ndarray | None = None


@dataclass(frozen=True)
class ParentPanel:
    """A parent image (uint8 BGR ``[H, W, 3]``, possibly decoded at a reduced size) and its
    crops. ``size_wh`` is the parent's full size, the frame the windows are in."""

    image_id: str
    source_uri: str
    pixels: np.ndarray
    size_wh: tuple[int, int]
    crops: list[CropThumb] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote: URLs, and which parents were drawn or skipped (and why)."""

    sheet_url: str
    html_url: str
    parents_drawn: list[str]
    parents_skipped: list[tuple[str, str]]


# -- reading parents --------------------------------------------------------------------------
def _split_source_uri(source_uri: str) -> tuple[str, int]:
    url, marker, row = str(source_uri).rpartition("#row=")
    if not marker or not url or not row.isdigit():
        raise ParentUnreadable(f"expected a source_uri like '<parquet url>#row=N', got "
                               f"{source_uri!r}")
    return url, int(row)


def _image_bytes(source_uri: str, policy: FetchPolicy | None) -> bytes:
    url, row = _split_source_uri(source_uri)
    if url == schema.SINK_SOURCE:
        # a CropSink run records "ray-data#row=N": no file to read (never the working folder)
        raise ParentUnreadable(f"{source_uri} names no images file (a run written from a Ray "
                               f"Data pipeline of one's own records none)")
    location = resolve(url)
    try:
        parquet = open_parquet(location)
        layout = schema.images_layout(parquet.schema_arrow, keep_columns=(),
                                      parameter_columns={})
        start = 0
        for group in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            if row < start + rows:
                column = parquet.read_row_group(group, columns=[layout.image_column]).column(0)
                value = column[row - start].as_py()
                break
            start += rows
        else:
            raise ParentUnreadable(f"{location.url} has {start} rows; expected row {row}")
    except (OSError, pa.ArrowInvalid, schema.SchemaError) as error:
        raise ParentUnreadable(f"cannot read {location.url}: "
                               f"{str(error).splitlines()[0]}") from None
    # what the run fetched, the report fetches under the run's own rules (jobs.fetch)
    if policy is None:
        policy = FetchPolicy((), "")
    policy = FetchPolicy(policy.allowed, location.url.rsplit("/", 1)[0], policy.max_bytes)
    if layout.image_source == "uri":
        data = None if value is None else fetch(value, policy)
    elif layout.image_source == "struct":
        data = None if value is None else value.get("bytes")
        if not data and value is not None and value.get("path"):
            data = fetch(value["path"], policy)
    else:
        data = value
    if not data:
        raise ParentUnreadable(f"row {row} of {location.url} has no image bytes")
    return data


def read_parent_image(source_uri: str, expected_sha256: str | None = None,
                      fit_wh: tuple[int, int] | None = None,
                      policy: FetchPolicy | None = None) -> np.ndarray:
    """Decode the parent image a lineage ``source_uri`` (``<parquet url>#row=N``) points at.

    Args:
        source_uri: ``<images parquet url>#row=N``, N the row's index in that file.
        expected_sha256: the lineage ``source_sha256``; when given, bytes that differ (the
            input was rewritten since the run) are refused rather than drawn with wrong boxes.
        fit_wh: when given, decode at 1/2, 1/4 or 1/8 of the size if the result still covers
            this box once fitted (cheap previews of large images).
        policy: what a ``uri`` (or Hugging Face ``path``) value may name and its size cap, as
            ``report --allow-uris`` gives them (``report_fetch_policy``); ``None`` reads
            none.

    Returns:
        ndarray[H, W, 3] uint8, BGR.

    Raises:
        ParentUnreadable: with the reason, for anything that stops the image being shown.
    """
    try:
        data = _image_bytes(source_uri, policy)
        if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
            raise ParentUnreadable(f"{source_uri} changed since the run: its sha256 differs "
                                   f"from lineage's {expected_sha256[:12]}...")
        reduce = 1
        if fit_wh is not None:
            width, height = read_image_size(data)
            scale = min(fit_wh[0] / width, fit_wh[1] / height, 1.0)
            while reduce < 8 and width * scale <= width / (2 * reduce) \
                    and height * scale <= height / (2 * reduce):
                reduce *= 2
        return decode_image(data, reduce=reduce)
    except StorageError as error:
        raise ParentUnreadable(str(error)) from None
    except ImageDecodeError as error:
        raise ParentUnreadable(f"cannot decode {source_uri}: {error}") from None


# -- gathering what to draw -------------------------------------------------------------------
def _lineage_with_shards(run: CommittedRun) -> pa.Table | None:
    columns = ["crop_id", schema.IMAGE_ID, schema.DETECTION_ID, "source_uri", "source_sha256",
               "window_x_min", "window_y_min", "window_x_max", "window_y_max", "parent_width",
               "parent_height"]
    tables = []
    for shard, entry in run.files("lineage"):
        names = set(run.read_schema(entry).names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise RunError(f"expected lineage columns {', '.join(missing)} in "
                              f"{run.location(entry).url}; it has {', '.join(sorted(names))}")
        table = run.read(entry, columns)
        tables.append(table.append_column("shard", pa.array([shard] * table.num_rows,
                                                            pa.string())))
    return pa.concat_tables(tables) if tables else None


def _candidate_order(source_uri: str) -> str:
    # A hash spreads the choice over files and row groups yet is the same on every report.
    return hashlib.sha256(source_uri.encode()).hexdigest()


def report_fetch_policy(run: CommittedRun, allow_uris: str | tuple[str, ...] = ()
                        ) -> FetchPolicy:
    """What a parent's ``uri`` (or Hugging Face ``path``) may name: the prefixes given to
    ``report --allow-uris``, never the run's own (its manifest is only as trusted as the
    folder it sits in), within the run's ``--max-image-bytes`` (at most the default)."""
    settings = run.manifest.get("settings") or {}
    max_bytes = settings.get("max_image_bytes")
    if not isinstance(max_bytes, int) or not 0 < max_bytes < DEFAULT_MAX_IMAGE_BYTES:
        max_bytes = DEFAULT_MAX_IMAGE_BYTES
    return FetchPolicy(parse_allow_list(allow_uris), "", max_bytes)


def _images_input(run: CommittedRun) -> Location | None:
    """The images input the run's manifest records (parents are read only inside it)."""
    images = (run.manifest.get("inputs") or {}).get("images")
    try:
        return resolve(images) if isinstance(images, str) and images else None
    except (ValueError, StorageError):
        return None


def _check_inside_input(source_uri: str, images_input: Location | None) -> None:
    url, _ = _split_source_uri(source_uri)
    if url == schema.SINK_SOURCE:
        return  # refused with its own reason by read_parent_image
    if images_input is None or not lies_within(resolve(url), images_input):
        raise ParentUnreadable(f"{url} is not inside the run's images input "
                               f"({images_input.url if images_input else 'none recorded'})")


def _gather_panels(run: CommittedRun, lineage: pa.Table | None, max_parents: int,
                   allow_uris: str | tuple[str, ...] = ()):
    """Up to ``max_parents`` readable parents with their crops, and the parents skipped (why)."""
    if lineage is None or lineage.num_rows == 0 or max_parents < 1:
        return [], []
    # Rank the distinct parents only; the rows of a large run's lineage stay in Arrow.
    parents = pc.unique(lineage.column("source_uri")).to_pylist()
    candidates = sorted(parents, key=_candidate_order)[: max_parents * MAX_READ_ATTEMPTS_PER_PARENT]
    chosen = lineage.filter(pc.is_in(lineage.column("source_uri"), pa.array(candidates)))
    by_parent: dict[str, list[dict]] = {}
    for row in chosen.to_pylist():
        by_parent.setdefault(row["source_uri"], []).append(row)
    crops_files = dict(run.files("crops"))
    policy = report_fetch_policy(run, allow_uris)
    images_input = _images_input(run)
    panels, skipped = [], []
    for source_uri in candidates:
        if len(panels) == max_parents:
            break
        parent_rows = by_parent[source_uri]
        first = parent_rows[0]
        try:
            _check_inside_input(source_uri, images_input)
            pixels = read_parent_image(source_uri, first["source_sha256"], PARENT_MAX_WH, policy)
            crops = _read_crops(run, crops_files, parent_rows)
        except (ParentUnreadable, StorageError) as error:
            skipped.append((source_uri, str(error)))
            continue
        size_wh = (int(first["parent_width"]), int(first["parent_height"]))
        panels.append(ParentPanel(first[schema.IMAGE_ID], source_uri, pixels, size_wh, crops))
    return panels, skipped


def _read_crops(run: CommittedRun, crops_files: dict, parent_rows: list[dict]) -> list:
    windows = {r["crop_id"]: (r["window_x_min"], r["window_y_min"], r["window_x_max"],
                              r["window_y_max"]) for r in parent_rows}
    thumbs = []
    for shard in sorted({r["shard"] for r in parent_rows}):
        entry = crops_files.get(shard)
        if entry is None:
            continue
        names = set(run.read_schema(entry).names)
        columns = [c for c in ("crop_id", schema.DETECTION_ID, "crop", "mask", "class_name",
                               "polygon", "keypoints", OBB_COLUMN) if c in names]
        ids = [r["crop_id"] for r in parent_rows if r["shard"] == shard]
        table = run.read(entry, columns, filters=pc.field("crop_id").isin(ids))
        pixels = _crop_pixels(table.column("crop"))
        for row, image in zip(table.drop_columns(["crop"]).to_pylist(), pixels, strict=True):
            mask = None
            if row.get("mask"):
                try:
                    mask = decode_rle(row["mask"])
                except (ValueError, TypeError):
                    mask = None  # a bad mask is the job's error to report, not the sheet's
                if mask is not None and mask.shape != image.shape[:2]:
                    mask = None
            thumbs.append(CropThumb(row["crop_id"], row.get(schema.DETECTION_ID),
                                    row.get("class_name"), windows[row["crop_id"]], image, mask,
                                    *_geometry(row)))
    thumbs.sort(key=lambda t: (t.detection_id or "", t.crop_id))
    return thumbs


def _points(value, width: int) -> np.ndarray | None:
    """A nested list of numbers as a finite float ``[n, width]`` array, or ``None``."""
    try:
        points = np.asarray(value, dtype=np.float64).reshape(-1, width)
    except (TypeError, ValueError):
        return None
    return points if len(points) and np.isfinite(points[:, :2]).all() else None


def _geometry(row: dict) -> tuple:
    """``(polygon, keypoints, obb)`` of a crops row, each ``None`` when absent or malformed."""
    polygon = _points(row["polygon"], 2) if row.get("polygon") else None
    keypoints = None
    if row.get("keypoints"):
        keypoints = _points([[k.get("x"), k.get("y"),
                              np.nan if k.get("confidence") is None else k["confidence"]]
                             for k in row["keypoints"] if k], 3)
    obb = _points(row[OBB_COLUMN], 2) if row.get(OBB_COLUMN) is not None else None
    return polygon if polygon is not None and len(polygon) >= 2 else None, keypoints, \
        obb if obb is not None and len(obb) == 4 else None


def _crop_pixels(column: pa.ChunkedArray) -> list[np.ndarray]:
    """uint8 BGR images of a crops ``crop`` column (encoded images, or float32 tensors)."""
    if schema.is_npy_crop_type(column.type):
        tensors = schema.npy_crop_tensors(column)
        images = np.clip(np.rint(tensors), 0, 255).astype(np.uint8)
        return [_as_bgr(image) for image in images]
    images = []
    for value in column.to_pylist():
        try:
            images.append(_as_bgr(decode_image(value["bytes"])))
        except (ImageDecodeError, TypeError, KeyError):
            images.append(np.zeros((8, 8, 3), np.uint8))
    return images


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
    return image[:, :, :3]


# -- drawing ----------------------------------------------------------------------------------
def class_colours(class_names) -> dict:
    """A BGR colour per class name, assigned in sorted name order (``None`` is grey)."""
    names = sorted({n for n in class_names if n is not None})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    colours[None] = NO_CLASS
    return colours


def _text(image, text, origin, scale=0.42, colour=TEXT, thickness=1, background=None) -> int:
    """Draw ``text`` with its baseline at ``origin``; returns its width in pixels."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    x, y = int(origin[0]), int(origin[1])
    if background is not None:
        cv2.rectangle(image, (x - 2, y - height - 3), (x + width + 2, y + baseline),
                      background, cv2.FILLED)
    cv2.putText(image, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)
    return width


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fit_text(text: str, max_width: int, scale: float = 0.42) -> str:
    """``text``, shortened with '..' (Hershey fonts are ASCII) until it fits ``max_width``."""
    text = str(text)
    if cv2.getTextSize(text, FONT, scale, 1)[0][0] <= max_width:
        return text
    while text and cv2.getTextSize(text + "..", FONT, scale, 1)[0][0] > max_width:
        text = text[:-1]
    return text + ".."


def _short_detection_id(detection_id: str | None, image_id: str) -> str:
    # Detection ids often repeat the image id ("img-000001-det-003"); the suffix is what differs.
    if detection_id is None:
        return "static crop"
    if image_id and detection_id.startswith(image_id) and len(detection_id) > len(image_id):
        return detection_id[len(image_id):].lstrip("-_:/")
    return detection_id


def _fit(image: np.ndarray, box_wh: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    scale = min(box_wh[0] / width, box_wh[1] / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Nearest when enlarging shows a small crop's true pixels instead of a blur.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    return cv2.resize(image, size, interpolation=interpolation)


def _draw_parent(panel: ParentPanel, colours: dict) -> np.ndarray:
    # Sized from the full parent size, as the windows are; the pixels may be a reduced decode.
    image = cv2.resize(panel.pixels, _fitted_wh(panel.size_wh), interpolation=cv2.INTER_AREA)
    scale_x = image.shape[1] / panel.size_wh[0]
    scale_y = image.shape[0] / panel.size_wh[1]
    boxes = []
    for index, crop in enumerate(panel.crops, start=1):
        x0, y0, x1, y1 = crop.window
        # Half-open windows: the last pixel inside is x1 - 1.
        p0 = (int(x0 * scale_x), int(y0 * scale_y))
        p1 = (max(p0[0], int(np.ceil(x1 * scale_x)) - 1),
              max(p0[1], int(np.ceil(y1 * scale_y)) - 1))
        colour = colours.get(crop.class_name, NO_CLASS)
        cv2.rectangle(image, p0, p1, colour, 2, cv2.LINE_AA)
        boxes.append((index, p0, colour))
    # Tags last, so no box line crosses a number.
    for index, (x, y), colour in boxes:
        tag = str(index)
        (w, h), _ = cv2.getTextSize(tag, FONT, 0.38, 1)
        x = min(max(x, 0), image.shape[1] - w - 4)
        y = min(max(y, 0), image.shape[0] - h - 5)
        cv2.rectangle(image, (x, y), (x + w + 4, y + h + 5), colour, cv2.FILLED)
        cv2.putText(image, tag, (x + 2, y + h + 2), FONT, 0.38, (20, 20, 20), 1, cv2.LINE_AA)
    return image


def _draw_thumb(crop: CropThumb, colour) -> np.ndarray:
    thumb = _fit(crop.pixels, (THUMB, THUMB)).copy()
    if crop.mask is not None and crop.mask.any():
        mask = cv2.resize(crop.mask.astype(np.uint8), (thumb.shape[1], thumb.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
        tint = np.empty_like(thumb)
        tint[:] = colour
        blended = cv2.addWeighted(thumb, 0.7, tint, 0.3, 0)
        thumb[mask > 0] = blended[mask > 0]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(thumb, contours, -1, colour, 1, cv2.LINE_AA)
    # Geometry in the crop frame, scaled to the thumbnail: pixel (x, y) covers [x, x + 1).
    scale = np.array([thumb.shape[1] / crop.pixels.shape[1], thumb.shape[0] / crop.pixels.shape[0]])

    def to_thumb(points: np.ndarray) -> np.ndarray:
        # far-off vertices (a polygon may reach anywhere) stay within int32; OpenCV clips lines
        return np.rint(np.clip(points[:, :2] * scale, -1e6, 1e6)).astype(np.int32)

    if crop.polygon is not None:
        cv2.polylines(thumb, [to_thumb(crop.polygon)], True, colour, 1, cv2.LINE_AA)
    if crop.obb is not None:
        corners = to_thumb(crop.obb)
        cv2.polylines(thumb, [corners], True, OBB_COLOUR, 1, cv2.LINE_AA)
        cv2.circle(thumb, tuple(int(v) for v in corners[0]), 2, OBB_COLOUR, cv2.FILLED)
    if crop.keypoints is not None:
        for (x, y), confidence in zip(to_thumb(crop.keypoints).tolist(),
                                      crop.keypoints[:, 2].tolist(), strict=True):
            if confidence == 0:  # a keypoint the model did not see
                continue
            cv2.circle(thumb, (x, y), 3, (20, 20, 20), cv2.FILLED, cv2.LINE_AA)
            cv2.circle(thumb, (x, y), 2, KEYPOINT_COLOUR, cv2.FILLED, cv2.LINE_AA)
    return thumb


def _strip_layout(n_crops: int) -> tuple[int, int, int]:
    """Columns, rows and how many thumbnails fit (the last cell says '+N more' if not all)."""
    columns = THUMB_COLUMNS
    rows = min(MAX_THUMB_ROWS, max(1, -(-n_crops // columns)))
    shown = n_crops if n_crops <= columns * rows else columns * rows - 1
    return columns, rows, shown


def _paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    canvas[y : y + image.shape[0], x : x + image.shape[1]] = image


def render_contact_sheet(panels: list[ParentPanel], title: str, subtitle: str,
                         colours: dict, note: str | None = None) -> np.ndarray:
    """The contact sheet: a header with a class legend, then one row per parent.

    Returns:
        ndarray[H, SHEET_WIDTH, 3] uint8, BGR; ``H`` grows with the number of panels.
    """
    strip_x = STRIP_X
    legend = sorted(name for name in colours if name is not None)
    if any(c.class_name is None for p in panels for c in p.crops):
        legend.append(None)
    header_h = 76 if legend else 56
    row_heights = []
    for panel in panels:
        parent_h = _fitted_wh(panel.size_wh)[1]
        _, rows, _ = _strip_layout(len(panel.crops))
        row_heights.append(ROW_TITLE_H + max(parent_h, rows * CELL_WH[1]) + MARGIN)
    body_h = sum(row_heights) if panels else 60
    sheet = np.empty((header_h + body_h + MARGIN, SHEET_WIDTH, 3), np.uint8)
    sheet[:] = BACKGROUND

    _text(sheet, _fit_text(title, SHEET_WIDTH - 2 * MARGIN, 0.7), (MARGIN, 30), 0.7, TEXT, 2)
    _text(sheet, _fit_text(subtitle, SHEET_WIDTH - 2 * MARGIN), (MARGIN, 52), 0.45, TEXT_DIM)
    if header_h > 56:
        x = MARGIN
        for name in legend:
            label = "no class" if name is None else str(name)
            label = _fit_text(label, 200)
            width = cv2.getTextSize(label, FONT, 0.42, 1)[0][0]
            if x + 18 + width > SHEET_WIDTH - MARGIN:
                break
            cv2.rectangle(sheet, (x, 61), (x + 12, 73), colours.get(name, NO_CLASS), cv2.FILLED)
            _text(sheet, label, (x + 18, 72), 0.42, TEXT)
            x += 18 + width + 22
    cv2.line(sheet, (MARGIN, header_h - 1), (SHEET_WIDTH - MARGIN, header_h - 1), PANEL, 1)

    if not panels:
        _text(sheet, _fit_text(note or "nothing to show", SHEET_WIDTH - 2 * MARGIN),
              (MARGIN, header_h + 36), 0.5, TEXT_DIM)
        return sheet

    y = header_h + MARGIN // 2
    for panel, row_h in zip(panels, row_heights, strict=True):
        file_name = panel.source_uri.rsplit("/", 1)[-1]
        heading = (f"{panel.image_id}   {panel.size_wh[0]}x{panel.size_wh[1]}   "
                   f"{_count(len(panel.crops), 'crop')}   {file_name}")
        _text(sheet, _fit_text(heading, SHEET_WIDTH - 2 * MARGIN, 0.48), (MARGIN, y + 16), 0.48)
        top = y + ROW_TITLE_H
        parent = _draw_parent(panel, colours)
        _paste(sheet, parent, MARGIN, top)
        columns, rows, shown = _strip_layout(len(panel.crops))
        for k, crop in enumerate(panel.crops[:shown]):
            cell_x = strip_x + (k % columns) * CELL_WH[0]
            cell_y = top + (k // columns) * CELL_WH[1]
            colour = colours.get(crop.class_name, NO_CLASS)
            cv2.rectangle(sheet, (cell_x, cell_y), (cell_x + THUMB + 3, cell_y + THUMB + 3),
                          PANEL, cv2.FILLED)
            thumb = _draw_thumb(crop, colour)
            tx = cell_x + 2 + (THUMB - thumb.shape[1]) // 2
            ty = cell_y + 2 + (THUMB - thumb.shape[0]) // 2
            _paste(sheet, thumb, tx, ty)
            cv2.rectangle(sheet, (tx - 1, ty - 1), (tx + thumb.shape[1], ty + thumb.shape[0]),
                          colour, 1)
            label_width = THUMB + 4
            size = f"{crop.pixels.shape[1]}x{crop.pixels.shape[0]}"
            size_width = cv2.getTextSize(size, FONT, 0.34, 1)[0][0]
            _text(sheet, size, (cell_x + label_width - size_width, cell_y + THUMB + 17), 0.34,
                  TEXT_DIM)
            # Unclassed crops are grey, which the legend explains; the number is enough.
            name = "" if crop.class_name is None else f" {crop.class_name}"
            _text(sheet, _fit_text(f"{k + 1}{name}", label_width - size_width - 6, 0.4),
                  (cell_x, cell_y + THUMB + 17), 0.4, colour)
            _text(sheet, _fit_text(_short_detection_id(crop.detection_id, panel.image_id),
                                   label_width, 0.36),
                  (cell_x, cell_y + THUMB + 30), 0.36, TEXT_DIM)
        hidden = len(panel.crops) - shown
        if hidden > 0:
            cell_x = strip_x + (shown % columns) * CELL_WH[0]
            cell_y = top + (shown // columns) * CELL_WH[1]
            cv2.rectangle(sheet, (cell_x, cell_y), (cell_x + THUMB + 3, cell_y + THUMB + 3),
                          PANEL, cv2.FILLED)
            _text(sheet, f"+{hidden} more", (cell_x + 14, cell_y + THUMB // 2 + 6), 0.5, TEXT)
        y += row_h
    return sheet


def _fitted_wh(size_wh: tuple[int, int]) -> tuple[int, int]:
    scale = min(PARENT_MAX_WH[0] / size_wh[0], PARENT_MAX_WH[1] / size_wh[1])
    return max(1, round(size_wh[0] * scale)), max(1, round(size_wh[1] * scale))


# -- HTML -------------------------------------------------------------------------------------
def svg_histogram(values, title: str, bins: int = 16, size_wh: tuple[int, int] = (460, 220),
                  unit: str = "px") -> str:
    """An inline SVG bar chart of integer ``values`` (``bins`` equal bins from min to max); each
    bar has a tooltip (SVG ``<title>``) with its range and count."""
    width, height = size_wh
    left, right, top, bottom = 44, 12, 38, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="18" class="chart-title">{html.escape(title)}</text>']
    values = np.asarray(values, dtype=np.int64).ravel()
    if values.size == 0:
        parts.append(f'<text x="{left}" y="{top + plot_h // 2}" class="axis">no crops</text>')
        return "".join(parts) + "</svg>"
    lo, hi = int(values.min()), int(values.max())
    # Whole-pixel bins of equal width, so every bar covers as many sizes as its neighbours.
    step = -(-(hi - lo + 1) // bins)
    n_bins = -(-(hi - lo + 1) // step)
    edges = lo + step * np.arange(n_bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    peak = int(counts.max())
    bar_w = plot_w / n_bins
    base = top + plot_h
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" '
                 f'class="axis-line"/>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" class="axis" text-anchor="end">{peak}'
                 f'</text><text x="{left - 6}" y="{base}" class="axis" text-anchor="end">0</text>')
    for i, count in enumerate(counts):
        first, last = int(edges[i]), int(edges[i + 1]) - 1
        bar_h = plot_h * count / peak if peak else 0
        x = left + i * bar_w
        span = f"{first}" if first == last else f"{first}-{last}"
        parts.append(f'<rect x="{x + 1:.1f}" y="{base - bar_h:.1f}" width="{max(bar_w - 2, 1):.1f}"'
                     f' height="{bar_h:.1f}" class="bar"><title>{span} {unit}: {count} crops'
                     f'</title></rect>')
        if count and bar_w >= 16:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{base - bar_h - 4:.1f}" '
                         f'class="count" text-anchor="middle">{count}</text>')
    # Axis labels at bin edges: the first size, the last size the bins cover, and the middle.
    ticks = [(lo, "start", left), (int(edges[-1]) - 1, "end", left + plot_w)]
    if n_bins >= 4:
        ticks.append((int(edges[n_bins // 2]), "middle", left + plot_w * (n_bins // 2) / n_bins))
    for value, anchor, x in ticks:
        parts.append(f'<text x="{x:.1f}" y="{base + 16}" class="axis" '
                     f'text-anchor="{anchor}">{value} {unit}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{base + 32}" class="axis" '
                 f'text-anchor="middle">{len(values)} crops, {n_bins} bins</text>')
    return "".join(parts) + "</svg>"


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1f21;
       background: #f4f5f7; margin: 0; }
main { max-width: 1500px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h1 code { font-size: 20px; }
h2 { font-size: 16px; margin: 28px 0 10px; text-transform: uppercase; letter-spacing: .04em;
     color: #4a4f57; }
.sub { color: #5c6370; margin: 0 0 18px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #dde0e5; border-radius: 8px; padding: 10px 16px;
        min-width: 120px; }
.card .n { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .k { color: #5c6370; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card.bad .n { color: #b42318; }
table { border-collapse: collapse; background: #fff; border: 1px solid #dde0e5; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #eceef1;
         vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; font-size: 12px; text-transform: uppercase;
     letter-spacing: .03em; color: #4a4f57; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.msg { max-width: 520px; overflow-wrap: anywhere; }
td.uri { max-width: 340px; overflow-wrap: anywhere; color: #5c6370; font-size: 12px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0;
          background: #fff; border: 1px solid #dde0e5; border-radius: 8px; padding: 12px 16px; }
dl.meta dt { color: #5c6370; } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.sheet img { max-width: 100%; height: auto; border-radius: 6px; display: block; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.charts svg { background: #fff; border: 1px solid #dde0e5; border-radius: 8px; }
.chart-title { font: 600 13px system-ui, sans-serif; fill: #1d1f21; }
.axis { font: 11px system-ui, sans-serif; fill: #5c6370; }
.axis-line { stroke: #9aa1ab; stroke-width: 1; }
.count { font: 10px system-ui, sans-serif; fill: #4a4f57; }
.bar { fill: #3f7fd8; } .bar:hover { fill: #1f5fb8; }
.muted { color: #5c6370; }
.pair { display: flex; flex-wrap: wrap; gap: 0 32px; align-items: flex-start; }
"""


def _cards(counts: dict) -> str:
    errors = sum((counts.get("errors") or {}).values())
    items = [("images", counts.get("images", 0)), ("images decoded",
             counts.get("images_decoded", 0)), ("without detections",
             counts.get("images_without_detections", 0)), ("detections",
             counts.get("detections", 0)), ("crops", counts.get("crops", 0)), ("errors", errors)]
    cards = []
    for label, value in items:
        key = label.replace(" ", "-")
        bad = " bad" if label == "errors" and value else ""
        cards.append(f'<div class="card{bad}"><div class="n" id="count-{key}">{int(value)}</div>'
                     f'<div class="k">{html.escape(label)}</div></div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _table(headers: list[str], rows: list[list], classes: list[str] | None = None,
           table_id: str | None = None) -> str:
    classes = classes or [""] * len(headers)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{c}">{html.escape("" if v is None else str(v))}</td>' if c
            else f"<td>{html.escape('' if v is None else str(v))}</td>"
            for v, c in zip(row, classes, strict=True))
        body.append(f"<tr>{cells}</tr>")
    identity = f' id="{table_id}"' if table_id else ""
    return f"<table{identity}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(manifest: dict, sheet_png: bytes, widths, heights, error_rows: list[dict],
                error_total: int, class_counts: dict, skipped: list[tuple[str, str]],
                parents_drawn: int, shard_count: int | None = None) -> str:
    """The self-contained report page (inline CSS and SVG, the sheet as a data URI, no script).
    ``shard_count`` defaults to the shards the manifest lists inline."""
    counts = manifest.get("counts") or {}
    step = manifest.get("step") or {}
    run_id = str(manifest.get("run_id", ""))
    esc = html.escape
    meta = [("run id", f"<code>{esc(run_id)}</code>"),
            ("status", esc(str(manifest.get("status", "")))),
            ("step", f"<code>{esc(json.dumps(step, sort_keys=True))}</code>"),
            ("code version", f"<code>{esc(str(manifest.get('code_version', '')))}</code>"),
            ("format", esc(str(manifest.get("format", "")))),
            ("shards", str(len(manifest.get("shards", [])) if shard_count is None
                           else shard_count))]
    for key, url in (manifest.get("inputs") or {}).items():
        if url:
            meta.append((f"input: {key}", f"<code>{esc(str(url))}</code>"))
    meta_html = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in meta)

    by_reason = sorted((counts.get("errors") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    if by_reason:
        reasons = _table(["reason", "rows"], [[r, n] for r, n in by_reason], ["", "num"],
                         "errors-by-reason")
    else:
        reasons = ('<p class="muted">No errors: every detection produced a crop.</p>'
                   if counts.get("crops") else
                   '<p class="muted">No errors, and no crops: the inputs held nothing to '
                   'crop.</p>')
    if error_rows:
        shown = (f'<p class="muted">{len(error_rows)} of {error_total} error rows, '
                 f"sorted by reason.</p>")
        sample = _table(["reason", "stage", "image id", "detection id", "message", "source"],
                        [[r.get("reason"), r.get("stage"), r.get(schema.IMAGE_ID),
                          r.get(schema.DETECTION_ID), r.get("message"), r.get("source_uri")]
                         for r in error_rows], ["", "", "", "", "msg", "uri"], "error-sample")
    else:
        shown, sample = "", ""
    classes = _table(["class", "crops"], [[("(none)" if k is None else k), v] for k, v in
                                           sorted(class_counts.items(),
                                                  key=lambda kv: (-kv[1], str(kv[0])))],
                     ["", "num"], "classes") if class_counts else ""
    skipped_html = ""
    if skipped:
        skipped_html = ('<p class="muted">Parents that could not be shown:</p>'
                        + _table(["source", "why"], [[u, r] for u, r in skipped],
                                 ["uri", "msg"], "parents-skipped"))
    data_uri = "data:image/png;base64," + base64.b64encode(sheet_png).decode("ascii")
    charts = (svg_histogram(widths, "crop width") + svg_histogram(heights, "crop height"))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cropcore report: {esc(run_id)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>Crop run <code>{esc(run_id)}</code></h1>
<p class="sub">{esc(str(step.get("type", "")))}, {_count(int(counts.get("crops", 0)), "crop")}
from {_count(int(counts.get("images", 0)), "image")}</p>
<section><h2>Counts</h2>{_cards(counts)}</section>
<section><h2>Run</h2><dl class="meta">{meta_html}</dl></section>
<section><h2>Errors</h2>{reasons}{shown}{sample}</section>
<div class="pair">
<section><h2>Crop sizes</h2><div class="charts">{charts}</div></section>
<section><h2>Classes</h2>{classes or '<p class="muted">No class names.</p>'}</section>
</div>
<section class="sheet"><h2>Contact sheet</h2>
<p class="muted">{parents_drawn} parent images with their crop windows (one colour per class) and
their crops; masks, polygons, keypoints and oriented boxes are drawn on the thumbnails.</p>
<img src="{data_uri}" alt="contact sheet of {parents_drawn} parent images and their crops">
{skipped_html}</section>
</main>
</body>
</html>
"""


# -- the report -------------------------------------------------------------------------------
def write_report(output_url: str, max_parents: int = 6, error_sample: int = 25,
                 allow_uris: str | tuple[str, ...] = ()) -> Report:
    """Write ``OUTPUT/report/contact_sheet.png`` and ``OUTPUT/report/index.html``. Parent
    images are read only from the images input the manifest records and, where the images
    table names them by ``uri``, only under ``allow_uris`` (as ``run --allow-uris``)."""
    if max_parents < 0:
        raise RunError(f"--max-parents must be 0 or more, got {max_parents}")
    run = open_run(output_url)
    manifest = run.manifest
    lineage = _lineage_with_shards(run)
    crops = run.read_all("crops", ["crop_id", "width", "height", "class_name"])
    class_names = (crops.column("class_name").to_pylist()
                   if crops is not None and "class_name" in crops.column_names else [])
    colours = class_colours(class_names)
    panels, skipped = _gather_panels(run, lineage, max_parents, allow_uris)
    counts = manifest.get("counts") or {}
    parents_total = 0 if lineage is None else len(pc.unique(lineage.column("source_uri")))
    step_type = (manifest.get("step") or {}).get("type", "?")
    subtitle = (f"{step_type}   {_count(counts.get('crops', 0), 'crop')} from "
                f"{_count(counts.get('images', 0), 'image')}   showing {len(panels)} of "
                f"{_count(parents_total, 'parent image')}   "
                f"code {manifest.get('code_version', '?')}")
    note = None
    if not panels:
        note = ("the run produced no crops" if parents_total == 0
                else f"none of the {len(skipped)} parent images tried could be read: "
                     f"{skipped[0][1] if skipped else ''}")
    sheet = render_contact_sheet(panels, f"cropcore run {manifest.get('run_id', '?')}",
                                 subtitle, colours, note)
    ok, encoded = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RunError("OpenCV could not encode the contact sheet as PNG")
    sheet_png = encoded.tobytes()

    errors = run.read_all("errors")
    error_rows: list[dict] = []
    if errors is not None and errors.num_rows:
        keys = [(c, "ascending") for c in ("reason", schema.IMAGE_ID, schema.DETECTION_ID)
                if c in errors.column_names]
        error_rows = errors.sort_by(keys).slice(0, error_sample).to_pylist()
    widths = crops.column("width").to_numpy() if crops is not None else np.zeros(0)
    heights = crops.column("height").to_numpy() if crops is not None else np.zeros(0)
    page = render_html(manifest, sheet_png, widths, heights, error_rows,
                       0 if errors is None else errors.num_rows, Counter(class_names), skipped,
                       len(panels), shard_count=len(run.shards))
    with tool_files(run.output, "report", ["contact_sheet.png", "index.html"]) as folder:
        write_atomic(folder.child("contact_sheet.png"), sheet_png)
        write_atomic(folder.child("index.html"), page.encode("utf-8"))
    return Report(folder.child("contact_sheet.png").url, folder.child("index.html").url,
                  [p.source_uri for p in panels], skipped)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` command's arguments."""
    parser.description = ("Write OUTPUT/report/contact_sheet.png (parent images with their crop\n"
                          "windows, crops with their masks) and OUTPUT/report/index.html (counts,\n"
                          "errors, crop size histograms, the sheet).")
    parser.epilog = EXAMPLE
    parser.add_argument("output", metavar="OUTPUT", help="the run's output folder (path or URL)")
    parser.add_argument("--max-parents", type=int, default=6,
                        help="parent images on the contact sheet")
    parser.add_argument("--allow-uris", default="",
                        help="prefixes a parent's 'uri' may name, as for run (the run's own "
                             "list is not taken from its folder); without it such parents "
                             "are skipped")


def command(args: argparse.Namespace) -> int:
    """Run ``python -m jobs report``; returns the exit code (2 for a folder that is not a
    committed run or a bad argument)."""
    try:
        report = write_report(args.output, args.max_parents, allow_uris=args.allow_uris)
    except (RunError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"contact sheet  {report.sheet_url} ({len(report.parents_drawn)} parent images)")
    print(f"report         {report.html_url}")
    for source_uri, reason in report.parents_skipped:
        print(f"  skipped {source_uri}: {reason}")
    return 0
