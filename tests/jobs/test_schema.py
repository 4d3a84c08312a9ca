"""jobs/schema.py: which input columns the job reads, requires and carries."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import schema


def test_pandas_row_index_is_not_carried_unless_asked_for(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "image": [b"x", b"y"], "video_id": [1, 2]},
                         index=[7, 9])
    frame.to_parquet(tmp_path / "images.parquet")  # stores the index as __index_level_0__
    table_schema = pq.read_schema(tmp_path / "images.parquet")
    assert "__index_level_0__" in table_schema.names
    assert schema.images_layout(table_schema, None, {}).carried == ("video_id",)
    asked = schema.images_layout(table_schema, ("__index_level_0__",), {})
    assert asked.carried == ("__index_level_0__",)
    # a column that only looks like an index in part of its name is data
    other = pa.schema([("image_id", pa.string()), ("image", pa.binary()),
                       ("__index_level_0__x", pa.int64())])
    assert schema.images_layout(other, None, {}).carried == ("__index_level_0__x",)


def _layout_of(**columns) -> schema.ImagesLayout:
    fields = [("image_id", pa.string()), ("image", pa.binary()), *columns.items()]
    return schema.images_layout(pa.schema(fields), None, {})


def test_images_files_merge_a_column_of_nulls_with_its_typed_twin():
    # pandas writes an all-None column as Arrow null: the same column, not another layout
    merged = schema.merged_images_layout([("a", _layout_of(note=pa.string(), n=pa.int32())),
                                          ("b", _layout_of(note=pa.null(), n=pa.int64()))])
    assert merged.carried == ("note", "n")
    assert merged.carried_types == (pa.string(), pa.int64())


def test_images_files_that_disagree_on_a_carried_type_are_refused():
    import pytest

    with pytest.raises(schema.SchemaError, match=r"^images files disagree on the type of column "
                                                 r"'frame' \(int64, string\): make them agree, "
                                                 r"or leave it out with --keep-columns$"):
        schema.merged_images_layout([("a", _layout_of(frame=pa.int64())),
                                     ("b", _layout_of(frame=pa.string()))])


def test_images_files_that_carry_other_columns_say_which_and_how_to_choose():
    import pytest

    with pytest.raises(schema.SchemaError, match=r"^images file b differs from a in its carried: "
                                                 r"\('x', 'y'\) there, \('x',\) here; "
                                                 r"--keep-columns chooses the columns to carry$"):
        schema.merged_images_layout([("a", _layout_of(x=pa.int8())),
                                     ("b", _layout_of(x=pa.int8(), y=pa.string()))])
    assert schema.merged_images_layout([]) is None


def test_a_table_with_images_of_its_own_is_an_images_table_whatever_else_it_holds():
    # crop_id and crop used to make any table an earlier run's crops: its id and image columns
    # were ignored, and every detection became image_missing
    own = pa.schema([("image_id", pa.string()), ("image", pa.binary()),
                     ("crop_id", pa.string()), ("crop", pa.binary())])
    layout = schema.images_layout(own, None, {})
    assert (layout.id_column, layout.image_column) == ("image_id", "image")
    fetched = pa.schema([("image_id", pa.string()), ("uri", pa.string()),
                         ("crop_id", pa.string()), ("crop", pa.binary())])
    layout = schema.images_layout(fetched, None, {})
    assert (layout.id_column, layout.image_column) == ("image_id", "uri")
    crops = pa.schema([("crop_id", pa.string()), ("image_id", pa.string()),
                       ("crop", schema.HF_IMAGE_TYPE)])
    layout = schema.images_layout(crops, None, {})
    assert (layout.id_column, layout.image_column) == ("crop_id", "crop")


def test_a_decimal_column_is_a_numeric_step_parameter():
    table_schema = pa.schema([("image_id", pa.string()), ("image", pa.binary()),
                              ("w", pa.decimal128(25, 5))])
    layout = schema.images_layout(table_schema, None, {"width": "w"})
    assert "w" not in layout.carried
    with pytest.raises(schema.SchemaError, match="must be numeric, got string"):
        schema.images_layout(pa.schema([("image_id", pa.string()), ("image", pa.binary()),
                                        ("w", pa.string())]), None, {"width": "w"})


def test_images_files_of_uint64_and_a_signed_integer_are_refused_before_work():
    # Arrow unifies them as int64, which cannot hold 2**64 - 1: the crop tasks failed on it
    with pytest.raises(schema.SchemaError, match=r"^images files disagree on the type of column "
                                                 r"'k' \(int64, uint64\): no integer type holds "
                                                 r"both"):
        schema.merged_images_layout([("a", _layout_of(k=pa.uint64())),
                                     ("b", _layout_of(k=pa.int64()))])
    merged = schema.merged_images_layout([("a", _layout_of(k=pa.uint64())),
                                          ("b", _layout_of(k=pa.uint32()))])
    assert merged.carried_types == (pa.uint64(),)


def test_a_column_name_given_twice_is_refused_naming_it():
    images = pa.schema([("image_id", pa.string()), ("image", pa.binary()),
                        ("note", pa.string()), ("note", pa.int64())])
    with pytest.raises(schema.SchemaError, match=r"^images table has more than one column named "
                                                 r"'note': rename or drop the copies$"):
        schema.images_layout(images, keep_columns=None, parameter_columns={})
    detections = pa.schema([("image_id", pa.string()), ("image_id", pa.string())])
    with pytest.raises(schema.SchemaError, match=r"^detections table has more than one column "
                                                 r"named 'image_id'"):
        schema.check_detections_schema(detections)
