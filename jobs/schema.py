"""Arrow schemas of the tables the job reads and writes, and column checks with clear messages.

Input tables
------------
images      ``image_id: string`` plus one image source:
            ``image: binary`` (encoded JPEG/PNG/WebP bytes), or
            ``image: struct<bytes: binary, path: string>`` (the Hugging Face image column), or
            ``uri: string`` (an object fetched through the storage layer).
            Optionally ``detections: list<struct<...DETECTION_FIELDS...>>`` nested per image.
            Any other column is carried along onto crop and lineage rows (``--keep-columns``).
detections  ``image_id, detection_id: string``, ``x_min, y_min, x_max, y_max: float64`` (pixel
            xyxy in the full image frame), optional ``class_name: string``, ``class_id: int64``,
            ``confidence: float64``, ``mask: struct<size: list<int32>, counts: string>`` (COCO
            RLE, column-major; integer-list counts are accepted too), ``keypoints:
            list<struct<x, y, confidence: float64>>``, ``polygon: list<list<float64>>`` ([x, y]
            pairs), ``xyxyxyxy: list<list<float64>>`` (an oriented box: its four [x, y] corners,
            as supervision's ``data["xyxyxyxy"]``; translated into the crop frame like polygons),
            ``iscrowd: bool`` (COCO's crowd flag, carried onto crops when the column exists),
            ``polygon_style: string`` (``coco`` or ``roboflow``: how a polygon rasterizes when
            it stands in for a missing mask; ``roboflow`` when absent). The importers write
            both (``IMPORTED_DETECTIONS_SCHEMA``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "BOX_COLUMNS",
    "CROP_FORMATS",
    "CROP_COLUMNS",
    "DETECTIONS_SCHEMA",
    "DETECTION_ID",
    "ERROR_REASONS",
    "ERROR_SCHEMA",
    "HF_IMAGE_TYPE",
    "IMAGES_SCHEMA",
    "IMAGE_ID",
    "IMPORTED_DETECTIONS_SCHEMA",
    "ImagesLayout",
    "KEYPOINTS_TYPE",
    "KEYPOINT_TYPE",
    "LINEAGE_COLUMNS",
    "NPY_CROP_VALUE_TYPE",
    "ORIENTED_BOX",
    "ORIENTED_BOX_TYPE",
    "POLYGON_TYPE",
    "RESERVED_COLUMNS",
    "RLE_TYPE",
    "ROOT_COLUMNS",
    "SchemaError",
    "check_detections_fields",
    "check_detections_schema",
    "check_detections_type",
    "images_layout",
    "merged_images_layout",
    "is_npy_crop_type",
    "npy_crop_array",
    "npy_crop_tensors",
    "npy_crop_type",
    "plain_schema",
    "plain_table",
    "plain_type",
]

IMAGE_ID = "image_id"
# The crop encodings (--format) and the extension each gives the crop's `path`: the one list.
CROP_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp", "npy": "npy"}
DETECTION_ID = "detection_id"
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
KEYPOINT_TYPE = pa.struct([("x", pa.float64()), ("y", pa.float64()), ("confidence", pa.float64())])
KEYPOINTS_TYPE = pa.list_(KEYPOINT_TYPE)
POLYGON_TYPE = pa.list_(pa.list_(pa.float64()))
ORIENTED_BOX = "xyxyxyxy"  # cropcore.ORIENTED_BOX_COORDINATES, supervision's data key
ORIENTED_BOX_TYPE = pa.list_(pa.list_(pa.float64()))  # four [x, y] corners
HF_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

DETECTIONS_SCHEMA = pa.schema(
    [
        (IMAGE_ID, pa.string()),
        (DETECTION_ID, pa.string()),
        ("x_min", pa.float64()),
        ("y_min", pa.float64()),
        ("x_max", pa.float64()),
        ("y_max", pa.float64()),
        ("class_name", pa.string()),
        ("class_id", pa.int64()),
        ("confidence", pa.float64()),
        ("mask", RLE_TYPE),
        ("keypoints", KEYPOINTS_TYPE),
        ("polygon", POLYGON_TYPE),
        (ORIENTED_BOX, ORIENTED_BOX_TYPE),
    ]
)

# What the importers write: COCO sets iscrowd and polygon_style "coco", YOLO and Roboflow
# polygon_style "roboflow" (docs/crop-semantics.md, "Polygons standing in for masks").
IMPORTED_DETECTIONS_SCHEMA = DETECTIONS_SCHEMA.append(pa.field("iscrowd", pa.bool_())).append(
    pa.field("polygon_style", pa.string()))

IMAGES_SCHEMA = pa.schema([(IMAGE_ID, pa.string()), ("image", pa.binary())])

# Columns the job writes; input columns with these names are never carried along.
#: The file lineage's ``source_uri`` names for rows cropped in a Ray Data pipeline of one's own
#: (``jobs.stage``): none (``ray-data#row=N``).
SINK_SOURCE = "ray-data"
ROOT_COLUMNS = (
    "root_image_id",
    "root_window_x_min",
    "root_window_y_min",
    "root_window_x_max",
    "root_window_y_max",
    "root_width",
    "root_height",
)
CROP_COLUMNS = (
    "crop_id", IMAGE_ID, DETECTION_ID, "crop", "width", "height", *BOX_COLUMNS, "mask",
    "keypoints", "polygon", ORIENTED_BOX, "class_name", "class_id", "confidence", *ROOT_COLUMNS,
)
LINEAGE_COLUMNS = (
    "crop_id", IMAGE_ID, DETECTION_ID, "source_uri", "source_sha256", "window_x_min",
    "window_y_min", "window_x_max", "window_y_max", "parent_width", "parent_height", "step_type",
    "step_params", "run_id", "code_version", "created_at", "crop_sha256", *ROOT_COLUMNS,
)
ERROR_SCHEMA = pa.schema(
    [
        (IMAGE_ID, pa.string()),
        (DETECTION_ID, pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("source_uri", pa.string()),
    ]
)
# Every reason an errors/ row can carry, in pipeline order (plan, read, decode, crop). A reason
# the job writes must be listed here: tests/jobs/test_error_reasons.py produces each one
# end to end and fails on a reason in the code that is missing from this list.
ERROR_REASONS = (
    "duplicate_image_id", "missing_id", "duplicate_detection_id", "image_missing",
    "too_many_detections", "fetch_failed", "no_image_bytes", "undecodable", "too_many_pixels",
    "unsupported", "invalid_parameter", "invalid_box", "empty_window", "invalid_mask",
)
RESERVED_COLUMNS = frozenset(CROP_COLUMNS) | frozenset(LINEAGE_COLUMNS) | {
    "image", "uri", "detections", "iscrowd"}  # iscrowd: carried from COCO detections


class SchemaError(ValueError):
    """An input table lacks a required column or has one of the wrong type."""


def plain_type(t: pa.DataType) -> pa.DataType:
    """The type the job works in for a column as real writers produce it: pandas and polars
    write ``large_string`` (and pyarrow may read ``string_view``), categoricals arrive as
    dictionaries, and lists may be large. Strings become ``string``, binaries ``binary``,
    dictionaries their values, every list a ``list``, recursively; other types are kept.

    >>> plain_type(pa.large_list(pa.struct([("x", pa.large_string())])))
    ListType(list<item: struct<x: string>>)
    """
    if pa.types.is_dictionary(t):
        return plain_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
            or pa.types.is_large_list_view(t)):
        return pa.list_(t.value_field.with_type(plain_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(plain_type(f.type)) for f in t])
    return t


def plain_schema(table_schema: pa.Schema, known: pa.Schema | None = None) -> pa.Schema:
    """``table_schema`` with every type made plain (``plain_type``). A column of nulls only
    (what pandas writes for an all-``None`` column) takes its type from ``known`` when that
    names it."""
    def target_type(f: pa.Field) -> pa.DataType:
        if pa.types.is_null(f.type) and known is not None and f.name in known.names:
            return known.field(f.name).type
        return plain_type(f.type)

    return pa.schema([f.with_type(target_type(f)) for f in table_schema],
                     metadata=table_schema.metadata)


def plain_table(table: pa.Table, known: pa.Schema | None = None) -> pa.Table:
    """``table`` cast to its ``plain_schema`` (no copy when already plain)."""
    target = plain_schema(table.schema, known)
    if target.equals(table.schema):
        return table
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise SchemaError(f"cannot read columns of types {table.schema.types}: "
                          f"{str(error).splitlines()[0]}") from None


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(plain_type(t))


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(plain_type(t))


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _is_list_of(t: pa.DataType, item) -> bool:
    return pa.types.is_list(t) and item(t.value_type)


def _is_keypoints(t: pa.DataType) -> bool:
    """``list<struct<x, y[, confidence]>>`` with numeric fields."""
    if not _is_list_of(t, pa.types.is_struct):
        return False
    point = t.value_type
    names = {f.name: f.type for f in point}
    return ("x" in names and "y" in names
            and all(_is_number(names[n]) for n in ("x", "y", "confidence") if n in names))


def _is_polygon(t: pa.DataType) -> bool:
    """``list<list<number>>``: [x, y] pairs."""
    return _is_list_of(t, lambda inner: _is_list_of(inner, _is_number))


def _is_rle(t: pa.DataType) -> bool:
    """``struct<size: list<int>, counts: string | list<int>>`` (COCO RLE)."""
    if not pa.types.is_struct(t) or t.get_field_index("size") < 0 \
            or t.get_field_index("counts") < 0:
        return False
    size, counts = t.field("size").type, t.field("counts").type
    return (_is_list_of(size, pa.types.is_integer)
            and (pa.types.is_string(counts) or _is_list_of(counts, pa.types.is_integer)))


def _is_small_scalar(t: pa.DataType) -> bool:
    return (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        or _is_string(t) or pa.types.is_temporal(t) or pa.types.is_decimal(t)
    )


NPY_CROP_VALUE_TYPE = pa.float32()


def npy_crop_type(shape: tuple[int, int, int]) -> pa.DataType:
    """The ``crop`` column type of ``--format npy``: float32 in fixed-size lists nested
    ``[height][width][channels]``. Plain Arrow types, so every reader keeps the shape: Hugging
    Face ``datasets`` loads it as a fixed-length ``List`` (``with_format("numpy")`` gives
    ``(n, h, w, c)`` float32), polars as ``Array(Float32, shape=(h, w, c))``, DuckDB as
    ``FLOAT[][][]``. (``arrow.fixed_shape_tensor``, used before, has no ``datasets`` feature.)

    >>> t = npy_crop_type((2, 3, 1))
    >>> (t.list_size, t.value_type.list_size, t.value_type.value_type)
    (2, 3, FixedSizeListType(fixed_size_list<item: float>[1]))
    """
    t = NPY_CROP_VALUE_TYPE
    for size in reversed(shape):
        t = pa.list_(t, int(size))
    return t


def npy_crop_array(values: np.ndarray, shape: tuple[int, int, int]) -> pa.Array:
    """``values`` (float32, ``n * h * w * c`` of them, row-major) as an ``npy_crop_type(shape)``
    array of ``n`` crops; no copy of the values."""
    array = pa.array(np.asarray(values, np.float32).ravel(), NPY_CROP_VALUE_TYPE)
    for size in reversed(shape):
        array = pa.FixedSizeListArray.from_arrays(array, int(size))
    return array


def is_npy_crop_type(t: pa.DataType) -> bool:
    """Whether ``t`` is a ``--format npy`` crop column: ``npy_crop_type`` (field names aside), or
    the ``arrow.fixed_shape_tensor`` of runs written before it."""
    if isinstance(t, pa.FixedShapeTensorType):
        return True
    for _ in range(3):
        if not pa.types.is_fixed_size_list(t):
            return False
        t = t.value_type
    return pa.types.is_floating(t)


def npy_crop_tensors(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``--format npy`` crop column as one ``(n, h, w, c)`` float32 array (either type that
    ``is_npy_crop_type`` accepts)."""
    if not is_npy_crop_type(column.type):
        raise SchemaError(f"expected an npy crop column (float32 [h][w][c] fixed-size lists or "
                          f"fixed_shape_tensor), got {column.type}")
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(column.type, pa.FixedShapeTensorType):
        shape = tuple(column.type.shape)
        if len(array) == 0:
            return np.zeros((0, *shape), np.float32)
        return array.to_numpy_ndarray().astype(np.float32, copy=False)
    shape = []
    for _ in range(3):
        shape.append(array.type.list_size)
        array = array.flatten()
    values = array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(-1, *shape)


def _is_hf_image(t: pa.DataType) -> bool:
    return (
        pa.types.is_struct(t)
        and t.get_field_index("bytes") >= 0
        and _is_binary(t.field("bytes").type)
    )


@dataclass(frozen=True)
class ImagesLayout:
    """How to read an images table.

    ``image_source`` is ``"binary"`` (``image`` bytes), ``"struct"`` (Hugging Face
    ``struct<bytes, path>`` in ``image_column``), or ``"uri"`` (fetch ``uri``). A ``crops/``
    output read as images (``crop`` and ``crop_id``, no ``image`` or ``uri``) uses its ``crop``
    column as the image and ``crop_id`` as the id.
    """

    id_column: str
    image_column: str
    image_source: str
    nested_detections: bool
    carried: tuple[str, ...]
    has_root: bool
    # one Arrow type per carried column, the same in every shard (the files' types unified)
    carried_types: tuple[pa.DataType, ...]


# The row index pandas' ``DataFrame.to_parquet`` stores as a column: bookkeeping, not data.
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _refuse_repeated_names(schema: pa.Schema, table: str) -> None:
    repeated = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if repeated:
        raise SchemaError(f"{table} table has more than one column named "
                          f"{', '.join(repr(n) for n in repeated)}: rename or drop the copies")


def images_layout(schema: pa.Schema, keep_columns: tuple[str, ...] | None,
                  parameter_columns: dict[str, str]) -> ImagesLayout:
    """Check an images schema and decide how to read it; ``SchemaError`` names the column."""
    names = set(schema.names)
    _refuse_repeated_names(schema, "images")
    if "crop" in names and "crop_id" in names and not names & {"image", "uri"}:
        # an earlier run's crops/ (a table with images of its own is an images table)
        id_column, image_column = "crop_id", "crop"
    else:
        id_column, image_column = IMAGE_ID, "image" if "image" in names else "uri"
    if id_column not in names:
        raise SchemaError(f"images table needs a '{IMAGE_ID}' column (string); it has "
                          f"{', '.join(schema.names) or 'no columns'}")
    if not _is_string(schema.field(id_column).type):
        raise SchemaError(f"images column '{id_column}' must be string, got "
                          f"{schema.field(id_column).type}")
    if image_column not in names:
        raise SchemaError("images table needs an 'image' column (binary, or struct<bytes, path>) "
                          "or a 'uri' column (string)")
    image_type = schema.field(image_column).type
    if image_column == "uri":
        if not _is_string(image_type):
            raise SchemaError(f"images column 'uri' must be string, got {image_type}")
        source = "uri"
    elif _is_binary(image_type):
        source = "binary"
    elif _is_hf_image(image_type):
        source = "struct"
    else:
        raise SchemaError(f"images column '{image_column}' must be binary or struct<bytes: "
                          f"binary, path: string>, got {image_type}")
    nested = "detections" in names
    if nested:
        check_detections_type(schema.field("detections").type)
    for parameter, column in parameter_columns.items():
        if column not in names:
            raise SchemaError(f"step parameter '{parameter}' names column '{column}', which the "
                              f"images table does not have")
        t = schema.field(column).type
        if parameter == "background_color":  # "#rrggbb", "(r, g, b)" or [r, g, b]
            if not (_is_string(t) or (pa.types.is_list(t) or pa.types.is_fixed_size_list(t))
                    and pa.types.is_integer(t.value_type)):
                raise SchemaError(f"images column '{column}' (step parameter '{parameter}') "
                                  f"must be string or list<integer>, got {t}")
        elif not (pa.types.is_integer(t) or pa.types.is_floating(t)
                  or pa.types.is_decimal(t)):
            raise SchemaError(f"images column '{column}' (step parameter '{parameter}') must be "
                              f"numeric, got {t}")
    used = {id_column, image_column, "detections", *parameter_columns.values()}
    if keep_columns is None:
        carried = tuple(  # a column of nulls only (pandas writes None as Arrow null) too
            f.name for f in schema
            if f.name not in used and f.name not in RESERVED_COLUMNS
            and (_is_small_scalar(f.type) or pa.types.is_null(f.type))
            and not _PANDAS_INDEX.fullmatch(f.name)
        )
    else:
        for column in keep_columns:
            if column not in names:
                raise SchemaError(f"--keep-columns names '{column}', which the images table "
                                  f"does not have")
            if column in RESERVED_COLUMNS or column in (id_column, image_column):
                raise SchemaError(f"--keep-columns cannot carry '{column}': the job writes a "
                                  f"column of that name")
        carried = tuple(keep_columns)
    has_root = all(c in names for c in ROOT_COLUMNS)
    return ImagesLayout(id_column, image_column, source, nested, carried, has_root,
                        tuple(schema.field(name).type for name in carried))


def merged_images_layout(layouts: list[tuple[str, ImagesLayout]]) -> ImagesLayout | None:
    """One layout for the images files ``(url, layout)``: they must agree on how to read them
    and carry the same columns; a carried column's types are unified (nulls take the other
    files' type, integers widen). ``SchemaError`` says which file and column disagree."""
    if not layouts:
        return None
    first_url, first = layouts[0]
    for url, layout in layouts[1:]:
        for name in ("id_column", "image_column", "image_source", "nested_detections",
                     "has_root", "carried"):
            if getattr(layout, name) != getattr(first, name):
                what = name.replace("_", " ")
                raise SchemaError(
                    f"images file {url} differs from {first_url} in its {what}: "
                    f"{getattr(layout, name)!r} there, {getattr(first, name)!r} here"
                    + ("; --keep-columns chooses the columns to carry" if name == "carried"
                       else ""))
    types = []
    for index, name in enumerate(first.carried):
        try:
            unified = pa.unify_schemas(
                [pa.schema([(name, layout.carried_types[index])]) for _, layout in layouts],
                promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            seen = sorted({str(layout.carried_types[index]) for _, layout in layouts})
            raise SchemaError(f"images files disagree on the type of column '{name}' "
                              f"({', '.join(seen)}): make them agree, or leave it out with "
                              f"--keep-columns") from None
        unified_type = unified.field(name).type
        kinds = {layout.carried_types[index] for _, layout in layouts}
        if pa.uint64() in kinds and pa.types.is_signed_integer(unified_type):
            # Arrow unifies uint64 with a signed integer as int64, which cannot hold the
            # upper half of uint64: the crop tasks would fail on such a value after the claim
            seen = sorted(str(t) for t in kinds)
            raise SchemaError(f"images files disagree on the type of column '{name}' "
                              f"({', '.join(seen)}): no integer type holds both; make them "
                              f"agree, or leave it out with --keep-columns")
        types.append(unified_type)
    return dataclasses.replace(first, carried_types=tuple(types))


_DETECTION_TYPES = {
    IMAGE_ID: _is_string,
    DETECTION_ID: _is_string,
    "x_min": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "y_min": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "x_max": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "y_max": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "class_name": _is_string,
    "class_id": pa.types.is_integer,
    "confidence": pa.types.is_floating,
    "mask": _is_rle,
    "keypoints": _is_keypoints,
    "polygon": _is_polygon,
    "iscrowd": pa.types.is_boolean,
    "polygon_style": _is_string,
    # numpy (N, 4, 2) arrays reach Arrow as fixed-size lists: accepted, cast on translation
    ORIENTED_BOX: lambda t: (pa.types.is_list(t) or pa.types.is_fixed_size_list(t))
    and (pa.types.is_list(t.value_type) or pa.types.is_fixed_size_list(t.value_type)),
}
_DETECTION_EXPECTED = {
    IMAGE_ID: "string", DETECTION_ID: "string", "x_min": "float64", "y_min": "float64",
    "x_max": "float64", "y_max": "float64", "class_name": "string", "class_id": "int64",
    "confidence": "float64", "mask": "struct<size: list<int32>, counts: string>",
    "keypoints": "list<struct<x: float64, y: float64, confidence: float64>>",
    "polygon": "list<list<float64>>",
    ORIENTED_BOX: "list<list<float64>> (four [x, y] corners)",
    "iscrowd": "bool", "polygon_style": "string ('coco' or 'roboflow')",
}


def check_detections_fields(fields: dict[str, pa.DataType], *, nested: bool) -> None:
    where = "nested detections" if nested else "detections table"
    required = (DETECTION_ID, *BOX_COLUMNS) if nested else (IMAGE_ID, DETECTION_ID, *BOX_COLUMNS)
    for name in required:
        if name not in fields:
            raise SchemaError(f"{where} needs a '{name}' column ({_DETECTION_EXPECTED[name]}); "
                              f"it has {', '.join(fields) or 'no columns'}")
    fields = {name: plain_type(t) for name, t in fields.items()}
    for name, check in _DETECTION_TYPES.items():
        # a column of nulls only (pandas writes one for an all-None column) is cast on reading
        if name in fields and not pa.types.is_null(fields[name]) and not check(fields[name]):
            raise SchemaError(f"{where} column '{name}' must be {_DETECTION_EXPECTED[name]}, "
                              f"got {fields[name]}")


def check_detections_type(t: pa.DataType) -> None:
    t = plain_type(t)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(
        t.value_type
    ):
        raise SchemaError(f"images column 'detections' must be list<struct<...>>, got {t}")
    struct = t.value_type
    check_detections_fields({f.name: f.type for f in struct}, nested=True)


def check_detections_schema(schema: pa.Schema) -> None:
    _refuse_repeated_names(schema, "detections")
    check_detections_fields({f.name: f.type for f in schema}, nested=False)
