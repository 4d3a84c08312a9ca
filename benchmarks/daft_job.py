"""Dynamic crop in Daft, the obvious way: join detections to images, decode, crop, encode.

Run by ``benchmarks.bench.daft_benchmark`` with Daft's own venv (Daft pins pyarrow<26), as
``python daft_job.py IMAGES DETECTIONS OUTPUT RESULT_JSON MORSEL_SIZE``; not imported.
"""
import json
import os
import sys
import time

os.environ.setdefault("DO_NOT_TRACK", "1")
import daft  # noqa: E402 - after DO_NOT_TRACK is set
import pyarrow.parquet as pq  # noqa: E402
from daft import DataType, col  # noqa: E402
from daft.functions import to_list  # noqa: E402

images_url, detections_url, output_url, result_path, morsel = sys.argv[1:6]
daft.set_execution_config(default_morsel_size=int(morsel))
started = time.perf_counter()
images = daft.read_parquet(images_url).select("image_id", "image")
detections = daft.read_parquet(detections_url).select(
    "image_id", "detection_id", "x_min", "y_min", "x_max", "y_max")
df = detections.join(images, on="image_id")
df = df.with_column("pixels", col("image").decode_image())
width = col("pixels").image_width().cast(DataType.float64())
height = col("pixels").image_height().cast(DataType.float64())
df = df.with_columns({
    "x0": col("x_min").round().clip(0, width), "y0": col("y_min").round().clip(0, height),
    "x1": col("x_max").round().clip(0, width), "y1": col("y_max").round().clip(0, height)})
df = df.where((col("x1") > col("x0")) & (col("y1") > col("y0")))
u32 = DataType.uint32()
bbox = to_list(col("x0").cast(u32), col("y0").cast(u32), (col("x1") - col("x0")).cast(u32),
               (col("y1") - col("y0")).cast(u32))
df = df.with_column("crop", col("pixels").crop(bbox).encode_image("JPEG"))
df = df.select("image_id", "detection_id", "crop", (col("x_min") - col("x0")).alias("x_min"),
               (col("y_min") - col("y0")).alias("y_min"), (col("x_max") - col("x0")).alias("x_max"),
               (col("y_max") - col("y0")).alias("y_max"))
written = df.write_parquet(output_url)
seconds = time.perf_counter() - started
crops = sum(pq.ParquetFile(os.path.join(root, name)).metadata.num_rows
            for root, _, names in os.walk(output_url) for name in names
            if name.endswith(".parquet"))
with open(result_path, "w") as handle:
    json.dump({"crops": crops, "seconds": round(seconds, 3), "daft": daft.__version__}, handle)
sys.stdout.flush()
os._exit(0)  # Daft 0.7.26 can crash in interpreter teardown; the result is written
