"""jobs/schema.py: which input columns the job reads, requires and carries."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
