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
